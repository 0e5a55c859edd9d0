// What this CPU and this build offer the code that picks an instruction-set
// path at run time (inference's kernels, privacy's AES, common's f16 loops).
#pragma once

namespace fedge {

// True in a FEDGE_PORTABLE build (CMake option): the kernels, the f16
// conversions and AES start on their portable paths on every CPU.
bool portable_build();

// x86's F16C (half <-> float conversion), with the OS saving the YMM
// registers; false on other CPUs. Read from CPUID because clang 14's
// __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c();

}  // namespace fedge
