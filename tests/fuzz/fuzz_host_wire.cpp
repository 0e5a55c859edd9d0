// libFuzzer target for the simulator's node-host wire (sims/host_wire.h):
// decode_host_message() of every message kind. Built and run by
// scripts/fuzz.sh (docs/FUZZING.md).
// Every input must either be refused with a protocol::DecodeError, or decode;
// then it must encode to bytes that decode to a message that encodes to the
// same bytes (what a host accepts, it can send on unchanged). Anything else
// (a crash, another exception, a sanitizer report) is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fedge/protocol/codec.h"
#include "fedge/sims/host_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fedge;
  sims::HostWireLimits limits;  // small limits keep each run fast
  limits.max_message_bytes = 1 << 20;
  limits.max_list_length = 1 << 12;
  limits.max_vector_length = 1 << 16;
  limits.max_text_bytes = 1 << 16;
  limits.max_envelope_bytes = 1 << 16;
  limits.max_nodes = 1 << 16;
  sims::HostMessage message;
  try {
    message = sims::decode_host_message(protocol::Bytes::copy_of({data, size}), limits);
  } catch (const protocol::DecodeError&) {
    return 0;
  }
  const protocol::Bytes once = sims::encode_host_message(message);
  const protocol::Bytes twice = sims::encode_host_message(sims::decode_host_message(once, limits));
  if (once.size() != twice.size() || !std::equal(once.data(), once.data() + once.size(), twice.data())) std::abort();
  return 0;
}
