#include "fedge/aggregation/lora_shared_a.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "fedge/common/error.h"

namespace fedge::aggregation {
namespace {

void check_length(std::size_t got, std::size_t want, const char* what) {
  if (got != want)
    throw Error(ErrorKind::kInvalidInput,
                std::string(what) + " has " + std::to_string(got) + " floats, expected " + std::to_string(want));
}

std::size_t a_floats(const LoraLayout& layout, const LoraPair& p) { return static_cast<std::size_t>(layout.rank) * p.in; }
std::size_t b_floats(const LoraLayout& layout, const LoraPair& p) { return p.out * static_cast<std::size_t>(layout.rank); }

// Calls f(offset in the adapter, offset in the part, floats) for every pair's
// A (b = false) or B (b = true): the one walk extraction and joining share.
template <class F>
void for_each_block(const LoraLayout& layout, bool b, F&& f) {
  std::size_t at = 0;
  for (const auto& p : layout.pairs) {
    const std::size_t n = b ? b_floats(layout, p) : a_floats(layout, p);
    f(b ? p.b_offset : p.a_offset, at, n);
    at += n;
  }
}

std::vector<float> part(const LoraLayout& layout, std::span<const float> adapter, bool b) {
  check_length(adapter.size(), layout.size, "the adapter");
  std::vector<float> out(b ? lora_b_size(layout) : lora_a_size(layout));
  for_each_block(layout, b, [&](std::size_t from, std::size_t to, std::size_t n) {
    std::copy_n(adapter.begin() + static_cast<std::ptrdiff_t>(from), n, out.begin() + static_cast<std::ptrdiff_t>(to));
  });
  return out;
}

}  // namespace

ParamLayout lora_a_layout(const ParamLayout& adapter) {
  lora_layout(adapter);  // checks the A/B pattern
  ParamLayout out;
  for (std::size_t i = 0; i < adapter.entries().size(); i += 2) {
    const auto& a = adapter.entries()[i];
    out.add(a.name, a.shape);
  }
  return out;
}

bool is_lora_a_only(const ParamLayout& layout) {
  constexpr std::string_view kA = "lora_A.weight";
  const auto& entries = layout.entries();
  return !entries.empty() && std::all_of(entries.begin(), entries.end(), [&](const ParamEntry& e) {
           return e.name.size() >= kA.size() && e.name.compare(e.name.size() - kA.size(), kA.size(), kA) == 0;
         });
}

std::size_t lora_a_size(const LoraLayout& layout) {
  std::size_t n = 0;
  for (const auto& p : layout.pairs) n += a_floats(layout, p);
  return n;
}

std::size_t lora_b_size(const LoraLayout& layout) {
  std::size_t n = 0;
  for (const auto& p : layout.pairs) n += b_floats(layout, p);
  return n;
}

std::vector<float> lora_a_part(const LoraLayout& layout, std::span<const float> adapter) {
  return part(layout, adapter, false);
}

std::vector<float> lora_b_part(const LoraLayout& layout, std::span<const float> adapter) {
  return part(layout, adapter, true);
}

std::vector<float> join_lora_parts(const LoraLayout& layout, std::span<const float> a, std::span<const float> b) {
  check_length(a.size(), lora_a_size(layout), "the A part");
  check_length(b.size(), lora_b_size(layout), "the B part");
  std::vector<float> out(layout.size);
  for (const bool is_b : {false, true}) {
    const std::span<const float> from = is_b ? b : a;
    for_each_block(layout, is_b, [&](std::size_t to, std::size_t at, std::size_t n) {
      std::copy_n(from.begin() + static_cast<std::ptrdiff_t>(at), n, out.begin() + static_cast<std::ptrdiff_t>(to));
    });
  }
  return out;
}

SharedAStep shared_a_step(const LoraLayout& layout, std::span<const float> start, std::span<const float> update) {
  check_length(start.size(), layout.size, "the start adapter");
  check_length(update.size(), layout.size, "the update");
  SharedAStep step{lora_a_part(layout, update), lora_b_part(layout, start)};
  const auto update_b = lora_b_part(layout, update);
  for (std::size_t i = 0; i < step.b.size(); ++i) step.b[i] += update_b[i];
  return step;
}

}  // namespace fedge::aggregation
