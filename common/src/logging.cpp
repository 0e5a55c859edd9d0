#include "fedge/common/logging.h"

#include <cstdlib>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>

#include "fedge/common/error.h"

namespace fedge {

spdlog::level::level_enum resolve_log_level(std::string_view level) {
  std::string name(level);
  if (name.empty()) {
    const char* env = std::getenv("FEDGE_LOG_LEVEL");
    name = env != nullptr && *env != '\0' ? env : "info";
  }
  // spdlog's from_str maps unknown names to "off"; only accept real names.
  static constexpr const char* kNames[] = {"trace", "debug", "info", "warn", "warning",
                                           "error", "err", "critical", "off"};
  for (const char* known : kNames) {
    if (name == known) return spdlog::level::from_str(name == "warning" ? "warn" : name);
  }
  throw Error(ErrorKind::kInvalidInput,
              "unknown log level '" + name +
                  "' (from --log-level or FEDGE_LOG_LEVEL): use trace, debug, info, warn, error, critical or off");
}

void setup_logging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("fedge");
  logger->set_level(resolve_log_level(level));
  logger->set_pattern("%^[%H:%M:%S.%e %L]%$ %v");
  spdlog::set_default_logger(logger);
}

}  // namespace fedge
