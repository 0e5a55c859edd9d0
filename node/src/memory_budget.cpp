#include "fedge/node/memory_budget.h"

#include <algorithm>
#include <cstdio>

#include "fedge/common/error.h"

namespace fedge::node {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string megabytes(double mb) {
  char out[32];
  std::snprintf(out, sizeof out, "%.0f MB", mb);
  return out;
}

// Floats of a LoRA adapter of rank r on q_proj and v_proj (the coordinator's
// default adapter).
double default_adapter_floats(const inference::ModelConfig& c) {
  const double r = 8, h = c.hidden_size;
  return c.num_layers * r * ((h + c.q_dim()) + (h + c.kv_dim()));
}

double kv_cache_bytes(const inference::ModelConfig& c, const NodeRuntimeConfig& config) {
  const double per_token_layer = 2.0 * c.kv_dim() * 4.0;
  const int context = config.serve.context > 0 ? std::min(config.serve.context, c.context_length()) : c.context_length();
  double bytes = 0;
  if (!config.serve.http.empty() || !config.serve.zmq.empty())
    bytes += per_token_layer * c.num_layers * double(config.serve.max_batch) * context;
  if (!config.serve.split_serve.empty())
    bytes += per_token_layer * c.num_layers * double(config.serve.split_sessions) * c.context_length();
  return bytes;
}

double training_bytes(const inference::ModelConfig& c, const NodeRuntimeConfig& config, double adapter_floats) {
  const double h = c.hidden_size, layers = c.num_layers, seq = config.seq_len;
  // Without a cap the round plan's batch decides; 4 is the plan's default.
  const int batch = config.trainer.max_batch_size > 0 ? config.trainer.max_batch_size : 4;
  const double tokens = double(batch) * seq;
  const double per_layer_token = 4.0 * (10.0 * h + 3.0 * c.intermediate_size + c.num_heads * seq);
  const bool all_checkpointed = config.trainer.train.gradient_checkpointing;
  const int checkpointed = all_checkpointed ? c.num_layers : std::min(config.trainer.train.checkpoint_layers, c.num_layers);
  const double kept = (layers - checkpointed) * per_layer_token + checkpointed * 4.0 * h +
                      (checkpointed > 0 ? per_layer_token : 0.0);  // one layer recomputed at a time
  const double head = 2.0 * 4.0 * h;  // final hidden and its gradient
  const double optimizer = 4.0 * 4.0 * adapter_floats;  // values, gradients, two Adam moments
  return tokens * (kept + head) + optimizer;
}

}  // namespace

NodeMemory estimate_node_memory(const inference::Model& base, const NodeRuntimeConfig& config) {
  const auto& c = base.config();
  const auto weights = base.weight_memory();
  const double adapter_floats = default_adapter_floats(c);
  NodeMemory m;
  m.base_mb = double(weights.bytes) / kMiB;
  m.base_mapped_mb = double(weights.mapped_bytes) / kMiB;
  // Served global and local adapters, and the copy the worker trains.
  m.adapters_mb = 3.0 * 4.0 * adapter_floats / kMiB;
  m.kv_cache_mb = kv_cache_bytes(c, config) / kMiB;
  m.training_mb = training_bytes(c, config, adapter_floats) / kMiB;
  return m;
}

std::string describe(const NodeMemory& m) {
  return "base " + megabytes(m.base_mb) + " (" + megabytes(m.base_mapped_mb) + " mapped from the file), adapters " +
         megabytes(m.adapters_mb) + ", KV cache " + megabytes(m.kv_cache_mb) + ", training " +
         megabytes(m.training_mb);
}

void check_memory_budget(const NodeMemory& m, const NodeRuntimeConfig& config) {
  if (config.memory_mb <= 0 || m.total_mb() <= config.memory_mb) return;
  std::string advice;
  if (config.model_weights != inference::WeightType::kQ4_0)
    advice += "a smaller weight type ([model] weights = \"q4_0\" holds the base in about 0.14x of f32), ";
  if (m.kv_cache_mb > 0) advice += "a shorter serving context or batch ([serve] context, max_batch), ";
  if (!config.trainer.train.gradient_checkpointing && m.training_mb > 0)
    advice += "gradient checkpointing ([train] gradient_checkpointing = true), ";
  advice += "a smaller training batch or sequence ([train] max_batch_size, [data] seq_len)";
  throw Error(ErrorKind::kInvalidInput,
              "node memory budget [node] memory_mb = " + megabytes(config.memory_mb) + " is too small: the node needs " +
                  megabytes(m.total_mb()) + " (" + describe(m) + "). Raise memory_mb or lower what needs it: " + advice);
}

}  // namespace fedge::node
