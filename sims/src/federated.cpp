// Levels 4 and 5: placeholder until the federation cores (h-fedcore) are merged.
#include "context.h"
#include "fedge/common/error.h"

namespace fedge::sims::detail {

FederatedOutcome run_federated(Context&, int level) {
  throw Error(ErrorKind::kUnimplemented, "level " + std::to_string(level) +
                                             " needs the federation cores (coordinator/federation.h, "
                                             "node/round_client.h), not merged yet; run levels 0-3 and 6");
}

}  // namespace fedge::sims::detail
