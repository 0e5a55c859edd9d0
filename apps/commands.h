// The `fedge` command line: each subcommand lives in its own cmd_<name>.cpp and
// registers itself here. Commands are thin: parse flags, then call a library.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace fedge::apps {

// Options every subcommand accepts (parsed before the subcommand runs).
struct GlobalOptions {
  std::string log_level;  // empty: $FEDGE_LOG_LEVEL, then "info"
  int threads = 0;        // 0: all available cores
};

// A subcommand's body; returns the process exit code. Errors are thrown as
// fedge::Error and turned into exit codes by main().
using CommandBody = std::function<int()>;

// Each add_*_command adds one subcommand to `app`; when that subcommand is
// chosen, its parse callback stores the body to run in `chosen`. Bodies may read
// `global`, which is complete by the time they run. Options that a body needs
// live in a shared_ptr captured by the callback.
void add_info_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_generate_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_quantize_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_data_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_training_commands(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_keygen_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
// coordinator, node, adapter init
void add_federation_commands(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);
void add_sim_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen);

}  // namespace fedge::apps
