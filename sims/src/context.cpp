#include "context.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/inference/lora.h"
#include "fedge/node/scaffold.h"
#include "fedge/training/trainer.h"

namespace fedge::sims::detail {

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

namespace {

// Parameters a forward pass touches per token: every layer's projections and the
// LM head (the embedding lookup is free).
std::int64_t base_flop_parameters(const inference::ModelConfig& c) {
  std::int64_t per_layer = static_cast<std::int64_t>(c.hidden_size) * (c.q_dim() + 2 * c.kv_dim()) +
                           static_cast<std::int64_t>(c.q_dim()) * c.hidden_size +
                           3ll * c.hidden_size * c.intermediate_size;
  return per_layer * c.num_layers + static_cast<std::int64_t>(c.vocab_size) * c.hidden_size;
}

}  // namespace

Context::Context(const Scenario& scenario, std::vector<NodeData> nodes, inference::Model model,
                 inference::Tokenizer tokenizer)
    : scenario_(scenario), nodes_(std::move(nodes)), model_(std::move(model)), tokenizer_(std::move(tokenizer)) {
  inference::LoraConfig lora;
  lora.r = scenario.model.lora_rank;
  lora.alpha = scenario.model.lora_alpha;
  lora.target_modules = scenario.model.targets;
  auto adapter = inference::LoraAdapter::create(model_.config(), lora, derive_seed(scenario.seed, "adapter/init"));
  initial_ = adapter.to_params();
  lora_scaling_ = adapter.config().scale();
  model_.add_adapter(kAdapterSlot, std::move(adapter));
  rank_aggregation_ = node::parse_rank_aggregation(scenario.training.rank_aggregation);
  shares_a_only_ = scenario.training.personalization == "shared-a";
  if (heterogeneous() || shares_a_only_) lora_pairs_ = node::lora_layout(initial_.layout());
  if (shares_a_only_) {
    a_layout_ = node::lora_a_layout(initial_.layout());
    initial_b_ = node::lora_b_part(lora_pairs_, initial_.values());
  }
  if (rank_aggregation_ == node::RankAggregation::kFlexLora) {
    // Named after each pair's A ("...lora_A.weight" -> "...lora_BA.weight").
    for (std::size_t i = 0; i < lora_pairs_.pairs.size(); ++i) {
      std::string name = initial_.layout().entries()[2 * i].name;
      name.replace(name.find("lora_A"), 6, "lora_BA");
      const auto& p = lora_pairs_.pairs[i];
      dense_layout_.add(name, {static_cast<std::int64_t>(p.out), static_cast<std::int64_t>(p.in)});
    }
  }
  scaffold_ = scenario.training.scaffold();
  if (scaffold_) {
    scaffold_layout_ = node::scaffold_layout(initial_.layout());
  }
  base_parameters_ = base_flop_parameters(model_.config());
  // As a node's [train] settings for the simulation: a constant rate, no
  // warm-up, no progress lines; each round's seed comes with its request.
  round_options_.lora_alpha = scenario.model.lora_alpha;
  round_options_.train.schedule = "constant";
  round_options_.train.warmup_steps = 0;
  round_options_.train.log_every = 0;
  const int n = num_nodes();
  if (scenario.training.eval_nodes > 0 && scenario.training.eval_nodes < n) {
    // A partial Fisher-Yates shuffle picks the sample; every process draws the same.
    std::vector<int> order(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    Rng rng(scenario.seed, "eval-sample");
    eval_sample_.assign(static_cast<std::size_t>(n), 0);
    for (int i = 0; i < scenario.training.eval_nodes; ++i) {
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(i) + rng.below(n - i)]);
      eval_sample_[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] = 1;
    }
  }
}

int Context::node_rank(int n) const { return device_rank(scenario_, node(n).device); }

const ParamLayout& Context::federated_layout() const {
  if (shares_a_only_) return a_layout_;
  if (scaffold_) return scaffold_layout_;
  return rank_aggregation_ == node::RankAggregation::kFlexLora ? dense_layout_ : initial_.layout();
}

std::vector<float> Context::initial_federated() const {
  if (shares_a_only_) return node::lora_a_part(lora_pairs_, initial_.values());
  if (rank_aggregation_ == node::RankAggregation::kFlexLora)
    return node::lora_products(lora_pairs_, initial_.values(), lora_scaling_);
  std::vector<float> out(initial_.values().begin(), initial_.values().end());
  if (scaffold_) out.resize(2 * out.size(), 0.0F);  // c = 0
  return out;
}

ParamVector Context::node_adapter(int n, std::span<const float> global, std::span<const float> own_b) const {
  using node::RankAggregation;
  if (shares_a_only_ && !own_b.empty()) return {initial_.layout(), node::join_lora_parts(lora_pairs_, global, own_b)};
  switch (rank_aggregation_) {
    case RankAggregation::kHetLora:
      return {initial_.layout(), node::keep_rank(lora_pairs_, global, node_rank(n))};
    case RankAggregation::kFlexLora:
      return {initial_.layout(),
              node::flexlora_factors(lora_pairs_, global, node_rank(n), lora_scaling_, initial_.values())};
    case RankAggregation::kNone: break;
  }
  return global_adapter(global);
}

ParamVector Context::global_adapter(std::span<const float> global) const {
  if (shares_a_only_) return {initial_.layout(), node::join_lora_parts(lora_pairs_, global, initial_b_)};
  if (scaffold_) global = global.first(initial_.size());
  return {initial_.layout(), std::vector<float>(global.begin(), global.end())};
}

ParamVector Context::scaffold_offset(std::span<const float> global, const std::vector<float>& control) const {
  const std::size_t n = initial_.size();
  std::vector<float> offset(global.begin() + static_cast<std::ptrdiff_t>(n), global.end());
  if (offset.size() != n) throw Error(ErrorKind::kInvalidInput, "scaffold: the global is not [x ; c]");
  for (std::size_t i = 0; i < control.size(); ++i) offset[i] -= control[i];
  return {initial_.layout(), std::move(offset)};
}

void Context::append_control_delta(std::vector<float>& update, const std::vector<float>& mean_gradient,
                                   const std::vector<float>& control) {
  const std::size_t n = update.size();
  update.insert(update.end(), mean_gradient.begin(), mean_gradient.end());
  for (std::size_t i = 0; i < control.size(); ++i) update[n + i] -= control[i];
}

std::vector<float> Context::node_update(int n, const ParamVector& start, std::vector<float> update,
                                        std::span<const float> global) const {
  using node::RankAggregation;
  if (rank_aggregation_ == RankAggregation::kHetLora) return node::keep_rank(lora_pairs_, update, node_rank(n));
  if (rank_aggregation_ != RankAggregation::kFlexLora) return update;
  for (std::size_t i = 0; i < update.size(); ++i) update[i] += start.values()[i];  // the local adapter
  auto dense = node::lora_products(lora_pairs_, update, lora_scaling_);
  for (std::size_t i = 0; i < dense.size(); ++i) dense[i] -= global[i];
  return dense;
}

node::SharedAStep Context::shared_a_step(const ParamVector& start, std::span<const float> update) const {
  if (!shares_a_only_) throw Error(ErrorKind::kRuntime, "shared_a_step outside personalization \"shared-a\"");
  return node::shared_a_step(lora_pairs_, start.values(), update);
}

int Context::evaluated_nodes() const {
  return eval_sample_.empty() ? num_nodes() : scenario_.training.eval_nodes;
}

std::uint64_t node_data_bytes(const NodeData& node) {
  std::uint64_t bytes = 0;
  for (const auto* records : {&node.train, &node.eval_text, &node.eval_instruct}) {
    bytes += records->capacity() * sizeof(training::Record);
    // Strings of up to 15 characters live inside the Record (libstdc++'s small-string buffer).
    auto heap = [](const std::string& text) -> std::uint64_t { return text.capacity() > 15 ? text.capacity() + 1 : 0; };
    for (const auto& r : *records) bytes += heap(r.prompt) + heap(r.completion);
  }
  for (const auto* set : {&node.train_set, &node.eval_set}) {
    for (std::size_t i = 0; i < set->size(); ++i) {
      const auto& seq = (*set)[i];
      bytes += sizeof(seq) + seq.tokens.capacity() * sizeof(seq.tokens[0]) + seq.target.capacity();
    }
  }
  return bytes + node.prompt_tokens.capacity() * sizeof(std::int64_t) +
         node.prompt_bytes.capacity() * sizeof(std::uint64_t);
}

void Context::progress(const std::string& line) const {
  if (progress_sink) {
    progress_sink(line);
  } else {
    spdlog::info("{}", line);
  }
}

TrainOutcome Context::train(const ParamVector& start, const training::TokenDataset& data, int steps,
                            std::uint64_t seed, const std::string& schedule, const ParamVector* centre, double mu) {
  auto* adapter = model_.adapter(kAdapterSlot);
  adapter->from_params(start);
  training::TrainOptions o;
  o.steps = steps;
  o.batch_size = scenario_.training.batch_size;
  o.lr = scenario_.training.lr;
  o.schedule = schedule;
  o.warmup_steps = 0;
  o.seed = seed;
  o.log_every = 0;
  if (centre) o.fedprox_mu = mu;
  auto trainer = training::Trainer::for_adapter(model_, kAdapterSlot, data, o);
  if (centre && mu > 0) trainer.set_proximal_center(*centre);
  TrainOutcome out;
  for (const auto& st : trainer.run()) out.tokens += st.tokens;
  out.params = adapter->to_params();
  return out;
}

node::LocalTrainResult Context::train_round(int n, const ParamVector& global, const node::LocalTrainRequest& request,
                                            const ParamVector* gradient_offset) {
  std::string key;
  if (memo_on_) {
    char hyper[128];
    std::snprintf(hyper, sizeof hyper, "%u/%.17g/%u/%.17g/%llu", request.local_steps, request.learning_rate,
                  request.batch_size, request.fedprox_mu, static_cast<unsigned long long>(request.seed.value_or(0)));
    key = std::to_string(n) + "/" + hyper + "/" +
          std::to_string(fnv1a(global.values().data(), global.values().size_bytes()));
    if (gradient_offset)
      key += "/c" + std::to_string(fnv1a(gradient_offset->values().data(), gradient_offset->values().size_bytes()));
    if (auto it = round_memo_.find(key); it != round_memo_.end()) return it->second;
  }
  auto result =
      node::train_local_round(model_, node(n).train_set, global, request, round_options_, {}, nullptr, gradient_offset);
  model_.set_active_adapter("");
  if (!key.empty()) round_memo_.emplace(key, result);
  return result;
}

Quality Context::evaluate(const ParamVector& params, const NodeData& node, bool accuracy) {
  model_.adapter(kAdapterSlot)->from_params(params);
  model_.set_active_adapter(kAdapterSlot);
  Quality q;
  q.perplexity = training::evaluate_loss(model_, node.eval_set, 8).perplexity;
  int k = std::min<int>(scenario_.serving.eval_accuracy_records, static_cast<int>(node.eval_instruct.size()));
  if (accuracy && k > 0) {
    std::vector<training::Record> some(node.eval_instruct.begin(), node.eval_instruct.begin() + k);
    q.accuracy = training::exact_match_accuracy(model_, tokenizer_, some, scenario_.serving.max_new_tokens);
  }
  model_.set_active_adapter("");
  return q;
}

double Context::pooled_perplexity(const ParamVector& params) {
  model_.adapter(kAdapterSlot)->from_params(params);
  model_.set_active_adapter(kAdapterSlot);
  const double ppl = training::evaluate_loss(model_, pooled_eval_, 8).perplexity;
  model_.set_active_adapter("");
  return ppl;
}

double Context::base_perplexity(const NodeData& node) {
  model_.set_active_adapter("");
  return training::evaluate_loss(model_, node.eval_set, 8).perplexity;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  // Nearest rank: the smallest value with at least p of the values at or below it.
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

namespace {

// When request i of node n arrives in the serving period: evenly spread, nodes
// offset from each other so they do not all arrive at once.
double request_time(const Scenario& s, int node, int i) {
  double gap = s.serving.duration_s / s.serving.requests_per_node;
  return (i + (node + 0.5) / std::max(1, s.nodes)) * gap;
}

constexpr std::uint64_t kTokenBytes = 4;      // a token id on the wire
constexpr std::uint64_t kRequestOverhead = 64;  // framing of one request/response

}  // namespace

ServingOutcome serve(const Context& ctx, int level, const NodeData& node) {
  const Scenario& s = ctx.scenario();
  const auto& cfg = ctx.model_config();
  const std::int64_t n_params = ctx.base_parameters();
  const int out_tokens = s.serving.max_new_tokens;
  const int k = std::min(s.split_layers, cfg.num_layers);
  const double node_share = static_cast<double>(k) / cfg.num_layers;
  const std::uint64_t hidden_bytes = static_cast<std::uint64_t>(cfg.hidden_size) * 4;
  ServingOutcome out;
  for (int i = 0; i < s.serving.requests_per_node; ++i) {
    const std::size_t r = static_cast<std::size_t>(i) % node.prompt_tokens.size();
    const std::int64_t p = node.prompt_tokens[r];
    const std::uint64_t prompt_bytes = node.prompt_bytes[r] + kRequestOverhead;
    const std::uint64_t answer_bytes = out_tokens * kTokenBytes + kRequestOverhead;
    const bool remote = level <= 2;
    const bool in_outage = s.outage.contains(request_time(s, node.index, i));
    if (in_outage) ++out.outage_requests;
    if (remote && in_outage) continue;  // the site's uplink is down: the request fails
    if (in_outage) ++out.outage_served;
    double ttft = 0, tpot = 0;
    if (level == 0 || level == 2) {
      const auto& net = level == 0 ? s.node_network : s.edge_network;
      const auto& server = level == 0 ? s.cloud : s.edge_server;
      double prefill = compute_seconds(server, forward_flops(n_params, p));
      double step = compute_seconds(server, forward_flops(n_params, 1));
      ttft = transfer_seconds(net, prompt_bytes, true) + prefill + transfer_seconds(net, kTokenBytes, false);
      // Tokens stream back pipelined: a token costs the slower of compute and wire.
      tpot = std::max(step, transfer_seconds(net, kTokenBytes, false) - net.latency_s);
      out.server_compute_s += prefill + step * (out_tokens - 1);
      out.bytes_up += prompt_bytes;
      out.bytes_down += answer_bytes;
      out.raw_bytes += node.prompt_bytes[r];  // the prompt itself left the site
    } else if (level == 1) {
      const auto& net = s.node_network;
      double node_prefill = compute_seconds(node.device, forward_flops(n_params, p) * node_share);
      double cloud_prefill = compute_seconds(s.cloud, forward_flops(n_params, p) * (1 - node_share));
      double node_step = compute_seconds(node.device, forward_flops(n_params, 1) * node_share);
      double cloud_step = compute_seconds(s.cloud, forward_flops(n_params, 1) * (1 - node_share));
      // Hidden states of every prompt token go up; each new token makes a round trip.
      ttft = node_prefill + transfer_seconds(net, p * hidden_bytes, true) + cloud_prefill +
             transfer_seconds(net, kTokenBytes, false);
      tpot = node_step + transfer_seconds(net, hidden_bytes, true) + cloud_step +
             transfer_seconds(net, kTokenBytes, false);
      out.node_compute_s += node_prefill + node_step * (out_tokens - 1);
      out.server_compute_s += cloud_prefill + cloud_step * (out_tokens - 1);
      out.bytes_up += (p + out_tokens - 1) * hidden_bytes + kRequestOverhead;
      out.bytes_down += answer_bytes;
    } else {
      double prefill = compute_seconds(node.device, forward_flops(n_params, p));
      double step = compute_seconds(node.device, forward_flops(n_params, 1));
      ttft = prefill;
      tpot = step;
      out.node_compute_s += prefill + step * (out_tokens - 1);
    }
    out.ttft_s.push_back(ttft);
    out.tpot_s.push_back(tpot);
  }
  return out;
}

}  // namespace fedge::sims::detail
