// Levels 4 and 5 with [training] mode = "fedbuff" (docs/SIMULATOR.md,
// "Asynchronous rounds (FedBuff)"): buffered asynchronous aggregation under
// the virtual clock, in this process. Every node trains continuously: when a
// local update is done it uploads it, and as soon as the update is delivered
// (in the clear: it reached the coordinator; under SecAgg+: its buffer's round
// is over) it starts again from the newest global it holds. One update in
// flight per node: a node never trains faster than its link carries updates. The coordinator buffers arriving updates (dropping those
// staler than max_staleness) and, whenever buffer_size are buffered, seals the
// buffer: with [secagg] on, its contributors run one SecAgg+ round among
// themselves (aggregation::secure_sum_in_process on the real encoded vectors,
// each scaled by its own staleness weight before masking), else the server
// sums the plain updates (aggregation::FedBuffBuffer). The server step
// (aggregation::fedbuff_step) publishes the next global version, sent to every node.
//
// Simulated time: training from counted FLOPs on each node's device profile
// (as the synchronous path), messages from their payload sizes over the
// level's network; a SecAgg+ buffer adds its four stages' transfer times.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <queue>

#include "federation_sim.h"
#include "fedge/aggregation/fedbuff.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/federation/update_codec.h"

namespace fedge::sims::detail {
namespace {

constexpr std::uint64_t kEnvelopeBytes = 256;  // message header, ids and framing around a payload
constexpr std::uint64_t kSmallMessageBytes = 128;  // "update ready", a key advertisement, an unmask request
constexpr double kLossCap = 64.0;  // as federation::FederationConfig's default

using Global = std::shared_ptr<const std::vector<float>>;

struct Upload {
  int node = 0;
  std::uint64_t base_version = 0;
  std::uint64_t examples = 0;
  double train_loss = 0;
  double compute_s = 0;  // simulated training time on the node's device
  std::vector<float> update;
};

struct Event {
  enum Kind { kGlobalArrives, kTrainDone, kUploadArrives, kAggregated } kind = kGlobalArrives;
  double at = 0;
  int node = 0;  // -1: the coordinator
  std::uint64_t seq = 0;
  std::shared_ptr<Upload> upload;  // kTrainDone, kUploadArrives
  Global global;                   // kGlobalArrives
  std::uint64_t version = 0;       // kGlobalArrives
  bool operator>(const Event& o) const {
    if (at != o.at) return at > o.at;
    if (node != o.node) return node > o.node;
    return seq > o.seq;
  }
};

struct NodeState {
  Global global;  // the newest version received
  std::uint64_t version = 0;
  bool busy = false;  // training, or its update not delivered yet
  std::uint64_t trainings = 0;
  std::uint64_t bytes_up = 0, bytes_down = 0;
  double compute_s = 0;
  double up_free = 0, down_free = 0;  // when its links finish what is queued on them
};

// A sealed buffer waiting for its SecAgg+ round (or nothing, plain) to finish.
struct Sealed {
  std::vector<float> weighted_sum;  // S = sum_i w(s_i) n_i u_i (n_i: capped example weight)
  double total_weight = 0;          // W
  std::vector<int> contributors;
  std::vector<std::uint64_t> staleness;
};

class FedBuffSim {
 public:
  FedBuffSim(Context& ctx, int level);
  FederatedOutcome run();

 private:
  void push(Event e);
  void on_global(const Event& e);
  void start_training(int n);
  void on_train_done(const Event& e);
  void on_upload(const Event& e);
  void seal();
  Sealed sum_plain(std::uint64_t target) const;
  Sealed sum_secure(std::uint64_t target);
  double secure_overhead_s(std::uint64_t& up_bytes, std::uint64_t& down_bytes) const;
  void on_aggregated();
  void send_global(int n, const Global& global, std::uint64_t version);
  void publish(const Sealed& done);
  std::uint64_t target_version() const { return version_ + sealed_.size(); }

  Context& ctx_;
  const Scenario& s_;
  int level_;
  const NetworkProfile& net_;
  const std::uint64_t length_;  // adapter floats
  const std::uint64_t example_scale_;
  const aggregation::StalenessPolicy policy_;
  std::vector<NodeState> nodes_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  std::uint64_t seq_ = 0;
  double now_ = 0;
  std::uint64_t version_ = 0;  // the newest published global version
  Global global_;
  std::vector<std::shared_ptr<Upload>> open_;  // buffered, not yet sealed
  std::queue<Sealed> sealed_;                  // in the order their steps apply
  std::uint64_t buffers_sealed_ = 0, updates_aggregated_ = 0, dropped_stale_ = 0;
  int final_version_;
  FederatedOutcome out_;
};

std::uint64_t example_scale_for(const Context& ctx) {
  std::vector<std::uint64_t> counts;
  for (int n = 0; n < ctx.num_nodes(); ++n) counts.push_back(std::max<std::uint64_t>(1, ctx.node(n).train_set.size()));
  const auto& t = ctx.scenario().training;
  return federation::capped_example_scale(
      counts, federation::WeightCaps{static_cast<std::uint64_t>(t.max_examples), t.max_weight_share});
}

FedBuffSim::FedBuffSim(Context& ctx, int level)
    : ctx_(ctx), s_(ctx.scenario()), level_(level), net_(level_network(s_, level)), length_(ctx.adapter_floats()),
      example_scale_(example_scale_for(ctx)),
      policy_{s_.training.staleness_exponent, static_cast<std::uint64_t>(s_.training.max_staleness)},
      nodes_(static_cast<std::size_t>(ctx.num_nodes())), final_version_(federated_rounds(s_)) {
  const auto& init = ctx.initial_adapter().values();
  global_ = std::make_shared<const std::vector<float>>(init.begin(), init.end());
  out_.individual_updates_seen = !s_.secagg.enabled;
}

void FedBuffSim::push(Event e) {
  e.seq = seq_++;
  queue_.push(std::move(e));
}

void FedBuffSim::send_global(int n, const Global& global, std::uint64_t version) {
  auto& node = nodes_[static_cast<std::size_t>(n)];
  const std::uint64_t bytes = length_ * 4 + kEnvelopeBytes;
  node.bytes_down += bytes;
  node.down_free = std::max(node.down_free, now_) + transfer_seconds(net_, bytes, false) - net_.latency_s;
  Event e;
  e.kind = Event::kGlobalArrives;
  e.at = node.down_free + net_.latency_s;
  e.node = n;
  e.global = global;
  e.version = version;
  push(std::move(e));
}

void FedBuffSim::on_global(const Event& e) {
  auto& node = nodes_[static_cast<std::size_t>(e.node)];
  if (node.global && e.version <= node.version) return;  // a newer one overtook it
  node.global = e.global;
  node.version = e.version;
  if (!node.busy) start_training(e.node);  // its first global
}

// Trains now (the result is what the node will have when the simulated
// training time has passed) from the newest global the node holds.
void FedBuffSim::start_training(int n) {
  auto& node = nodes_[static_cast<std::size_t>(n)];
  node.busy = true;
  node::LocalTrainRequest request;
  request.round = ++node.trainings;
  request.local_steps = static_cast<std::uint32_t>(s_.training.local_steps);
  request.learning_rate = s_.training.lr;
  request.batch_size = static_cast<std::uint32_t>(s_.training.batch_size);
  request.fedprox_mu = s_.training.fedprox_mu;
  request.seed = derive_seed(s_.seed, "fedbuff/" + std::to_string(n) + "/" + std::to_string(node.trainings));
  const ParamVector global(ctx_.initial_adapter().layout(), *node.global);
  auto result = ctx_.train_round(n, global, request);
  auto up = std::make_shared<Upload>();
  up->node = n;
  up->base_version = node.version;
  up->examples = std::max<std::uint64_t>(1, result.num_examples);
  up->train_loss = result.train_loss;
  up->update = std::move(result.update);
  up->compute_s = compute_seconds(ctx_.node(n).device, train_flops(ctx_.base_parameters(), result.tokens));
  Event e;
  e.kind = Event::kTrainDone;
  e.at = now_ + up->compute_s;
  e.node = n;
  e.upload = std::move(up);
  push(std::move(e));
}

void FedBuffSim::on_train_done(const Event& e) {
  auto& node = nodes_[static_cast<std::size_t>(e.node)];
  node.compute_s += e.upload->compute_s;
  // Under SecAgg+ the node only says that its update is ready (the masked
  // vector goes up in the buffer's round); in the clear it sends the update.
  const std::uint64_t bytes = s_.secagg.enabled ? kSmallMessageBytes : length_ * 4 + kEnvelopeBytes;
  node.bytes_up += bytes;
  node.up_free = std::max(node.up_free, now_) + transfer_seconds(net_, bytes, true) - net_.latency_s;
  Event up;
  up.kind = Event::kUploadArrives;
  up.at = node.up_free + net_.latency_s;
  up.node = e.node;
  up.upload = e.upload;
  push(std::move(up));
}

void FedBuffSim::on_upload(const Event& e) {
  const std::uint64_t target = target_version();
  if (target - e.upload->base_version > policy_.max_staleness) {
    ++dropped_stale_;
    start_training(e.node);
    return;
  }
  open_.push_back(e.upload);
  if (!s_.secagg.enabled) start_training(e.node);  // delivered; under SecAgg+ once its buffer's round is over
  if (open_.size() == static_cast<std::size_t>(s_.training.buffer_size)) seal();
}

// Plain: the server sums the updates itself (it sees each one).
Sealed FedBuffSim::sum_plain(std::uint64_t target) const {
  aggregation::FedBuffBuffer buffer(open_.size(), length_, policy_);
  Sealed s;
  for (const auto& up : open_) {
    const double weight = federation::node_weight(up->examples, example_scale_);
    if (!buffer.add(up->update, weight, up->base_version, target))
      throw Error(ErrorKind::kRuntime, "fedbuff: a buffered update became too stale before its buffer was sealed");
  }
  auto sum = buffer.take();
  s.weighted_sum.assign(sum.weighted_sum.begin(), sum.weighted_sum.end());
  s.total_weight = sum.total_weight;
  return s;
}

// SecAgg+ among the buffer's contributors: each scales its own update by its
// staleness weight (it knows the version the buffer applies to) and masks it;
// the server learns only the decoded sums.
Sealed FedBuffSim::sum_secure(std::uint64_t target) {
  const auto k = static_cast<std::uint32_t>(open_.size());
  federation::UpdateEncoding enc;
  enc.update_length = length_;
  enc.clip_range = 1.0;  // federation::FederationConfig's default
  enc.example_scale = example_scale_;
  enc.loss_cap = kLossCap;
  enc.num_clients = k;
  federation::choose_quant_bits(enc, k);
  const std::string tag = std::to_string(level_) + "/" + std::to_string(buffers_sealed_);
  auto params = aggregation::choose_secagg_params(k, enc.vector_length(), s_.secagg.dropout_rate,
                                                  s_.secagg.corrupt_fraction, s_.secagg.failure_probability,
                                                  key_from(s_.seed, "fedbuff-graph/" + tag));
  params.prg = federation::kFederationPrg;
  std::vector<std::vector<std::uint32_t>> inputs;
  for (const auto& up : open_) {
    privacy::ChaChaRng rng(key_from(s_.seed, "fedbuff-quantise/" + tag + "/" + std::to_string(up->node)));
    const double w = aggregation::staleness_weight(target - up->base_version, policy_.exponent);
    inputs.push_back(federation::encode_secure(enc, up->update, up->examples, up->train_loss, rng, 0, w));
  }
  const auto result = aggregation::secure_sum_in_process(buffers_sealed_, params, inputs);
  auto decoded = federation::decode_secure_sum(enc, result.sum);
  Sealed s;
  s.weighted_sum = std::move(decoded.weighted_sum);
  s.total_weight = decoded.total_weight;
  return s;
}

// The four SecAgg+ stages one after the other, each a message up and one down
// per contributor (all the same size, so the slowest is any one of them).
double FedBuffSim::secure_overhead_s(std::uint64_t& up_bytes, std::uint64_t& down_bytes) const {
  const std::uint64_t peers = static_cast<std::uint64_t>(s_.training.buffer_size) - 1;
  const std::uint64_t box = aggregation::share_box_bytes();
  const std::uint64_t ups[] = {kSmallMessageBytes, peers * box + kEnvelopeBytes,
                               (length_ + 2) * 4 + kEnvelopeBytes, peers * 64 + kEnvelopeBytes};
  const std::uint64_t downs[] = {peers * 96 + kEnvelopeBytes, peers * box + kEnvelopeBytes, kSmallMessageBytes, 0};
  double seconds = 0;
  up_bytes = down_bytes = 0;
  for (int stage = 0; stage < 4; ++stage) {
    seconds += transfer_seconds(net_, ups[stage], true);
    if (downs[stage]) seconds += transfer_seconds(net_, downs[stage], false);
    up_bytes += ups[stage];
    down_bytes += downs[stage];
  }
  return seconds;
}

void FedBuffSim::seal() {
  const std::uint64_t target = target_version();
  const auto t0 = std::chrono::steady_clock::now();
  Sealed s = s_.secagg.enabled ? sum_secure(target) : sum_plain(target);
  out_.server_compute_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double done_at = now_;
  if (s_.secagg.enabled) {
    std::uint64_t up = 0, down = 0;
    done_at += secure_overhead_s(up, down);
    for (const auto& u : open_) {
      nodes_[static_cast<std::size_t>(u->node)].bytes_up += up;
      nodes_[static_cast<std::size_t>(u->node)].bytes_down += down;
    }
  }
  for (const auto& u : open_) {
    s.contributors.push_back(u->node);
    s.staleness.push_back(target - u->base_version);
  }
  ++buffers_sealed_;
  open_.clear();
  sealed_.push(std::move(s));
  Event e;
  e.kind = Event::kAggregated;
  e.at = done_at;
  e.node = -1;
  push(std::move(e));
}

void FedBuffSim::on_aggregated() {
  Sealed done = std::move(sealed_.front());
  sealed_.pop();
  global_ = std::make_shared<const std::vector<float>>(
      aggregation::fedbuff_step(*global_, done.weighted_sum, done.total_weight, s_.training.server_lr));
  ++version_;
  updates_aggregated_ += done.contributors.size();
  if (static_cast<int>(version_) < final_version_) {
    for (int n = 0; n < ctx_.num_nodes(); ++n) send_global(n, global_, version_);
    if (s_.secagg.enabled)
      for (int n : done.contributors) start_training(n);  // from the global it holds; the new one is on its way
  }
  publish(done);
}

// Rows and the curve point of the new version; progress.
void FedBuffSim::publish(const Sealed& done) {
  const bool last = static_cast<int>(version_) == final_version_;
  const bool evaluate = last || s_.training.eval_every_round;
  const ParamVector global(ctx_.initial_adapter().layout(), *global_);
  double sum = 0;
  int evaluated = 0;
  for (int n = 0; n < ctx_.num_nodes(); ++n) {
    const auto& node = nodes_[static_cast<std::size_t>(n)];
    MetricsRow r;
    r.level = level_;
    r.round = static_cast<int>(version_);
    r.node = n;
    r.perplexity = std::nan("");
    if (evaluate && ctx_.evaluated(n)) {
      const auto q = ctx_.evaluate(global, ctx_.node(n), last);
      r.perplexity = q.perplexity;
      r.accuracy = q.accuracy;
      sum += q.perplexity, ++evaluated;
    }
    r.participated = std::count(done.contributors.begin(), done.contributors.end(), n) > 0;
    r.bytes_up = node.bytes_up;
    r.bytes_down = node.bytes_down;
    r.node_compute_s = node.compute_s;
    r.node_energy_j = energy_joules(ctx_.node(n).device, node.compute_s);
    r.sim_time_s = now_;
    out_.rows.push_back(r);
  }
  std::string stale;
  for (auto st : done.staleness) stale += (stale.empty() ? "" : ",") + std::to_string(st);
  std::string line = "level " + std::to_string(level_) + " fedbuff version " + std::to_string(version_) + "/" +
                     std::to_string(final_version_) + ": " + std::to_string(done.contributors.size()) +
                     " updates (staleness " + stale + ") in the " + (s_.secagg.enabled ? "secure sum" : "sum");
  if (evaluated > 0) {
    out_.curve.push_back(CurvePoint{0, level_, "fedbuff", static_cast<int>(version_),
                                    static_cast<int>(updates_aggregated_), now_, sum / evaluated});
    line += ", mean held-out perplexity " + std::to_string(sum / evaluated);
  }
  char at[32];
  std::snprintf(at, sizeof at, "%.1f", now_);
  ctx_.progress(line + ", simulated t=" + at + " s");
}

FederatedOutcome FedBuffSim::run() {
  for (int n = 0; n < ctx_.num_nodes(); ++n) send_global(n, global_, 0);
  while (static_cast<int>(version_) < final_version_) {
    if (queue_.empty()) throw Error(ErrorKind::kRuntime, "fedbuff: the simulation stalled (no event left)");
    Event e = queue_.top();
    queue_.pop();
    now_ = std::max(now_, e.at);
    switch (e.kind) {
      case Event::kGlobalArrives: on_global(e); break;
      case Event::kTrainDone: on_train_done(e); break;
      case Event::kUploadArrives: on_upload(e); break;
      case Event::kAggregated: on_aggregated(); break;
    }
  }
  if (dropped_stale_ > 0)
    ctx_.progress("level " + std::to_string(level_) + " fedbuff: dropped " + std::to_string(dropped_stale_) +
                  " update(s) staler than max_staleness " + std::to_string(s_.training.max_staleness));
  out_.rounds_completed = static_cast<int>(version_);
  out_.sim_time_s = now_;
  return std::move(out_);
}

}  // namespace

FederatedOutcome run_fedbuff(Context& ctx, int level) { return FedBuffSim(ctx, level).run(); }

}  // namespace fedge::sims::detail
