// Decoding limits from a config table ([limits] in node and coordinator files):
//   max_message_mb, max_list_length, max_vector_length, max_text_bytes.
#pragma once

#include "fedge/common/config.h"
#include "fedge/protocol/codec.h"

namespace fedge::protocol {

Limits read_limits(const config::Table& table);

}  // namespace fedge::protocol
