// Wall-clock time as the federation cores take it (milliseconds since the Unix
// epoch). Drivers pass it in; the simulator passes its virtual clock instead.
#pragma once

#include <chrono>
#include <cstdint>

namespace fedge {

inline std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace fedge
