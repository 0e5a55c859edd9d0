// The one error for a federation config or resume state that cannot run,
// shared by validate(), the core's resume checks and the ledger's replay.
#pragma once

#include <string>

#include "fedge/common/error.h"

namespace fedge::federation::detail {

[[noreturn]] inline void bad_config(const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, "federation config: " + what);
}

}  // namespace fedge::federation::detail
