// `fedge generate`: filled in by the inference engine (issue 3).
#include "commands.h"
#include "fedge/common/error.h"

namespace fedge::apps {

void add_generate_command(CLI::App& app, const GlobalOptions&, CommandBody& chosen) {
  auto* sub = app.add_subcommand("generate", "Generate text with a local model (not built yet)");
  sub->allow_extras();
  sub->callback([&chosen] {
    chosen = [] () -> int {
      throw Error(ErrorKind::kUnimplemented, "'fedge generate' is not built yet (inference engine, issue 3)");
    };
  });
}

}  // namespace fedge::apps
