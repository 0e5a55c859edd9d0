// Levels 4 and 5: the real federation cores (coordinator/federation.h and
// node/round_client.h, with SecAgg+ when the scenario asks) driven by a
// discrete-event loop under the virtual clock. Every message is encoded with
// the protocol codec, its byte count sets its transfer time over the level's
// network profile, and the receiver decodes it, as over a socket. Virtual
// nodes share the one model; each holds only the global version it installed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <queue>

#include <spdlog/spdlog.h>

#include "context.h"
#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/coordinator/federation.h"
#include "fedge/node/round_client.h"
#include "fedge/protocol/codec.h"

namespace fedge::sims::detail {
namespace {

using protocol::Envelope;

constexpr std::int64_t kRegistrationWindowMs = 2000;  // nodes register before the first round

privacy::Key32 key_from(std::uint64_t seed, const std::string& label) {
  privacy::Key32 k{};
  for (int i = 0; i < 4; ++i) {
    std::uint64_t v = derive_seed(seed, label + "/" + std::to_string(i));
    for (int b = 0; b < 8; ++b) k[i * 8 + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
  return k;
}

std::int64_t to_ms(double seconds) { return static_cast<std::int64_t>(std::ceil(seconds * 1000.0)); }

struct Event {
  std::int64_t at = 0;
  std::uint64_t seq = 0;  // ties broken by creation order: deterministic
  enum Kind { kToCoordinator, kToNode, kNodeTick, kCoordinatorTick, kTrainDone } kind = kToNode;
  int node = 0;           // index 0..n-1
  protocol::Bytes bytes;
  std::shared_ptr<node::LocalUpdate> update;
  bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

struct VirtualNode {
  std::unique_ptr<node::RoundClient> client;
  std::uint64_t version = 0;
  std::shared_ptr<const std::vector<float>> global;  // installed global (shared between nodes)
  std::uint64_t bytes_up = 0, bytes_down = 0;
  double compute_s = 0;
  std::int64_t scheduled_tick = -1;
  // When the node's uplink / downlink finishes sending what is queued on it:
  // messages on one link go out in order, one after the other, as over one socket.
  std::int64_t up_free = 0, down_free = 0;
  // Dropout of the current round: how many round messages still get through (-1: all).
  std::uint64_t round = 0;
  int deliver_left = -1;
  std::uint64_t pending_ticket = 0;
};

class Driver {
 public:
  Driver(Context& ctx, int level) : ctx_(ctx), s_(ctx.scenario()), level_(level),
        net_(level == 4 ? s_.node_network : s_.edge_network), rng_(s_.seed, "federated/" + std::to_string(level)) {}

  FederatedOutcome run();

 private:
  void push(Event e) {
    e.seq = seq_++;
    queue_.push(std::move(e));
  }
  coordinator::FederationConfig make_config() const;
  void start_nodes();
  void apply(const coordinator::CoordinatorActions& a);
  void apply(int n, node::NodeActions a);
  void schedule_node_tick(int n);
  void schedule_coordinator_tick();
  void send_to_coordinator(int n, const Envelope& env);
  std::int64_t arrival(std::int64_t& link_free, std::uint64_t bytes, bool upload) const;
  void train(int n, const node::TrainCommand& cmd);
  void on_round_completed(const coordinator::RoundCompleted& done);
  template <class F>
  auto timed(F&& f) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    server_wall_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  Context& ctx_;
  const Scenario& s_;
  int level_;
  NetworkProfile net_;
  Rng rng_;
  std::unique_ptr<coordinator::CoordinatorCore> core_;
  std::vector<VirtualNode> nodes_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  std::uint64_t seq_ = 0;
  std::int64_t now_ = 0;
  std::int64_t coordinator_tick_ = -1;
  std::map<std::uint64_t, std::shared_ptr<const std::vector<float>>> versions_;
  double server_wall_s_ = 0;
  FederatedOutcome out_;
  bool finished_ = false;
};

coordinator::FederationConfig Driver::make_config() const {
  coordinator::FederationConfig c;
  c.rounds = static_cast<std::uint64_t>(s_.training.rounds);
  c.secure = s_.secagg.enabled;
  c.min_nodes = static_cast<std::uint32_t>(std::max(s_.training.min_nodes, c.secure ? 3 : 1));
  c.fraction = s_.training.fraction;
  // Deadlines in simulated time: training on the slowest device with room to spare.
  double slowest = 1e300;
  for (const auto& d : s_.node_devices) slowest = std::min(slowest, d.flops);
  double tokens = static_cast<double>(s_.training.local_steps) * s_.training.batch_size * s_.model.seq_len;
  double model_s = transfer_seconds(net_, ctx_.adapter_floats() * 4 + 4096, false);
  auto train_ms = to_ms(3.0 * (train_flops(ctx_.base_parameters(), 1) * tokens / slowest + model_s) + 30.0);
  auto stage_ms = to_ms(3.0 * transfer_seconds(net_, ctx_.adapter_floats() * 4 + 4096, true) + 30.0);
  c.deadlines = {static_cast<std::uint32_t>(train_ms), static_cast<std::uint32_t>(stage_ms),
                 static_cast<std::uint32_t>(stage_ms), static_cast<std::uint32_t>(stage_ms),
                 static_cast<std::uint32_t>(stage_ms)};
  c.heartbeat_interval_ms = 60000;
  c.liveness_timeout_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(10 * 60000, 2 * train_ms));
  c.hyper = {static_cast<std::uint32_t>(s_.training.local_steps), static_cast<float>(s_.training.lr),
             static_cast<std::uint32_t>(s_.training.batch_size), static_cast<float>(s_.training.fedprox_mu)};
  c.expected_dropout = s_.secagg.dropout_rate;
  c.corrupt_fraction = s_.secagg.corrupt_fraction;
  c.failure_probability = s_.secagg.failure_probability;
  c.strategy = s_.training.strategy;
  if (s_.dp.enabled) {
    c.dp.mode = s_.dp.noise_multiplier > 0 ? protocol::DpMode::kCentral : protocol::DpMode::kNone;
    c.dp.clip_norm = s_.dp.clip_norm;
    c.dp.noise_multiplier = s_.dp.noise_multiplier;
    c.dp.delta = s_.dp.delta;
    c.clip_range = std::max(c.clip_range, s_.dp.clip_norm);
  }
  c.seed = derive_seed(s_.seed, "coordinator");
  c.secret_seed = key_from(s_.seed, "coordinator-secret/" + std::to_string(level_));
  c.retry_delay_ms = 1000;
  c.secagg_threads = 1;
  return c;
}

void Driver::schedule_node_tick(int n) {
  auto& vn = nodes_[n];
  auto t = vn.client->next_tick_ms();
  if (!t || *t == vn.scheduled_tick) return;
  vn.scheduled_tick = std::max(*t, now_);
  Event e;
  e.at = vn.scheduled_tick;
  e.kind = Event::kNodeTick;
  e.node = n;
  push(std::move(e));
}

void Driver::schedule_coordinator_tick() {
  auto t = core_->next_deadline_ms();
  if (!t) return;
  std::int64_t at = std::max({*t, now_, kRegistrationWindowMs});
  if (at == coordinator_tick_) return;
  coordinator_tick_ = at;
  Event e;
  e.at = at;
  e.kind = Event::kCoordinatorTick;
  push(std::move(e));
}

std::int64_t Driver::arrival(std::int64_t& link_free, std::uint64_t bytes, bool upload) const {
  double wire_s = transfer_seconds(net_, bytes, upload) - net_.latency_s;
  link_free = std::max(link_free, now_) + to_ms(wire_s);
  return link_free + to_ms(net_.latency_s);
}

void Driver::send_to_coordinator(int n, const Envelope& env) {
  auto& vn = nodes_[n];
  bool round_message = env.round != 0 && !std::holds_alternative<protocol::Heartbeat>(env.body) &&
                       !std::holds_alternative<protocol::Metrics>(env.body);
  if (round_message && env.round == vn.round && vn.deliver_left >= 0) {
    if (vn.deliver_left == 0) return;  // dropped out of this round: the message never leaves
    --vn.deliver_left;
  }
  auto bytes = protocol::encode(env);
  vn.bytes_up += bytes.size();
  Event e;
  e.at = arrival(vn.up_free, bytes.size(), true);
  e.kind = Event::kToCoordinator;
  e.node = n;
  e.bytes = std::move(bytes);
  push(std::move(e));
}

void Driver::apply(const coordinator::CoordinatorActions& a) {
  for (const auto& o : a.send) {
    int n = static_cast<int>(o.to) - 1;
    if (n < 0 || n >= static_cast<int>(nodes_.size())) continue;
    auto bytes = protocol::encode(o.envelope);
    nodes_[n].bytes_down += bytes.size();
    // A round plan decides whether this node drops out of the round, and when.
    if (const auto* plan = std::get_if<protocol::RoundPlan>(&o.envelope.body)) {
      auto& vn = nodes_[n];
      vn.round = o.envelope.round;
      vn.deliver_left = -1;
      if (net_.dropout > 0 && rng_.uniform() < net_.dropout) vn.deliver_left = static_cast<int>(rng_.below(3));
      (void)plan;
    }
    Event e;
    e.at = arrival(nodes_[n].down_free, bytes.size(), false);
    e.kind = Event::kToNode;
    e.node = n;
    e.bytes = std::move(bytes);
    push(std::move(e));
  }
  for (const auto& ev : a.events) {
    if (const auto* done = std::get_if<coordinator::RoundCompleted>(&ev)) {
      on_round_completed(*done);
    } else if (const auto* failed = std::get_if<coordinator::RoundFailed>(&ev)) {
      ++out_.rounds_failed;
      ctx_.progress("level " + std::to_string(level_) + ": round " + std::to_string(failed->round) + " attempt " +
                    std::to_string(failed->attempt) + " failed: " + failed->reason);
    } else if (std::holds_alternative<coordinator::FederationFinished>(ev)) {
      finished_ = true;
    }
  }
  schedule_coordinator_tick();
}

void Driver::train(int n, const node::TrainCommand& cmd) {
  auto& vn = nodes_[n];
  const auto& node = ctx_.node(n);
  if (vn.deliver_left == 0 && cmd.round == vn.round) return;  // gone before training: nothing will arrive
  ParamVector start(ctx_.initial_adapter().layout(), *vn.global);
  auto outcome = ctx_.train(start, node.train_set, static_cast<int>(cmd.hyper.local_steps),
                            derive_seed(s_.seed, "fed/" + std::to_string(n) + "/" + std::to_string(cmd.round)),
                            "constant", n);
  double seconds = compute_seconds(node.device, train_flops(ctx_.base_parameters(), outcome.tokens));
  vn.compute_s += seconds;
  auto update = std::make_shared<node::LocalUpdate>();
  update->ticket = cmd.ticket;
  update->num_examples = node.train_set.size();
  update->train_loss = outcome.loss;
  update->update.resize(vn.global->size());
  auto local = outcome.params.values();
  for (std::size_t i = 0; i < update->update.size(); ++i) update->update[i] = local[i] - (*vn.global)[i];
  vn.pending_ticket = cmd.ticket;
  Event e;
  e.at = now_ + to_ms(seconds);
  e.kind = Event::kTrainDone;
  e.node = n;
  e.update = std::move(update);
  push(std::move(e));
}

void Driver::apply(int n, node::NodeActions a) {
  auto& vn = nodes_[n];
  if (a.install) {
    auto& shared = versions_[a.install->version];
    if (!shared) shared = std::make_shared<const std::vector<float>>(std::move(a.install->params));
    vn.global = shared;
    vn.version = a.install->version;
  }
  if (a.cancel_training) vn.pending_ticket = 0;
  for (const auto& env : a.send) send_to_coordinator(n, env);
  if (a.train) train(n, *a.train);
  for (const auto& note : a.notes) spdlog::debug("sim node {}: {}", n + 1, note);
  schedule_node_tick(n);
}

void Driver::on_round_completed(const coordinator::RoundCompleted& done) {
  ++out_.rounds_completed;
  const int round = static_cast<int>(out_.rounds_completed);
  const bool last = round == s_.training.rounds;
  ParamVector global(ctx_.initial_adapter().layout(), done.global);
  const bool evaluate = last || s_.training.eval_every_round;
  double mean = 0;
  for (int n = 0; n < ctx_.num_nodes(); ++n) {
    auto q = evaluate ? ctx_.evaluate(global, ctx_.node(n), last) : Quality{std::nan(""), std::nullopt};
    MetricsRow r;
    r.level = level_;
    r.round = round;
    r.node = n;
    r.perplexity = q.perplexity;
    r.accuracy = q.accuracy;
    r.participated = std::count(done.survivors.begin(), done.survivors.end(), static_cast<protocol::NodeId>(n + 1)) > 0;
    r.bytes_up = nodes_[n].bytes_up;
    r.bytes_down = nodes_[n].bytes_down;
    r.node_compute_s = nodes_[n].compute_s;
    r.node_energy_j = energy_joules(ctx_.node(n).device, r.node_compute_s);
    r.sim_time_s = static_cast<double>(now_) / 1000.0;
    out_.rows.push_back(r);
    mean += q.perplexity / ctx_.num_nodes();
  }
  if (done.dp) out_.epsilon = done.dp->epsilon;
  out_.global = std::move(global);
  ctx_.progress("level " + std::to_string(level_) + " round " + std::to_string(round) + "/" +
                std::to_string(s_.training.rounds) + ": " + std::to_string(done.survivors.size()) +
                " updates in the " + (s_.secagg.enabled ? "secure sum" : "sum") +
                (evaluate ? ", mean held-out perplexity " + std::to_string(mean) : std::string()) + ", simulated t=" + std::to_string(now_ / 1000) + " s");
}

void Driver::start_nodes() {
  nodes_.resize(static_cast<std::size_t>(ctx_.num_nodes()));
  for (int n = 0; n < ctx_.num_nodes(); ++n) {
    node::NodeIdentity id;
    id.node_id = static_cast<protocol::NodeId>(n + 1);
    id.name = "sim-node-" + std::to_string(n + 1);
    id.public_key = key_from(s_.seed, "node-key/" + std::to_string(n));
    id.capabilities.device_profile = ctx_.node(n).device.name;
    id.capabilities.num_examples = ctx_.node(n).train_set.size();
    id.capabilities.model_name = s_.model.base;
    node::NodeClientConfig cfg;
    // The same per-node seed under levels 4 and 5: with the same dropouts the two
    // levels then round identically, and the training memo spares level 5's work.
    cfg.noise_seed = key_from(s_.seed, "node-noise/" + std::to_string(n));
    nodes_[n].client = std::make_unique<node::RoundClient>(std::move(id), cfg);
    apply(n, nodes_[n].client->start(0));
  }
}

FederatedOutcome Driver::run() {
  coordinator::ResumeState resume;
  const auto& init = ctx_.initial_adapter();
  resume.global.assign(init.values().begin(), init.values().end());
  for (const auto& e : init.layout().entries()) {
    protocol::TensorLayout t;
    t.name = e.name;
    for (auto d : e.shape) t.shape.push_back(static_cast<std::uint64_t>(d));
    resume.layout.push_back(std::move(t));
  }
  core_ = std::make_unique<coordinator::CoordinatorCore>(make_config(), std::move(resume));
  out_.individual_updates_seen = !s_.secagg.enabled;
  start_nodes();
  schedule_coordinator_tick();
  const int max_attempts = 5 * s_.training.rounds + 5;
  protocol::Limits limits;
  while (!finished_ && !queue_.empty()) {
    Event e = queue_.top();
    queue_.pop();
    now_ = std::max(now_, e.at);
    switch (e.kind) {
      case Event::kToCoordinator: {
        auto env = protocol::decode(e.bytes, limits);
        apply(timed([&] { return core_->on_message(now_, env); }));
        break;
      }
      case Event::kToNode: {
        auto env = protocol::decode(e.bytes, limits);
        apply(e.node, nodes_[e.node].client->on_message(now_, env));
        break;
      }
      case Event::kNodeTick:
        if (nodes_[e.node].scheduled_tick != e.at) break;  // superseded
        nodes_[e.node].scheduled_tick = -1;
        apply(e.node, nodes_[e.node].client->on_tick(now_));
        break;
      case Event::kCoordinatorTick:
        if (coordinator_tick_ != e.at) break;
        coordinator_tick_ = -1;
        apply(timed([&] { return core_->on_tick(now_); }));
        break;
      case Event::kTrainDone:
        if (nodes_[e.node].pending_ticket != e.update->ticket) break;  // cancelled meanwhile
        nodes_[e.node].pending_ticket = 0;
        apply(e.node, nodes_[e.node].client->on_update_ready(now_, std::move(*e.update)));
        break;
    }
    if (out_.rounds_failed > max_attempts) {
      throw Error(ErrorKind::kRuntime, "level " + std::to_string(level_) + ": " + std::to_string(out_.rounds_failed) +
                                           " failed round attempts; lower the dropout or the secagg threshold");
    }
  }
  if (!finished_) {
    throw Error(ErrorKind::kRuntime, "level " + std::to_string(level_) + ": the federation stalled after " +
                                         std::to_string(out_.rounds_completed) + " round(s) (no event left)");
  }
  out_.server_compute_s = server_wall_s_;
  out_.sim_time_s = static_cast<double>(now_) / 1000.0;
  return std::move(out_);
}

}  // namespace

FederatedOutcome run_federated(Context& ctx, int level) { return Driver(ctx, level).run(); }

}  // namespace fedge::sims::detail
