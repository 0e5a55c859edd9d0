// Levels 4 and 5: the real coordinator core (federation/coordinator_core.h via coordinator/federation.h, with
// SecAgg+ when the scenario asks) against blocks of virtual nodes
// (node_block.cpp), under the virtual clock in lock-step windows; see
// federation_sim.h. Every message is encoded with the protocol codec, its byte
// count sets its transfer time over the level's network profile, and the
// receiver decodes it, as over a socket.
#include <algorithm>
#include <chrono>
#include <cmath>

#include <spdlog/spdlog.h>

#include "federation_sim.h"
#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/protocol/codec.h"
#include "fedge/protocol/layout.h"

namespace fedge::sims::detail {

std::int64_t to_ms(double seconds) { return static_cast<std::int64_t>(std::ceil(seconds * 1000.0)); }

const NetworkProfile& level_network(const Scenario& s, int level) {
  return level == 5 ? s.edge_network : s.node_network;
}

std::int64_t lookahead_ms(const NetworkProfile& net) { return std::max<std::int64_t>(1, to_ms(net.latency_s)); }

std::int64_t arrival_ms(const NetworkProfile& net, std::int64_t now, std::int64_t& link_free, std::uint64_t bytes,
                        bool upload) {
  double wire_s = transfer_seconds(net, bytes, upload) - net.latency_s;
  link_free = std::max(link_free, now) + to_ms(wire_s);
  return std::max(link_free + to_ms(net.latency_s), now + lookahead_ms(net));
}

privacy::Key32 key_from(std::uint64_t seed, const std::string& label) {
  privacy::Key32 k{};
  for (int i = 0; i < 4; ++i) {
    std::uint64_t v = derive_seed(seed, label + "/" + std::to_string(i));
    for (int b = 0; b < 8; ++b) k[i * 8 + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
  return k;
}

std::pair<int, int> block_range(int nodes, int blocks, int i) {
  auto edge = [&](int k) { return static_cast<int>(static_cast<std::int64_t>(nodes) * k / blocks); };
  return {edge(i), edge(i + 1)};
}

std::string LocalHost::name() const {
  return "in-process block [" + std::to_string(first_) + ", " + std::to_string(end_) + ")";
}

void LocalHost::send_start(int level) {
  block_ = std::make_unique<NodeBlock>(ctx_, level, first_, end_);
  pending_ = [this] { return block_->start(); };
}

void LocalHost::send_window(WindowOrder order) {
  pending_ = [this, order = std::move(order)] { return block_->window(order); };
}

WindowReport LocalHost::collect() {
  if (!pending_) throw Error(ErrorKind::kRuntime, name() + ": collect() without work handed over");
  auto work = std::move(pending_);
  pending_ = nullptr;
  return work();
}

namespace {

constexpr std::int64_t kRegistrationWindowMs = 2000;  // nodes register before the first round

// The coordinator core with its own event queue and the downlinks to the nodes.
class CoordinatorSide {
 public:
  CoordinatorSide(Context& ctx, int level);

  void receive(std::vector<Delivery> messages);
  std::optional<std::int64_t> next_event() const {
    return queue_.empty() ? std::nullopt : std::optional<std::int64_t>(queue_.top().at);
  }
  struct WindowOutput {
    std::vector<Delivery> to_nodes;
    std::vector<RoundDone> completed;
  };
  WindowOutput run_until(std::int64_t until);
  bool finished() const { return finished_; }
  FederatedOutcome& outcome() { return out_; }
  std::int64_t now() const { return now_; }

 private:
  coordinator::FederationConfig make_config() const;
  void apply(const coordinator::CoordinatorActions& a, WindowOutput& out);
  void schedule_tick();
  template <class F>
  auto timed(F&& f) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    out_.server_compute_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  Context& ctx_;
  const Scenario& s_;
  int level_;
  const NetworkProfile& net_;
  std::unique_ptr<coordinator::CoordinatorCore> core_;
  std::vector<std::int64_t> down_free_;  // per node: when its downlink is free
  EventQueue queue_;
  std::uint64_t seq_ = 0;
  std::int64_t now_ = 0;
  std::int64_t tick_at_ = -1;
  bool finished_ = false;
  FederatedOutcome out_;
};

CoordinatorSide::CoordinatorSide(Context& ctx, int level)
    : ctx_(ctx), s_(ctx.scenario()), level_(level), net_(level_network(s_, level)),
      down_free_(static_cast<std::size_t>(ctx.num_nodes()), 0) {
  coordinator::ResumeState resume;
  // The adapter, or under FlexLoRA its dense products (Context::federated_layout).
  resume.global = ctx_.initial_federated();
  resume.layout = protocol::to_wire_layout(ctx_.federated_layout());
  core_ = std::make_unique<coordinator::CoordinatorCore>(make_config(), std::move(resume));
  out_.individual_updates_seen = !s_.secagg.enabled;
  schedule_tick();
}

coordinator::FederationConfig CoordinatorSide::make_config() const {
  coordinator::FederationConfig c;
  c.rounds = static_cast<std::uint64_t>(s_.training.rounds);
  c.secure = s_.secagg.enabled;
  c.min_nodes = static_cast<std::uint32_t>(std::max(s_.training.min_nodes, c.secure ? 3 : 1));
  c.fraction = s_.training.fraction;
  c.send_global_to_all = s_.training.send_global_to_all;
  // Deadlines in simulated time: training on the slowest device with room to spare.
  double slowest = 1e300;
  for (const auto& d : s_.node_devices) slowest = std::min(slowest, d.flops);
  double tokens = static_cast<double>(s_.training.local_steps) * s_.training.batch_size * s_.model.seq_len;
  double model_s = transfer_seconds(net_, ctx_.federated_floats() * 4 + 4096, false);
  auto train_ms = to_ms(3.0 * (train_flops(ctx_.base_parameters(), 1) * tokens / slowest + model_s) + 30.0);
  auto stage_ms = to_ms(3.0 * transfer_seconds(net_, ctx_.federated_floats() * 4 + 4096, true) + 30.0);
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
  c.strategy_params = s_.training.strategy_params;
  // SCAFFOLD moves c by |S| / N: N is every node of the scenario.
  if (s_.training.scaffold()) c.strategy_params["num_nodes"] = s_.nodes;
  c.weight_caps = {static_cast<std::uint64_t>(s_.training.max_examples), s_.training.max_weight_share};
  // HetLoRA: the coordinator reads plain nodes' ranks by their device profile,
  // as public as the scenario (FlexLoRA's dense products need nothing).
  if (ctx_.rank_aggregation() == node::RankAggregation::kHetLora) {
    c.rank_aggregation = node::RankAggregation::kHetLora;
    for (const auto& d : s_.node_devices) c.profile_ranks[d.name] = static_cast<std::uint32_t>(device_rank(s_, d));
  }
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

void CoordinatorSide::schedule_tick() {
  auto t = core_->next_deadline_ms();
  if (!t) return;
  std::int64_t at = std::max({*t, now_, kRegistrationWindowMs});
  if (at == tick_at_) return;
  tick_at_ = at;
  SimEvent e;
  e.at = at;
  e.origin = SimEvent::kTickOrigin;
  e.seq = seq_++;
  e.kind = SimEvent::kTick;
  queue_.push(std::move(e));
}

void CoordinatorSide::receive(std::vector<Delivery> messages) {
  for (auto& d : messages) {
    if (d.node >= down_free_.size()) {
      throw Error(ErrorKind::kProtocol, "a node host sent a message from node " + std::to_string(d.node) +
                                            ", but the scenario has " + std::to_string(down_free_.size()) + " nodes");
    }
    if (ctx_.wire_tap) ctx_.wire_tap(level_, true, d);
    SimEvent e;
    e.at = d.at_ms;
    e.origin = d.node;
    e.seq = d.seq;
    e.kind = SimEvent::kMessage;
    e.node = static_cast<int>(d.node);
    e.bytes = std::move(d.envelope);
    queue_.push(std::move(e));
  }
}

CoordinatorSide::WindowOutput CoordinatorSide::run_until(std::int64_t until) {
  WindowOutput out;
  const protocol::Limits limits;
  while (!finished_ && !queue_.empty() && queue_.top().at < until) {
    SimEvent e = queue_.top();
    queue_.pop();
    now_ = std::max(now_, e.at);
    if (e.kind == SimEvent::kMessage) {
      protocol::Expectations expect;  // the caps a real coordinator applies
      expect.size_caps = coordinator::coordinator_size_caps(core_->current_plan(), core_->global().size(), limits);
      auto env = protocol::decode(e.bytes, limits, expect);
      apply(timed([&] { return core_->on_message(now_, env); }), out);
    } else if (tick_at_ == e.at) {  // else superseded
      tick_at_ = -1;
      apply(timed([&] { return core_->on_tick(now_); }), out);
    }
    const int max_attempts = 5 * s_.training.rounds + 5;
    if (out_.rounds_failed > max_attempts) {
      throw Error(ErrorKind::kRuntime, "level " + std::to_string(level_) + ": " + std::to_string(out_.rounds_failed) +
                                           " failed round attempts; lower the dropout or the secagg threshold");
    }
  }
  return out;
}

void CoordinatorSide::apply(const coordinator::CoordinatorActions& a, WindowOutput& out) {
  for (const auto& o : a.send) {
    int n = static_cast<int>(o.to) - 1;
    if (n < 0 || n >= ctx_.num_nodes()) continue;
    Delivery d;
    d.envelope = protocol::encode(o.envelope);
    d.at_ms = arrival_ms(net_, now_, down_free_[static_cast<std::size_t>(n)], d.envelope.size(), false);
    d.node = static_cast<std::uint32_t>(n);
    d.seq = seq_++;
    if (ctx_.wire_tap) ctx_.wire_tap(level_, false, d);
    out.to_nodes.push_back(std::move(d));
  }
  for (const auto& ev : a.events) {
    if (const auto* done = std::get_if<coordinator::RoundCompleted>(&ev)) {
      ++out_.rounds_completed;
      RoundDone r;
      r.round = static_cast<std::uint32_t>(out_.rounds_completed);
      r.at_ms = now_;
      for (auto id : done->survivors) r.survivors.push_back(id - 1);
      r.global = done->global;
      r.last = out_.rounds_completed == s_.training.rounds;
      r.evaluate = r.last || s_.training.eval_every_round;
      if (done->dp) out_.epsilon = done->dp->epsilon;
      out.completed.push_back(std::move(r));
    } else if (const auto* failed = std::get_if<coordinator::RoundFailed>(&ev)) {
      ++out_.rounds_failed;
      ctx_.progress("level " + std::to_string(level_) + ": round " + std::to_string(failed->round) + " attempt " +
                    std::to_string(failed->attempt) + " failed: " + failed->reason);
    } else if (std::holds_alternative<coordinator::FederationFinished>(ev)) {
      finished_ = true;
    } else if (const auto* refused = std::get_if<coordinator::MessageRefused>(&ev)) {
      spdlog::debug("level {}: refused {} from node {} (round {}): {}", level_, refused->message, refused->node,
                    refused->round, refused->why);
    }
  }
  schedule_tick();
}

std::optional<std::int64_t> earliest(std::optional<std::int64_t> a, std::optional<std::int64_t> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

std::size_t host_of(const std::vector<HostLink*>& hosts, std::uint32_t node) {
  for (std::size_t h = 0; h < hosts.size(); ++h) {
    if (static_cast<int>(node) >= hosts[h]->first_node() && static_cast<int>(node) < hosts[h]->end_node()) return h;
  }
  throw Error(ErrorKind::kRuntime, "no node host runs node " + std::to_string(node));
}

// Orders rows by (round, node) and reports each completed round's mean.
void add_rows(Context& ctx, int level, std::vector<MetricsRow>& all, std::vector<MetricsRow> rows,
              const std::vector<RoundDone>& done) {
  all.insert(all.end(), rows.begin(), rows.end());
  const Scenario& s = ctx.scenario();
  for (const auto& d : done) {
    double sum = 0;
    int n = 0;
    for (const auto& r : all) {
      if (r.round == static_cast<int>(d.round) && !std::isnan(r.perplexity)) sum += r.perplexity, ++n;
    }
    ctx.progress("level " + std::to_string(level) + " round " + std::to_string(d.round) + "/" +
                 std::to_string(s.training.rounds) + ": " + std::to_string(d.survivors.size()) + " updates in the " +
                 (s.secagg.enabled ? "secure sum" : "sum") +
                 (d.evaluate ? ", mean held-out perplexity " + std::to_string(sum / std::max(1, n)) : std::string()) +
                 ", simulated t=" + std::to_string(d.at_ms / 1000) + " s");
  }
}

}  // namespace

FederatedOutcome run_federated(Context& ctx, int level, const std::vector<HostLink*>& hosts) {
  ctx.node_state = {};
  CoordinatorSide coord(ctx, level);
  const std::int64_t window = lookahead_ms(level_network(ctx.scenario(), level));
  std::vector<std::optional<std::int64_t>> host_next(hosts.size());
  std::vector<std::vector<Delivery>> to_host(hosts.size());
  std::vector<MetricsRow> rows;
  std::vector<RoundDone> done;  // completed in the last window, reported in the next

  auto collect_all = [&] {
    for (std::size_t h = 0; h < hosts.size(); ++h) {
      auto report = hosts[h]->collect();
      coord.receive(std::move(report.messages));
      host_next[h] = report.next_event_ms;
      add_rows(ctx, level, rows, std::move(report.rows), {});
    }
  };
  for (auto* host : hosts) host->send_start(level);
  collect_all();
  while (!coord.finished()) {
    std::optional<std::int64_t> next = coord.next_event();
    for (std::size_t h = 0; h < hosts.size(); ++h) {
      next = earliest(next, host_next[h]);
      for (const auto& d : to_host[h]) next = earliest(next, d.at_ms);
    }
    if (!next) {
      throw Error(ErrorKind::kRuntime, "level " + std::to_string(level) + ": the federation stalled after " +
                                           std::to_string(coord.outcome().rounds_completed) +
                                           " round(s) (no event left)");
    }
    const std::int64_t until = *next + window;
    for (std::size_t h = 0; h < hosts.size(); ++h) {
      WindowOrder order;
      order.level = level;
      order.until_ms = until;
      order.deliveries = std::move(to_host[h]);
      order.completed = done;
      to_host[h].clear();
      hosts[h]->send_window(std::move(order));
    }
    auto out = coord.run_until(until);  // the remote blocks work meanwhile
    for (auto& d : out.to_nodes) to_host[host_of(hosts, d.node)].push_back(std::move(d));
    collect_all();
    add_rows(ctx, level, rows, {}, done);
    done = std::move(out.completed);
  }
  // The level's last window: rows of the rounds it completed, nothing processed.
  // Its messages (the final global) still count as the nodes' downloads.
  for (std::size_t h = 0; h < hosts.size(); ++h) {
    WindowOrder order;
    order.level = level;
    order.deliveries = std::move(to_host[h]);
    order.completed = done;
    order.finish = true;
    hosts[h]->send_window(std::move(order));
  }
  collect_all();
  add_rows(ctx, level, rows, {}, done);

  auto& out = coord.outcome();
  std::stable_sort(rows.begin(), rows.end(), [](const MetricsRow& a, const MetricsRow& b) {
    return a.round != b.round ? a.round < b.round : a.node < b.node;
  });
  out.rows = std::move(rows);
  out.sim_time_s = static_cast<double>(coord.now()) / 1000.0;
  return std::move(out);
}

std::vector<MetricsRow> run_local_only(const std::vector<HostLink*>& hosts) {
  for (auto* host : hosts) host->send_start(6);
  std::vector<MetricsRow> rows;
  for (auto* host : hosts) {
    auto report = host->collect();
    rows.insert(rows.end(), report.rows.begin(), report.rows.end());
  }
  std::stable_sort(rows.begin(), rows.end(), [](const MetricsRow& a, const MetricsRow& b) { return a.node < b.node; });
  return rows;
}

}  // namespace fedge::sims::detail
