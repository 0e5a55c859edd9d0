// libFuzzer target for TOML configs: the parser (config::Document) and the
// coordinator's readers of its [federation] and [limits] tables, with their
// range checks and validation. Built and run by scripts/fuzz.sh. Every input
// must either be read or throw fedge::Error; anything else (crash, other
// exception, sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fedge/common/config.h"
#include "fedge/common/error.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/protocol/limits_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto doc = fedge::config::Document::parse_string(text, "fuzz.toml");
    const auto root = doc.root();
    const auto federation = fedge::coordinator::read_federation_config(root.table("federation"));
    (void)fedge::protocol::read_limits(root.table("limits"));
    fedge::federation::validate(federation);
    doc.reject_unknown_keys();
  } catch (const fedge::Error&) {
  }
  return 0;
}
