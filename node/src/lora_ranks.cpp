#include "fedge/node/lora_ranks.h"

#include <string>

#include "fedge/common/error.h"

namespace fedge::node {

std::uint32_t hetlora_training_rank(const ParamVector& global, int configured, bool secure) {
  if (configured == 0) return 0;
  const LoraLayout pairs = lora_layout(global.layout());
  const std::string mine = "[train] lora_rank = " + std::to_string(configured);
  if (configured > pairs.rank)
    throw Error(ErrorKind::kInvalidInput, mine + " is above the global's LoRA rank " + std::to_string(pairs.rank) +
                                              "; set it to " + std::to_string(pairs.rank) + " or less");
  if (configured == pairs.rank) return 0;
  if (!secure)
    throw Error(ErrorKind::kInvalidInput, mine + " (below the global's rank " + std::to_string(pairs.rank) +
                                              ") needs secure rounds, in which the node reports its rank: set "
                                              "[federation] secure = true and rank_aggregation = \"hetlora\" on the "
                                              "coordinator");
  return static_cast<std::uint32_t>(configured);
}

}  // namespace fedge::node
