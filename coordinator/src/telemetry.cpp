#include "fedge/coordinator/telemetry.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "fedge/coordinator/store.h"

namespace fedge::coordinator {
namespace {

using prometheus::Histogram;
using prometheus::Labels;
using prometheus::Sample;

double seconds_between(std::int64_t from_ms, std::int64_t to_ms) { return std::max<std::int64_t>(0, to_ms - from_ms) / 1000.0; }

Histogram& histogram_for(std::map<std::string, Histogram>& by, const std::string& key) {
  auto it = by.find(key);
  if (it == by.end()) it = by.emplace(key, Histogram(Telemetry::duration_buckets())).first;
  return it->second;
}

std::vector<std::pair<Labels, Histogram>> labelled(const std::map<std::string, Histogram>& by, const char* label) {
  std::vector<std::pair<Labels, Histogram>> out;
  for (const auto& [key, h] : by) out.push_back({{{label, key}}, h});
  return out;
}

const char* dp_mode_name(protocol::DpMode mode) {
  switch (mode) {
    case protocol::DpMode::kCentral: return "central";
    case protocol::DpMode::kDistributed: return "distributed";
    default: return "none";
  }
}

nlohmann::json round_json(const RoundRow& r) {
  nlohmann::json j = {{"round", r.round},
                      {"attempt", r.attempt},
                      {"state", r.state},
                      {"started_ms", r.started_ms},
                      {"finished_ms", r.finished_ms},
                      {"duration_seconds", r.finished_ms > 0 ? seconds_between(r.started_ms, r.finished_ms) : 0.0},
                      {"selected", r.selected},
                      {"survivors", r.survivors},
                      {"dropouts", r.dropouts},
                      {"dropped_by_stage", r.dropped_by_stage},
                      {"stage_seconds", r.stage_seconds},
                      {"epsilon", r.epsilon},
                      {"global_version", r.global_version ? nlohmann::json(*r.global_version) : nlohmann::json()},
                      {"reason", r.reason}};
  // NaN is not JSON: a metric without a value is left out.
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [name, value] : r.metrics)
    if (std::isfinite(value)) metrics[name] = value;
  j["metrics"] = metrics;
  return j;
}

}  // namespace

std::vector<double> Telemetry::duration_buckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}

Telemetry::Telemetry(const FederationConfig& config, std::size_t max_rounds)
    : config_(config), max_rounds_(std::max<std::size_t>(1, max_rounds)) {
  for (const char* name : {"rounds_started", "rounds_completed", "rounds_failed", "registrations", "nodes_lost",
                           "messages_refused", "node_errors"})
    counters_[name] = 0;
}

void Telemetry::add_row(RoundRow r) {
  rounds_.push_back(std::move(r));
  while (rounds_.size() > max_rounds_) rounds_.pop_front();
}

RoundRow* Telemetry::row(std::uint64_t round, std::uint32_t attempt) {
  for (auto it = rounds_.rbegin(); it != rounds_.rend(); ++it)
    if (it->round == round && it->attempt == attempt) return &*it;
  return nullptr;
}

void Telemetry::restore(const Store& store) {
  std::lock_guard lock(mutex_);
  const std::uint64_t last = store.last_completed_round();
  const std::uint64_t first = last > max_rounds_ ? last - max_rounds_ + 1 : 1;
  for (std::uint64_t round = first; round <= last; ++round) {
    const auto record = store.completed_round(round);
    if (!record) continue;
    RoundRow r;
    r.round = round;
    r.attempt = static_cast<std::uint32_t>(store.round_attempts(round).size());
    r.state = "completed";
    r.started_ms = record->started_ms;
    r.finished_ms = record->finished_ms;
    r.selected = static_cast<std::uint32_t>(record->selected.size());
    r.survivors = record->survivors;
    r.dropouts = r.selected > r.survivors ? r.selected - r.survivors : 0;
    r.metrics = store.round_metrics(round);
    r.epsilon = record->epsilon_spent;
    r.global_version = record->adapter_version;
    add_row(r);
    last_completed_ = r;
  }
  for (const auto& n : store.list_nodes()) known_[n.node_id] = {n.name, n.examples};
  epsilon_ = store.dp_spent().epsilon;
  delta_ = store.dp_spent().delta;
  if (const auto latest = store.latest_version()) global_version_ = latest->version;
}

void Telemetry::finish_round(const RoundStats& stats, RoundRow* r, std::int64_t now_ms, const char* outcome) {
  // The last stage ends with the round (before a retry's row can start).
  close_stage(now_ms, r);
  for (const auto& s : stats.stages) {
    if (s.dropped() == 0) continue;
    dropouts_by_stage_[stage_name(s.stage)] += s.dropped();
    if (r) {
      r->dropped_by_stage[stage_name(s.stage)] += s.dropped();
      r->dropouts += s.dropped();
    }
  }
  if (r) {
    r->finished_ms = now_ms;
    r->state = outcome;
    histogram_for(round_seconds_, outcome).observe(seconds_between(r->started_ms, now_ms));
  }
  running_ = false;
}

void Telemetry::on_event(const CoordinatorEvent& event, std::int64_t now_ms, double epsilon_now) {
  std::lock_guard lock(mutex_);
  epsilon_ = epsilon_now;
  if (config_.dp.mode != protocol::DpMode::kNone) delta_ = config_.dp.delta;
  if (const auto* e = std::get_if<RoundStarted>(&event)) {
    ++counters_["rounds_started"];
    RoundRow r;
    r.round = e->round;
    r.attempt = e->attempt;
    r.started_ms = now_ms;
    r.selected = static_cast<std::uint32_t>(e->plan.selected.size());
    add_row(std::move(r));
    running_ = true;
    current_round_ = e->round;
  } else if (const auto* e = std::get_if<RoundCompleted>(&event)) {
    ++counters_["rounds_completed"];
    RoundRow* r = row(e->round, e->attempt);
    finish_round(e->stats, r, now_ms, "completed");
    global_version_ = e->version;
    if (r) {
      r->survivors = e->survivors.size();
      r->metrics = e->metrics;
      r->epsilon = epsilon_now;
      r->global_version = e->version;
      last_completed_ = *r;
    }
  } else if (const auto* e = std::get_if<RoundFailed>(&event)) {
    ++counters_["rounds_failed"];
    RoundRow* r = e->started ? row(e->round, e->attempt) : nullptr;
    finish_round(e->stats, r, now_ms, "failed");
    if (r) r->reason = e->reason;
  } else if (const auto* e = std::get_if<NodeRegistered>(&event)) {
    ++counters_["registrations"];
    known_[e->node.node_id] = {e->node.name, e->node.capabilities.num_examples};
  } else if (std::holds_alternative<NodeLost>(event)) {
    ++counters_["nodes_lost"];
  } else if (std::holds_alternative<FederationFinished>(event)) {
    finished_ = true;
  } else if (std::holds_alternative<MessageRefused>(event)) {
    ++counters_["messages_refused"];
  } else if (std::holds_alternative<NodeReportedError>(event)) {
    ++counters_["node_errors"];
  }
}

void Telemetry::close_stage(std::int64_t now_ms, RoundRow* r) {
  if (stage_ != RoundStage::kIdle) {
    const double seconds = seconds_between(stage_since_ms_, now_ms);
    histogram_for(stage_seconds_, stage_name(stage_)).observe(seconds);
    if (r) r->stage_seconds[stage_name(stage_)] += seconds;
  }
  stage_ = RoundStage::kIdle;
  stage_since_ms_ = now_ms;
}

void Telemetry::on_stage(RoundStage stage, std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  if (stage == stage_) return;
  // An open stage belongs to the newest round row (the one running); a
  // round's end closes its last stage itself (finish_round).
  close_stage(now_ms, rounds_.empty() ? nullptr : &rounds_.back());
  stage_ = stage;
}

void Telemetry::on_nodes(std::vector<NodeRow> nodes) {
  std::lock_guard lock(mutex_);
  for (auto& n : nodes) {
    if (auto it = known_.find(n.id); it != known_.end()) {
      n.name = it->second.first;
      n.examples = it->second.second;
    }
  }
  nodes_ = std::move(nodes);
}

void Telemetry::on_received(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  bytes_in_ += bytes;
  ++messages_in_;
}

void Telemetry::on_sent(std::size_t bytes) {
  std::lock_guard lock(mutex_);
  bytes_out_ += bytes;
  ++messages_out_;
}

void Telemetry::on_current(std::uint64_t round, std::uint64_t global_version, bool finished) {
  std::lock_guard lock(mutex_);
  current_round_ = round;
  global_version_ = global_version;
  finished_ = finished;
}

std::string Telemetry::prometheus_text() const {
  std::lock_guard lock(mutex_);
  prometheus::TextWriter w;
  auto count = [&](const char* key) { return double(counters_.at(key)); };
  w.counter("fedge_rounds_started_total", "Round attempts started.", count("rounds_started"));
  w.counter("fedge_rounds_completed_total", "Rounds that produced a new global adapter.", count("rounds_completed"));
  w.counter("fedge_rounds_failed_total", "Round attempts that failed (too few survivors, no plan, ...).",
            count("rounds_failed"));
  w.gauge("fedge_round_current", "The running round, or the next one to run.", double(current_round_));
  w.gauge("fedge_round_running", "1 while a round is running.", running_ ? 1.0 : 0.0);
  w.gauge("fedge_rounds_planned", "Rounds the federation is configured to run (federation.rounds).",
          double(config_.rounds));
  w.gauge("fedge_federation_finished", "1 once the configured rounds are done.", finished_ ? 1.0 : 0.0);
  w.gauge("fedge_global_adapter_version", "The latest global adapter version.", double(global_version_));
  w.histogram("fedge_round_duration_seconds", "Round attempts from start to end, by outcome.",
              labelled(round_seconds_, "outcome"));
  w.histogram("fedge_round_stage_duration_seconds", "How long each stage of a round stayed open.",
              labelled(stage_seconds_, "stage"));
  std::vector<Sample> dropouts;
  for (const auto& [stage, n] : dropouts_by_stage_) dropouts.push_back({{{"stage", stage}}, double(n)});
  w.counter("fedge_round_dropouts_total", "Selected nodes that missed a stage, by the stage they missed.", dropouts);
  std::map<std::string, double> by_state{{"live", 0}, {"lost", 0}};
  double in_round = 0;
  for (const auto& n : nodes_) {
    by_state[n.state] += 1;
    if (n.in_round) in_round += 1;
  }
  std::vector<Sample> states;
  for (const auto& [state, n] : by_state) states.push_back({{{"state", state}}, n});
  w.gauge("fedge_nodes", "Registered nodes by state (live: heartbeats on time; lost: silent).", states);
  w.gauge("fedge_nodes_in_round", "Nodes selected for the running round.", in_round);
  w.counter("fedge_node_registrations_total", "Node registrations (first or again after a restart).",
            count("registrations"));
  w.counter("fedge_nodes_lost_total", "Times a node missed its liveness timeout.", count("nodes_lost"));
  w.counter("fedge_messages_refused_total", "Node messages the coordinator refused with an error reply.",
            count("messages_refused"));
  w.counter("fedge_node_errors_total", "Error replies nodes sent.", count("node_errors"));
  w.counter("fedge_received_bytes_total", "Bytes of messages received from nodes.", double(bytes_in_));
  w.counter("fedge_sent_bytes_total", "Bytes of messages sent to nodes.", double(bytes_out_));
  w.counter("fedge_received_messages_total", "Messages received from nodes.", double(messages_in_));
  w.counter("fedge_sent_messages_total", "Messages sent to nodes.", double(messages_out_));
  w.gauge("fedge_dp_epsilon", "Differential privacy: epsilon spent so far (0 without DP).", epsilon_);
  w.gauge("fedge_dp_delta", "Differential privacy: the delta epsilon is reported at (0 without DP).", delta_);
  std::vector<Sample> quality;
  if (last_completed_) {
    for (const auto& [name, value] : last_completed_->metrics) quality.push_back({{{"name", name}}, value});
  }
  w.gauge("fedge_last_round_metric",
          "Figures of the last completed round (train_loss, node/eval_loss, participants, ...), by name.", quality);
  w.gauge("fedge_last_round_completed", "Id of the last completed round (0: none yet).",
          last_completed_ ? double(last_completed_->round) : 0.0);
  w.gauge("fedge_last_round_survivors", "Nodes whose updates are in the last completed round.",
          last_completed_ ? double(last_completed_->survivors) : 0.0);
  w.gauge("fedge_last_round_completed_timestamp_seconds", "When the last completed round ended (Unix time).",
          last_completed_ ? last_completed_->finished_ms / 1000.0 : 0.0);
  return w.text();
}

std::string Telemetry::status_json(std::int64_t now_ms) const {
  std::lock_guard lock(mutex_);
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : nodes_)
    nodes.push_back({{"id", n.id}, {"name", n.name}, {"state", n.state}, {"in_round", n.in_round},
                     {"examples", n.examples}});
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& r : rounds_) rounds.push_back(round_json(r));
  nlohmann::json out = {
      {"time_ms", now_ms},
      {"coordinator",
       {{"round", current_round_},
        {"running", running_},
        {"stage", stage_name(stage_)},
        {"stage_seconds", stage_ == RoundStage::kIdle ? 0.0 : seconds_between(stage_since_ms_, now_ms)},
        {"global_version", global_version_},
        {"rounds_planned", config_.rounds},
        {"rounds_completed_total", counters_.at("rounds_completed")},
        {"rounds_failed_total", counters_.at("rounds_failed")},
        {"finished", finished_},
        {"secure", config_.secure},
        {"strategy", config_.strategy}}},
      {"nodes", nodes},
      {"rounds", rounds},
      {"privacy", {{"dp_mode", dp_mode_name(config_.dp.mode)}, {"epsilon", epsilon_}, {"delta", delta_}}},
      {"traffic",
       {{"received_bytes", bytes_in_}, {"sent_bytes", bytes_out_}, {"received_messages", messages_in_},
        {"sent_messages", messages_out_}}}};
  return out.dump();
}

}  // namespace fedge::coordinator
