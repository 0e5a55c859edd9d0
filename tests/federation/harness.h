// An in-process federation: one CoordinatorCore and N RoundClients wired by a
// message queue that passes every envelope through encode()/decode(), driven
// by a fake clock. "Training" is a deterministic function of (node, round), so
// the tests know every update and can compute the expected global exactly.
#pragma once

#include <cmath>
#include <deque>
#include <random>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "fedge/federation/coordinator_core.h"
#include "fedge/federation/round_client.h"
#include "fedge/federation/size_caps.h"
#include "fedge/protocol/codec.h"

namespace fedge::testing {

using federation::CoordinatorCore;
using federation::FederationConfig;
using federation::ResumeState;
using federation::RoundClient;
using protocol::Envelope;
using protocol::NodeId;

inline constexpr std::size_t kDim = 1000;

inline protocol::Key32 node_key(NodeId id) {
  protocol::Key32 k{};
  k.fill(static_cast<std::uint8_t>(id));
  k[0] = 0xAB;
  return k;
}
inline privacy::Key32 fixed_seed(std::uint8_t b) {
  privacy::Key32 k{};
  k.fill(b);
  return k;
}

inline ResumeState initial_state(std::size_t dim = kDim) {
  ResumeState r;
  r.global.resize(dim);
  for (std::size_t j = 0; j < dim; ++j) r.global[j] = 0.1F * static_cast<float>(std::cos(0.01 * j));
  r.layout = {{"a.lora_A", {dim / 4, 2}}, {"a.lora_B", {dim / 2}}};
  return r;
}

inline FederationConfig base_config(bool secure) {
  FederationConfig c;
  c.rounds = 3;
  c.min_nodes = 3;
  c.secure = secure;
  c.heartbeat_interval_ms = 1000;
  c.liveness_timeout_ms = 5000;
  c.deadlines = {2000, 500, 500, 500, 500};
  c.clip_range = 0.5;
  // Five nodes cannot meet choose_secagg_params' 1e-6 failure target at 10%
  // dropout, so the tests fix the complete graph with threshold 3.
  c.secagg_degree = 4;
  c.secagg_threshold = 3;
  c.retry_delay_ms = 200;
  c.seed = 7;
  c.secret_seed = fixed_seed(3);
  return c;
}

struct Trained {
  std::vector<float> update;
  std::uint64_t examples = 0;
  double loss = 0;
};

class Net {
 public:
  // `ranks`: heterogeneous LoRA ranks (HetLoRA) by node; such a node
  // registers with device profile "rank-<r>" and reports its rank with each update.
  Net(FederationConfig config, ResumeState resume, int num_nodes = 5, std::map<NodeId, std::uint32_t> ranks = {})
      : coord(std::move(config), std::move(resume)), lora_ranks(std::move(ranks)) {
    for (int i = 1; i <= num_nodes; ++i) {
      federation::NodeIdentity id{static_cast<NodeId>(i), "node" + std::to_string(i), node_key(i), {}};
      id.capabilities.num_examples = examples_of(i);
      if (lora_ranks.count(i)) id.capabilities.device_profile = "rank-" + std::to_string(lora_ranks.at(i));
      federation::NodeClientConfig nc;
      nc.noise_seed = fixed_seed(static_cast<std::uint8_t>(40 + i));
      nodes.emplace(i, RoundClient(id, nc));
    }
  }

  static std::uint64_t examples_of(NodeId id) { return 100 * id; }
  // The deterministic "training" result of node `id` in `round`.
  static Trained train(NodeId id, std::uint64_t round, std::size_t dim) {
    Trained t;
    t.update.resize(dim);
    for (std::size_t j = 0; j < dim; ++j)
      t.update[j] = static_cast<float>(0.02 * std::sin(0.37 * id + 0.013 * j + 0.9 * round) + 0.003 * id);
    t.examples = examples_of(id);
    t.loss = 2.0 + 0.1 * id - 0.05 * round;
    return t;
  }

  std::vector<std::string> size_refusals;  // messages decode refused at delivery
  // The rounds whose unmask request told each node its update is in the sum.
  std::map<NodeId, std::vector<std::uint64_t>> summed;
  bool shuffle = false;
  std::mt19937 shuffle_rng{12345};

  void start() {
    for (auto& [id, n] : nodes) apply(id, n.start(now));
  }

  // --- the wire ---
  void to_coordinator(NodeId from, const Envelope& env) {
    if (silent.count(from)) return;
    if (drop_when && drop_when(*this, from, env)) {
      silent.insert(from);
      return;
    }
    if (discard && discard(*this, from, env)) return;
    queue.push_back({0, from, protocol::encode(env)});
  }
  void apply(NodeId id, federation::NodeActions a) {
    for (auto& env : a.send) to_coordinator(id, env);
    for (auto& n : a.notes) notes[id].push_back(n);
    if (a.install) models[id] = *a.install;
    if (a.train) {
      CHECK(models.count(id));
      if (models.count(id)) CHECK(a.train->global_version == models[id].version);
      trainings.push_back({id, now + train_delay_ms, *a.train});
    }
    if (a.cancel_training)
      std::erase_if(trainings, [&](const Pending& p) { return p.node == id && p.cmd.ticket != (a.train ? a.train->ticket : 0); });
  }
  void apply(federation::CoordinatorActions a) {
    for (auto& o : a.send) {
      if (rewrite) rewrite(*this, o.to, o.envelope);
      if (auto* e = std::get_if<protocol::ErrorReply>(&o.envelope.body)) errors_to[o.to].push_back(e->code);
      queue.push_back({o.to, 0, protocol::encode(o.envelope)});
    }
    for (auto& e : a.events) on_event(e);
  }
  void on_event(const federation::CoordinatorEvent& e) {
    events.push_back(e);
    if (auto* s = std::get_if<federation::RoundStarted>(&e)) {
      for (NodeId id : s->plan.selected) {
        trained[s->round][id] = train(id, s->round, coord.global().size());
        if (shape_update) shape_update(id, trained[s->round][id].update);
      }
    }
    if (auto* c = std::get_if<federation::RoundCompleted>(&e)) completed.push_back(*c);
    if (auto* f = std::get_if<federation::RoundFailed>(&e)) failed.push_back(*f);
  }

  bool deliver_one() {
    if (queue.empty()) return false;
    // Real networks interleave peers: with `shuffle`, any queued message may go next.
    if (shuffle && queue.size() > 1) std::swap(queue.front(), queue[shuffle_rng() % queue.size()]);
    auto m = std::move(queue.front());
    queue.pop_front();
    // Each receiver holds messages to the size caps its driver applies, so
    // every round here also checks that the caps fit real messages.
    protocol::Expectations expect;
    const std::uint64_t length = coord.global().size();
    if (m.to == 0) {
      expect.size_caps = federation::coordinator_size_caps(coord.current_plan(), length, protocol::Limits{});
    } else if (nodes.count(m.to)) {
      expect.size_caps = federation::node_size_caps(nodes.at(m.to).current_plan(), length, protocol::Limits{});
    }
    Envelope env;
    try {
      env = protocol::decode(m.bytes, protocol::Limits{}, expect);
    } catch (const protocol::DecodeError& e) {
      size_refusals.push_back(e.what());  // a real driver answers or logs it and goes on
      return true;
    }
    if (m.to == 0) {
      to_coord_log.push_back(env);
      apply(coord.on_message(now, env, node_key(m.from)));
    } else if (!silent.count(m.to) && nodes.count(m.to)) {
      auto actions = nodes.at(m.to).on_message(now, env);
      if (actions.update_in_sum) summed[m.to].push_back(env.round);
      apply(m.to, std::move(actions));
    }
    return true;
  }

  void advance() {
    std::optional<std::int64_t> t = coord.next_deadline_ms();
    auto consider = [&](std::optional<std::int64_t> v) {
      if (v) t = t ? std::min(*t, *v) : *v;
    };
    for (auto& [id, n] : nodes)
      if (!silent.count(id)) consider(n.next_tick_ms());
    for (auto& p : trainings) consider(p.ready_at);
    now = std::max(now + 1, t.value_or(now + 1000));
    // Finished trainings first, then the coordinator's deadlines, then node ticks.
    std::vector<Pending> ready;
    std::erase_if(trainings, [&](const Pending& p) {
      if (p.ready_at > now) return false;
      ready.push_back(p);
      return true;
    });
    for (auto& p : ready) {
      if (silent.count(p.node)) continue;
      const Trained& tr = trained[p.cmd.round][p.node];
      const std::uint32_t rank = lora_ranks.count(p.node) ? lora_ranks.at(p.node) : 0;
      apply(p.node, nodes.at(p.node).on_update_ready(now, {p.cmd.ticket, tr.update, tr.examples, tr.loss, rank}));
    }
    apply(coord.on_tick(now));
    for (auto& [id, n] : nodes)
      if (!silent.count(id)) apply(id, n.on_tick(now));
  }

  void step() {
    if (!deliver_one()) advance();
  }
  // Runs until `done` or the fake clock passes `limit_ms` more.
  bool run_until(const std::function<bool()>& done, std::int64_t limit_ms = 120000) {
    const std::int64_t end = now + limit_ms;
    while (!done() && now < end) step();
    return done();
  }
  bool run_to_finish(std::int64_t limit_ms = 120000) {
    return run_until([&] { return coord.finished() && queue.empty(); }, limit_ms);
  }

  struct Msg {
    NodeId to = 0, from = 0;
    protocol::Bytes bytes;
  };
  struct Pending {
    NodeId node;
    std::int64_t ready_at;
    federation::TrainCommand cmd;
  };

  CoordinatorCore coord;
  std::map<NodeId, std::uint32_t> lora_ranks;
  // Applied to each node's deterministic update (e.g. zero beyond its rank).
  std::function<void(NodeId, std::vector<float>&)> shape_update;
  std::map<NodeId, RoundClient> nodes;
  std::int64_t now = 1764000000000;  // a real unix-ms clock value, as drivers pass
  std::int64_t train_delay_ms = 100;
  std::deque<Msg> queue;
  std::set<NodeId> silent;
  // Called for each node->coordinator message: true = the node stops for good here.
  std::function<bool(Net&, NodeId, const Envelope&)> drop_when;
  // True = this one message is lost (the node goes on).
  std::function<bool(Net&, NodeId, const Envelope&)> discard;
  // Rewrites a coordinator->node message before it is sent: a scripted
  // malicious coordinator (tests/federation/test_malicious_secagg.cpp).
  std::function<void(Net&, NodeId, Envelope&)> rewrite;
  std::map<NodeId, std::vector<std::string>> notes;  // each node's notes (refusals, dropping out)
  std::vector<Pending> trainings;
  std::map<NodeId, federation::InstallGlobal> models;
  std::map<std::uint64_t, std::map<NodeId, Trained>> trained;  // round -> node -> its update
  std::vector<federation::CoordinatorEvent> events;
  std::vector<federation::RoundCompleted> completed;
  std::vector<federation::RoundFailed> failed;
  std::map<NodeId, std::vector<protocol::ErrorCode>> errors_to;
  std::vector<Envelope> to_coord_log;
};

// global + example-weighted mean of the survivors' (clipped) updates.
inline std::vector<double> expected_fedavg(const std::vector<float>& global, const std::map<NodeId, Trained>& round,
                                           const std::vector<NodeId>& survivors, double clip) {
  std::vector<double> sum(global.size(), 0.0);
  double total = 0;
  for (NodeId id : survivors) {
    const Trained& t = round.at(id);
    for (std::size_t j = 0; j < sum.size(); ++j)
      sum[j] += static_cast<double>(t.examples) * std::clamp<double>(t.update[j], -clip, clip);
    total += static_cast<double>(t.examples);
  }
  std::vector<double> out(global.size());
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = global[j] + sum[j] / total;
  return out;
}

inline double expected_loss(const std::map<NodeId, Trained>& round, const std::vector<NodeId>& survivors) {
  double s = 0, n = 0;
  for (NodeId id : survivors) {
    s += static_cast<double>(round.at(id).examples) * round.at(id).loss;
    n += static_cast<double>(round.at(id).examples);
  }
  return s / n;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t j = 0; j < a.size(); ++j) m = std::max(m, std::abs(static_cast<double>(a[j]) - b[j]));
  return m;
}

}  // namespace fedge::testing
