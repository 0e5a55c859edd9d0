// What a node holds in memory, and the budget check `fedge node` makes before
// it starts serving and training ([node] memory_mb).
//
// The base is measured on the loaded model (each tensor once; the mapped part
// is the file's page cache, counted because it becomes resident as the
// weights are read). The rest are estimates from the node config, made before
// anything is allocated (docs/DEPLOYMENT.md, "Memory budget"):
//  - KV cache: f32 keys and values, 2 * layers * kv_dim * 4 bytes per token,
//    for serve.max_batch requests of serve.context tokens (the model's context
//    when unset), plus serve.split_sessions full-context sessions of the
//    layers a split peer runs;
//  - adapters: the served global and local adapters and the training slot;
//  - training: the adapter's values, gradients and two Adam moments, and the
//    activations autograd keeps for train.max_batch_size sequences of
//    data.seq_len tokens (per layer and token: the residual stream, norms,
//    q/k/v/o, the MLP's three intermediate vectors, one row of attention
//    scores per head), or with gradient checkpointing each layer's input and
//    one layer's activations.
// The adapter is assumed to be the coordinator's default (rank 8 on q_proj
// and v_proj) until the first global arrives.
#pragma once

#include <string>

#include "fedge/node/runtime.h"  // NodeRuntimeConfig; inference::Model through local_trainer.h

namespace fedge::node {

struct NodeMemory {
  double base_mb = 0;         // base weights, each tensor once
  double base_mapped_mb = 0;  // of which used in place from the model file
  double adapters_mb = 0;     // LoRA adapters held for serving and training
  double kv_cache_mb = 0;     // serving's KV caches at their largest
  double training_mb = 0;     // optimizer state and activations of one step
  double total_mb() const { return base_mb + adapters_mb + kv_cache_mb + training_mb; }
};

// The node's memory with `base` loaded as `config` asks.
NodeMemory estimate_node_memory(const inference::Model& base, const NodeRuntimeConfig& config);
// "base 258 MB (258 MB mapped from the file), adapters 1 MB, KV cache 12 MB,
// training 100 MB": the parts, as the start-up log line and errors print them.
std::string describe(const NodeMemory& memory);
// Error(kInvalidInput) when config.memory_mb > 0 and the parts do not fit in
// it, naming the budget, every part and what to change.
void check_memory_budget(const NodeMemory& memory, const NodeRuntimeConfig& config);

}  // namespace fedge::node
