// Bulk conversions behind SafetensorsFile::to_f32 and ParamVector::save. Private
// to fedge_common. Sources may be unaligned (a foreign writer's header need not
// be padded), so inputs are raw bytes read with memcpy.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedge::detail {

void f16_to_f32_bulk(const std::byte* src, float* dst, std::size_t n);
void bf16_to_f32_bulk(const std::byte* src, float* dst, std::size_t n);
void f64_to_f32_bulk(const std::byte* src, float* dst, std::size_t n);
void f32_to_f16_bulk(const float* src, std::uint16_t* dst, std::size_t n);
void f32_to_bf16_bulk(const float* src, std::uint16_t* dst, std::size_t n);

}  // namespace fedge::detail
