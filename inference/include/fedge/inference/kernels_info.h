// Which SIMD kernels the inference engine uses (chosen at run time from the
// CPU's features), with an override for tests and benchmarks.
#pragma once

namespace fedge::inference {

// "avx512", "avx2" or "scalar".
const char* kernel_isa();
// Forces "avx512", "avx2" or "scalar" ("auto" restores detection); false when
// the CPU lacks the instruction set.
bool set_kernel_isa(const char* name);

}  // namespace fedge::inference
