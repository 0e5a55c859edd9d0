// fedge: federated edge co-training and inference of LLMs.
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.
#include <cstdio>
#include <exception>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedge_version.h"  // generated: FEDGE_VERSION_STRING
#include "fedge/common/error.h"
#include "fedge/common/logging.h"
#include "fedge/inference/torch_setup.h"

int main(int argc, char** argv) {
  using namespace fedge::apps;
  CLI::App app{"fedge: federated edge co-training and inference of LLMs", "fedge"};
  app.require_subcommand(1);
  app.set_version_flag("--version", FEDGE_VERSION_STRING);
  GlobalOptions global;
  app.add_option("--log-level", global.log_level,
                 "trace, debug, info, warn, error, critical or off (default: $FEDGE_LOG_LEVEL or info)")
      ->envname("FEDGE_LOG_LEVEL")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--threads", global.threads, "compute threads (0: all cores)")
      ->check(CLI::Range(0, 1024));

  CommandBody chosen;
  add_info_command(app, global, chosen);
  add_generate_command(app, global, chosen);
  add_quantize_command(app, global, chosen);
  add_data_command(app, global, chosen);
  add_training_commands(app, global, chosen);
  add_keygen_command(app, global, chosen);
  add_federation_commands(app, global, chosen);
  add_sim_command(app, global, chosen);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // CLI11 uses 105/106/109...; usage errors are 2 here
  }
  try {
    fedge::setup_logging(global.log_level);
    fedge::inference::setup_torch(global.threads);
    return chosen ? chosen() : 2;
  } catch (const fedge::Error& e) {
    spdlog::error("{}", e.what());
    return fedge::exit_code_for(e.kind());
  } catch (const std::exception& e) {
    spdlog::error("unexpected failure: {}", e.what());
    return 1;
  }
}
