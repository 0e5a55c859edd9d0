// The [limits] table of a node or coordinator config.
#include "fedge/protocol/limits_config.h"

namespace fedge::protocol {

using config::Range;

Limits read_limits(const config::Table& t) {
  Limits l;
  l.max_message_bytes = static_cast<std::size_t>(t.integer("max_message_mb", 512, {1, 4096})) << 20;
  l.max_list_length = static_cast<std::size_t>(t.integer("max_list_length", 1 << 16, {16, 1 << 24}));
  l.max_vector_length = static_cast<std::size_t>(
      t.integer("max_vector_length", static_cast<std::int64_t>(l.max_vector_length), {1, std::int64_t{1} << 32}));
  l.max_text_bytes = static_cast<std::size_t>(t.integer("max_text_bytes", 1 << 20, {256, 1 << 28}));
  return l;
}

}  // namespace fedge::protocol
