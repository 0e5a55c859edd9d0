// Subcommands that later work fills in. Each is listed in --help so the shape of
// the tool is visible, and each says plainly that it is not built yet (exit 2);
// none pretends to work.
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "fedge/common/error.h"

namespace fedge::apps {

void add_planned_commands(CLI::App& app, CommandBody& chosen) {
  const std::vector<std::pair<std::string, std::string>> planned = {
      {"coordinator", "Run the federation coordinator (not built yet: issue 6)"},
      {"node", "Run an edge node (not built yet: issue 6)"},
  };
  for (const auto& [name, description] : planned) {
    auto* sub = app.add_subcommand(name, description);
    sub->allow_extras();
    sub->callback([&chosen, name = name, description = description] {
      chosen = [name, description]() -> int {
        throw Error(ErrorKind::kUnimplemented, "'fedge " + name + "' is not built yet. " + description);
      };
    });
  }
}

}  // namespace fedge::apps
