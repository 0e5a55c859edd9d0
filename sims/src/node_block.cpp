// The node side of levels 4-6: a block of virtual nodes, each a real
// RoundClient, sharing the one base model; see federation_sim.h.
#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "federation_sim.h"
#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/common/rng.h"
#include "fedge/protocol/codec.h"

namespace fedge::sims::detail {

struct NodeBlock::VirtualNode {
  std::unique_ptr<node::RoundClient> client;
  std::shared_ptr<const std::vector<float>> global;  // installed global (shared between nodes)
  std::uint64_t bytes_up = 0, bytes_down = 0;
  double compute_s = 0;
  std::int64_t scheduled_tick = -1;
  std::int64_t up_free = 0;    // when the uplink has sent what is queued on it
  std::uint64_t events = 0;    // sequence of the node's own events and messages
  std::uint64_t plans = 0;     // round plans received (keys the dropout draw)
  // Dropout of the current round: how many round messages still get through (-1: all).
  std::uint64_t round = 0;
  int deliver_left = -1;
  std::uint64_t pending_ticket = 0;
  ParamVector personal;  // "ditto": the node's own adapter, kept across rounds (empty until its first round)
  // "shared-a": the node's own B matrices, which never leave it (empty until
  // its first local round: the initial adapter's B), and the B of the local
  // round in progress, kept once that round's training completes (B is the
  // node's alone: nothing the server holds depends on it, unlike `control`).
  std::vector<float> own_b, training_b;
  // SCAFFOLD: the node's control variate c_i (empty: zero, until a round of
  // its counted), and the one its last training made, kept only once its
  // update is in a completed round's sum (keep_controls): the server's c is
  // the mean of the c_i it summed, so a node whose update was lost keeps its
  // old one (unlike `training_b`, kept whatever the round's fate).
  std::vector<float> control, pending_control;
};

NodeBlock::NodeBlock(Context& ctx, int level, int first, int end)
    : ctx_(ctx), s_(ctx.scenario()), level_(level), first_(first), end_(end), net_(level_network(s_, level)) {
  if (first < 0 || end > ctx.num_nodes() || first > end) {
    throw Error(ErrorKind::kInvalidInput, "node block [" + std::to_string(first) + ", " + std::to_string(end) +
                                              ") is outside the scenario's " + std::to_string(ctx.num_nodes()) + " nodes");
  }
  nodes_.resize(static_cast<std::size_t>(end - first));
}

NodeBlock::~NodeBlock() = default;

NodeBlock::VirtualNode& NodeBlock::at(int n) { return nodes_[static_cast<std::size_t>(n - first_)]; }

void NodeBlock::push(SimEvent e) { queue_.push(std::move(e)); }

WindowReport NodeBlock::start() {
  WindowReport report;
  report.level = level_;
  if (level_ == 6) {
    report.rows = local_only_rows();
    return report;
  }
  for (int n = first_; n < end_; ++n) {
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
    at(n).client = std::make_unique<node::RoundClient>(std::move(id), cfg);
    apply(n, at(n).client->start(0), report);
  }
  if (!queue_.empty()) report.next_event_ms = queue_.top().at;
  return report;
}

WindowReport NodeBlock::window(const WindowOrder& order) {
  WindowReport report;
  report.level = level_;
  for (const auto& d : order.deliveries) {
    int n = static_cast<int>(d.node);
    if (n < first_ || n >= end_) {
      throw Error(ErrorKind::kProtocol, "a message for node " + std::to_string(n) + " reached the block [" +
                                            std::to_string(first_) + ", " + std::to_string(end_) + ")");
    }
    at(n).bytes_down += d.envelope.size();
    SimEvent e;
    e.at = d.at_ms;
    e.origin = -1;
    e.seq = d.seq;
    e.kind = SimEvent::kMessage;
    e.node = n;
    e.bytes = d.envelope;
    push(std::move(e));
  }
  // Rows of a round completed in the previous window: the nodes' counters as
  // of that window's end, the same however the nodes are split over blocks.
  for (const auto& done : order.completed) {
    if (ctx_.scaffold()) keep_controls(done);
    auto rows = rows_for(done);
    report.rows.insert(report.rows.end(), rows.begin(), rows.end());
  }
  if (order.finish) {
    release_nodes();
    return report;
  }
  const protocol::Limits limits;
  while (!queue_.empty() && queue_.top().at < order.until_ms) {
    SimEvent e = queue_.top();
    queue_.pop();
    now_ = std::max(now_, e.at);
    auto& vn = at(e.node);
    switch (e.kind) {
      case SimEvent::kMessage: {
        protocol::Expectations expect;  // the caps a real node applies
        expect.size_caps = node::node_size_caps(vn.client->current_plan(), ctx_.federated_floats(), limits);
        auto env = protocol::decode(e.bytes, limits, expect);
        on_message(e.node, env);
        apply(e.node, vn.client->on_message(now_, env), report);
        break;
      }
      case SimEvent::kTick:
        if (vn.scheduled_tick != e.at) break;  // superseded by a later schedule
        vn.scheduled_tick = -1;
        apply(e.node, vn.client->on_tick(now_), report);
        break;
      case SimEvent::kTrainDone:
        if (vn.pending_ticket != e.update->ticket) break;  // cancelled meanwhile
        vn.pending_ticket = 0;
        if (!vn.training_b.empty()) vn.own_b = std::move(vn.training_b);
        vn.training_b.clear();
        apply(e.node, vn.client->on_update_ready(now_, std::move(*e.update)), report);
        break;
    }
  }
  std::erase_if(versions_, [](const auto& v) { return v.second.use_count() == 1; });
  if (!queue_.empty()) report.next_event_ms = queue_.top().at;
  return report;
}

void NodeBlock::release_nodes() {
  NodeStateStats stats;
  stats.nodes = nodes_.size();
  stats.models_installed = models_installed_;
  for (const auto& vn : nodes_) stats.nodes_with_model += vn.global != nullptr;
  for (int n = first_; n < end_; ++n) stats.data_bytes += node_data_bytes(ctx_.node(n));
  // The global versions the nodes still point to (shared between them), then
  // the nodes' own state: what freeing each gives back to the heap.
  versions_.clear();
  std::size_t before = heap_in_use_bytes();
  for (auto& vn : nodes_) vn.global.reset();
  std::size_t after = heap_in_use_bytes();
  stats.version_bytes = before > after ? before - after : 0;
  before = after;
  std::vector<VirtualNode>().swap(nodes_);
  EventQueue().swap(queue_);
  after = heap_in_use_bytes();
  stats.state_bytes = before > after ? before - after : 0;
  auto& total = ctx_.node_state;
  total.nodes += stats.nodes;
  total.state_bytes += stats.state_bytes;
  total.version_bytes += stats.version_bytes;
  total.data_bytes += stats.data_bytes;
  total.models_installed += stats.models_installed;
  total.nodes_with_model += stats.nodes_with_model;
  const auto per_node = [&](std::uint64_t bytes) { return std::to_string(bytes / std::max<std::uint64_t>(1, stats.nodes)); };
  ctx_.progress("level " + std::to_string(level_) + ", nodes " + std::to_string(first_) + ".." +
                std::to_string(end_ - 1) + ": " + per_node(stats.state_bytes) + " bytes of state and " +
                per_node(stats.data_bytes) + " bytes of data per node at the end, and " +
                std::to_string(stats.version_bytes) + " bytes of global versions shared by them; " +
                std::to_string(stats.nodes_with_model) + " of " + std::to_string(stats.nodes) +
                " nodes ever held a global model (" + std::to_string(stats.models_installed) + " installs)");
}

// A round plan decides whether the node drops out of that round, and when: the
// draw is keyed by (node, plans received), so it is the same in every block
// layout and under levels 4 and 5.
void NodeBlock::on_message(int n, const protocol::Envelope& env) {
  if (!std::holds_alternative<protocol::RoundPlan>(env.body)) return;
  auto& vn = at(n);
  vn.round = env.round;
  vn.deliver_left = -1;
  Rng rng(s_.seed, "dropout/" + std::to_string(n) + "/" + std::to_string(vn.plans++));
  if (net_.dropout > 0 && rng.uniform() < net_.dropout) vn.deliver_left = static_cast<int>(rng.below(3));
}

void NodeBlock::schedule_tick(int n) {
  auto& vn = at(n);
  auto t = vn.client->next_tick_ms();
  if (!t || *t == vn.scheduled_tick) return;
  vn.scheduled_tick = std::max(*t, now_);
  SimEvent e;
  e.at = vn.scheduled_tick;
  e.origin = n;
  e.seq = vn.events++;
  e.kind = SimEvent::kTick;
  e.node = n;
  push(std::move(e));
}

void NodeBlock::send(int n, const protocol::Envelope& env, WindowReport& report) {
  auto& vn = at(n);
  bool round_message = env.round != 0 && !std::holds_alternative<protocol::Heartbeat>(env.body) &&
                       !std::holds_alternative<protocol::Metrics>(env.body);
  if (round_message && env.round == vn.round && vn.deliver_left >= 0) {
    if (vn.deliver_left == 0) return;  // dropped out of this round: the message never leaves
    --vn.deliver_left;
  }
  Delivery d;
  d.envelope = protocol::encode(env);
  vn.bytes_up += d.envelope.size();
  d.at_ms = arrival_ms(net_, now_, vn.up_free, d.envelope.size(), true);
  d.node = static_cast<std::uint32_t>(n);
  d.seq = vn.events++;
  report.messages.push_back(std::move(d));
}

void NodeBlock::train(int n, const node::TrainCommand& cmd) {
  auto& vn = at(n);
  const auto& node = ctx_.node(n);
  if (vn.deliver_left == 0 && cmd.round == vn.round) return;  // gone before training: nothing will arrive
  // The node's own adapter from the global (itself, unless ranks differ or
  // the node keeps its own B).
  const ParamVector start = ctx_.node_adapter(n, *vn.global, vn.own_b);
  auto request = node::local_train_request(cmd);  // as the node runtime passes the plan
  request.seed = derive_seed(s_.seed, "fed/" + std::to_string(n) + "/" + std::to_string(cmd.round));
  std::optional<ParamVector> offset;  // SCAFFOLD: every gradient corrected by c - c_i
  if (ctx_.scaffold()) offset = ctx_.scaffold_offset(*vn.global, vn.control);
  auto outcome = ctx_.train_round(n, start, request, offset ? &*offset : nullptr);
  double seconds = compute_seconds(node.device, train_flops(ctx_.base_parameters(), outcome.tokens));
  vn.compute_s += seconds;
  auto update = std::make_shared<node::LocalUpdate>();
  update->ticket = cmd.ticket;
  update->num_examples = outcome.num_examples;
  update->train_loss = outcome.train_loss;
  if (ctx_.shares_a_only()) {
    // Only the update's A goes into the round; the B stays here.
    auto step = ctx_.shared_a_step(start, outcome.update);
    update->update = std::move(step.a_update);
    vn.training_b = std::move(step.b);
  } else {
    update->update = ctx_.node_update(n, start, std::move(outcome.update), *vn.global);
  }
  if (ctx_.scaffold()) {  // [y_i - x ; c_i+ - c_i], weighted and masked as one vector
    Context::append_control_delta(update->update, outcome.mean_gradient, vn.control);
    vn.pending_control = std::move(outcome.mean_gradient);
  }
  if (ctx_.rank_aggregation() == node::RankAggregation::kHetLora)
    update->lora_rank = static_cast<std::uint32_t>(ctx_.node_rank(n));
  vn.pending_ticket = cmd.ticket;
  SimEvent e;
  e.at = now_ + to_ms(seconds);
  e.origin = n;
  e.seq = vn.events++;
  e.kind = SimEvent::kTrainDone;
  e.node = n;
  e.update = std::move(update);
  push(std::move(e));
}

void NodeBlock::apply(int n, node::NodeActions a, WindowReport& report) {
  auto& vn = at(n);
  if (a.install) {
    ++models_installed_;
    auto& shared = versions_[a.install->version];
    if (!shared) shared = std::make_shared<const std::vector<float>>(std::move(a.install->params));
    vn.global = shared;
  }
  if (a.cancel_training) {
    vn.pending_ticket = 0;
    vn.training_b.clear();
  }
  for (const auto& env : a.send) send(n, env, report);
  if (a.train) train(n, *a.train);
  for (const auto& note : a.notes) spdlog::debug("sim node {}: {}", n + 1, note);
  schedule_tick(n);
}

// SCAFFOLD: a node takes its new control variate once the round that summed
// its update completes (the server's c moved by it); a node that dropped out
// keeps its old one, so c stays the mean of the nodes' c_i.
void NodeBlock::keep_controls(const RoundDone& done) {
  for (std::uint32_t id : done.survivors) {
    const int n = static_cast<int>(id);
    if (n < first_ || n >= end_ || at(n).pending_control.empty()) continue;
    at(n).control = std::move(at(n).pending_control);
    at(n).pending_control.clear();
  }
}

MetricsRow NodeBlock::row_for(int n, const RoundDone& done, const std::optional<Quality>& quality) const {
  const auto& vn = nodes_[static_cast<std::size_t>(n - first_)];
  MetricsRow r;
  r.level = level_;
  r.round = static_cast<int>(done.round);
  r.node = n;
  r.perplexity = quality ? quality->perplexity : std::nan("");
  if (quality) r.accuracy = quality->accuracy;
  r.participated = std::count(done.survivors.begin(), done.survivors.end(), static_cast<std::uint32_t>(n)) > 0;
  r.bytes_up = vn.bytes_up;
  r.bytes_down = vn.bytes_down;
  r.node_compute_s = vn.compute_s;
  r.node_energy_j = energy_joules(ctx_.node(n).device, r.node_compute_s);
  r.sim_time_s = static_cast<double>(done.at_ms) / 1000.0;
  return r;
}

std::vector<MetricsRow> NodeBlock::rows_for(const RoundDone& done) {
  std::vector<MetricsRow> rows;
  // With heterogeneous ranks each node is measured with the adapter it would
  // serve: its own rank's part of the global (Context::node_adapter). Under
  // shared-a there is no global B: "the global" is the aggregated A with the
  // initial adapter's B, what a node that never trained would hold; each
  // node's own B makes its personal adapter.
  const bool per_node = ctx_.heterogeneous();
  ParamVector global;
  if (!per_node) global = ctx_.global_adapter(done.global);
  std::optional<double> global_pooled;  // the same for every node of the round
  for (int n = first_; n < end_; ++n) {
    std::optional<Quality> q;
    if (done.evaluate && ctx_.evaluated(n)) {
      if (per_node)
        q = ctx_.evaluate(ctx_.node_adapter(n, done.global), ctx_.node(n), done.last);
      else
        q = ctx_.evaluate(global, ctx_.node(n), done.last);
    }
    std::optional<ParamVector> personal;
    if (s_.training.personalizes()) personal = personal_adapter(n, done, global);
    auto row = row_for(n, done, q);
    if (personal) {
      row.personal_perplexity = ctx_.evaluate(*personal, ctx_.node(n), false).perplexity;
      row.personal_pooled_perplexity = ctx_.pooled_perplexity(*personal);
      if (!global_pooled) global_pooled = ctx_.pooled_perplexity(global);
      row.global_pooled_perplexity = *global_pooled;
    }
    rows.push_back(row);
  }
  return rows;
}

// Personalization on top of the round's new global (the global itself is not
// touched): "ditto" trains the node's own adapter after every round it took
// part in, pulled towards the global by ditto_lambda/2 * ||v - w||^2;
// "finetune" takes personal_steps steps from the final global; "shared-a"
// joins the global A with the node's own B (no training of its own: the B
// trained in the rounds). Returns the personal adapter to measure on the
// level's last round (nothing otherwise, or for a node outside the evaluation
// sample); its training counts as node compute.
std::optional<ParamVector> NodeBlock::personal_adapter(int n, const RoundDone& done, const ParamVector& global) {
  auto& vn = at(n);
  if (ctx_.shares_a_only()) {
    if (!done.last || !ctx_.evaluated(n)) return std::nullopt;
    return ctx_.node_adapter(n, done.global, vn.own_b);
  }
  const auto& node = ctx_.node(n);
  const int steps = s_.training.personal_step_count();
  const bool measure = done.last && ctx_.evaluated(n);
  const std::string round = std::to_string(n) + "/" + std::to_string(done.round);
  auto account = [&](const TrainOutcome& out) {
    vn.compute_s += compute_seconds(node.device, train_flops(ctx_.base_parameters(), out.tokens));
  };
  if (s_.training.personalization == "ditto") {
    const bool took_part = std::count(done.survivors.begin(), done.survivors.end(), static_cast<std::uint32_t>(n)) > 0;
    if (took_part) {
      const ParamVector& start = vn.personal.size() == 0 ? ctx_.initial_adapter() : vn.personal;
      auto out = ctx_.train(start, node.train_set, steps, derive_seed(s_.seed, "ditto/" + round), "constant", &global,
                            s_.training.ditto_lambda);
      account(out);
      vn.personal = std::move(out.params);
    }
    if (!measure) return std::nullopt;
    return vn.personal.size() == 0 ? ctx_.initial_adapter() : vn.personal;
  }
  if (!measure) return std::nullopt;  // "finetune": only the final global is fine-tuned
  auto out = ctx_.train(global, node.train_set, steps, derive_seed(s_.seed, "finetune/" + round), "constant");
  account(out);
  return std::move(out.params);
}

std::vector<MetricsRow> NodeBlock::local_only_rows() {
  std::vector<MetricsRow> rows;
  for (int n = first_; n < end_; ++n) {
    const auto& node = ctx_.node(n);
    // Alone at its own rank (the initial adapter's first r_n components).
    const ParamVector start =
        ctx_.heterogeneous() ? ctx_.node_adapter(n, ctx_.initial_federated()) : ctx_.initial_adapter();
    auto out = ctx_.train(start, node.train_set, s_.training.local_only_steps,
                          derive_seed(s_.seed, "local/" + std::to_string(n)), "cosine");
    auto q = ctx_.evaluated(n) ? ctx_.evaluate(out.params, node, true) : Quality{std::nan(""), {}};
    MetricsRow r;
    r.level = 6;
    r.round = s_.training.rounds;
    r.node = n;
    r.perplexity = q.perplexity;
    r.accuracy = q.accuracy;
    r.node_compute_s = compute_seconds(node.device, train_flops(ctx_.base_parameters(), out.tokens));
    r.sim_time_s = r.node_compute_s;
    rows.push_back(r);
    ctx_.progress("level 6: node " + std::to_string(n) + " trained alone, perplexity " + std::to_string(q.perplexity));
  }
  return rows;
}

}  // namespace fedge::sims::detail
