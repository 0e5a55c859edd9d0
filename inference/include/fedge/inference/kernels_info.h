// Which kernels the inference engine's products use (chosen at run time from
// the CPU's features, the portable C++ path in a FEDGE_PORTABLE build), with
// an override for tests and benchmarks. The quantized products have their own
// choice: quant::isa_name() / quant::set_isa() in quant.h.
#pragma once

#include <string>
#include <vector>

namespace fedge::inference {

// "avx512bf16", "avx512", "avx2" (x86), "neon" (aarch64) or "portable".
const char* kernel_isa();
// Forces one of kernel_isa()'s names ("scalar" also means "portable"; "auto"
// restores detection); false when the CPU lacks the instruction set.
bool set_kernel_isa(const char* name);
// The names set_kernel_isa accepts on this CPU, fastest first, "portable" last.
std::vector<std::string> available_kernel_isas();

namespace quant {
// The names quant::set_isa (quant.h) accepts on this CPU, fastest first:
// "avx512", "avx2" (x86), "neon" (aarch64), then "portable" ("scalar" is
// its older name); set_isa("auto") starts on the first, or on "portable" in
// a FEDGE_PORTABLE build.
std::vector<std::string> available_isas();
}  // namespace quant

}  // namespace fedge::inference
