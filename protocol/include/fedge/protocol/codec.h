// Envelope <-> bytes. encode() writes one flat Cap'n Proto message (segment
// table + words); decode() checks it against Limits and the schema's ranges and
// returns plain structs whose bulk payloads point into the received bytes.
// Opaque parts (the secure-aggregation messages) are checked for structure
// here and for their fields by federation/wire.h, which owns their C++ form.
// Every decode failure is a DecodeError (a fedge::Error of kind kProtocol)
// naming the field, with the ErrorCode to put in the reply; malformed bytes
// never crash.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/protocol/messages.h"

namespace fedge::protocol {

// Receiver-side limits, set from config. Defaults fit a 64M-parameter update.
struct Limits {
  std::size_t max_message_bytes = std::size_t{512} << 20;
  // Cap'n Proto traversal limit in 8-byte words; 0 = max_message_bytes / 8 + 1024.
  // Counts every word read, so it also stops amplification through shared pointers.
  std::uint64_t traversal_limit_words = 0;
  int nesting_limit = 16;                  // the schema nests at most 5 deep
  std::size_t max_list_length = 1 << 16;   // ids, keys, shares, metrics, layout entries
  std::size_t max_vector_length = std::size_t{1} << 27;  // elements of a bulk payload
  std::size_t max_text_bytes = 1 << 20;

  std::uint64_t traversal_words() const {
    return traversal_limit_words ? traversal_limit_words : max_message_bytes / 8 + 1024;
  }
};

// The most bytes a message of each type may take, by Body::index(); 0 = no
// cap but Limits::max_message_bytes. A receiver derives them from what it
// expects (federation/size_caps.h: the round plan's nodes, degree and update
// length), so that a heartbeat cannot take 512 MiB; decode() checks the cap
// before it reads, let alone copies, anything out of the message.
struct SizeCaps {
  std::array<std::size_t, std::variant_size_v<Body>> bytes{};

  template <class T>
  SizeCaps& set(std::size_t cap) {
    bytes[body_index<T>()] = cap;
    return *this;
  }
  template <class T>
  std::size_t of() const {
    return bytes[body_index<T>()];
  }
};

// What the receiver already knows, to check more than the schema can.
struct Expectations {
  std::optional<std::uint64_t> round;             // Envelope::round must equal it
  std::optional<std::uint64_t> update_length;     // PlainUpdate::update size
  std::optional<SizeCaps> size_caps;              // per message type
};

// A refused message: kind() is ErrorKind::kProtocol; code() is what to tell the
// peer (kBadVersion, kTooLarge, kWrongRound or kMalformed).
class DecodeError : public Error {
 public:
  DecodeError(ErrorCode code, std::string message) : Error(ErrorKind::kProtocol, std::move(message)), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// One message's bytes, shared and immutable. Decoded payloads share ownership.
class Bytes {
 public:
  Bytes() = default;
  static Bytes copy_of(std::span<const std::uint8_t> bytes);
  static Bytes from_vector(std::vector<std::uint8_t> bytes);
  // Takes ownership of `owner`, whose memory [data, data + size) it views.
  static Bytes adopt(std::shared_ptr<const void> owner, const std::uint8_t* data, std::size_t size) {
    return Bytes(std::move(owner), data, size);
  }
  std::span<const std::uint8_t> span() const { return {data_, size_}; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::shared_ptr<const void>& owner() const { return owner_; }

 private:
  Bytes(std::shared_ptr<const void> owner, const std::uint8_t* data, std::size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}
  std::shared_ptr<const void> owner_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Serialises `envelope` (its version field is written as given, so tests can
// send other versions). Bulk payloads that are 8-byte aligned are referenced,
// not copied, until the final flat copy. Throws Error(kInvalidInput) for a
// payload larger than the wire can carry.
Bytes encode(const Envelope& envelope);

// Decodes and validates. `zero_copy` (optional out) says whether payloads point
// into `bytes` (true) or into an aligned copy (bytes not 8-byte aligned).
Envelope decode(const Bytes& bytes, const Limits& limits, const Expectations& expect = {},
                bool* zero_copy = nullptr);

}  // namespace fedge::protocol
