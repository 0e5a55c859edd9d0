// Logging set-up: one spdlog logger writing to stderr, so stdout stays free for
// a command's real output (generated text, tables).
#pragma once

#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace fedge {

// Level names as spdlog spells them: trace, debug, info, warn, error, critical, off.
// An empty `level` falls back to $FEDGE_LOG_LEVEL, then to "info".
// Throws Error(kInvalidInput) for an unknown name.
void setup_logging(std::string_view level = {});

// The level setup_logging would choose for `level` (exposed for tests).
spdlog::level::level_enum resolve_log_level(std::string_view level);

}  // namespace fedge
