// What the coordinator's HTTP endpoints show: GET /metrics (Prometheus text)
// and GET /api/status (JSON for the dashboard). See docs/FEDERATION.md,
// "Metrics and dashboard".
//
// Threading: the runtime's loop thread is the only writer (it reports each
// event of the core, stage changes, node states and bytes on the socket as
// they happen); HTTP threads read. Every method takes one mutex, holds it
// only to copy or format in memory (no I/O, no Store), so a scrape never
// blocks a round and never sees half an update.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fedge/common/prometheus.h"
#include "fedge/coordinator/federation.h"

namespace fedge::coordinator {

class Store;

// One attempt of a round as the dashboard lists it.
struct RoundRow {
  std::uint64_t round = 0;
  std::uint32_t attempt = 1;
  std::string state = "running";  // running, completed, failed
  std::int64_t started_ms = 0;
  std::int64_t finished_ms = 0;   // 0 while running
  std::uint32_t selected = 0;
  std::uint64_t survivors = 0;
  std::uint64_t dropouts = 0;     // selected nodes that missed a stage
  std::map<std::string, std::uint32_t> dropped_by_stage;
  std::map<std::string, double> stage_seconds;  // stage name -> how long it was open
  std::map<std::string, double> metrics;        // the round's metrics (train_loss, node/eval_loss, ...)
  double epsilon = 0;                           // cumulative after this round
  std::optional<std::uint64_t> global_version;  // the version it produced
  std::string reason;                           // why it failed
};

struct NodeRow {
  protocol::NodeId id = 0;
  std::string name;
  std::string state;  // "live" (heartbeats on time) or "lost"
  bool in_round = false;  // selected for the running round
  std::uint64_t examples = 0;
};

class Telemetry {
 public:
  // Keeps the newest `max_rounds` round rows for /api/status.
  explicit Telemetry(const FederationConfig& config, std::size_t max_rounds = 1000);

  // ---- the loop thread ----
  // A restarted coordinator's history from its store: completed rounds, the
  // nodes it knows, epsilon and the latest global version.
  void restore(const Store& store);
  void on_event(const CoordinatorEvent& event, std::int64_t now_ms, double epsilon_now);
  // Called after every step of the loop: times each stage of a round from
  // the moment the core enters it until it leaves it.
  void on_stage(RoundStage stage, std::int64_t now_ms);
  void on_nodes(std::vector<NodeRow> nodes);
  void on_received(std::size_t bytes);
  void on_sent(std::size_t bytes);
  void on_current(std::uint64_t round, std::uint64_t global_version, bool finished);

  // ---- any thread ----
  std::string prometheus_text() const;
  // {"coordinator": {...}, "nodes": [...], "rounds": [...], "privacy": {...}, "traffic": {...}}
  std::string status_json(std::int64_t now_ms) const;

  // Histogram buckets (seconds) of round and stage durations.
  static std::vector<double> duration_buckets();

 private:
  RoundRow* row(std::uint64_t round, std::uint32_t attempt);
  void add_row(RoundRow row);
  void finish_round(const RoundStats& stats, RoundRow* r, std::int64_t now_ms, const char* outcome);
  void close_stage(std::int64_t now_ms, RoundRow* r);

  mutable std::mutex mutex_;
  FederationConfig config_;
  std::size_t max_rounds_;
  std::deque<RoundRow> rounds_;
  std::vector<NodeRow> nodes_;
  std::map<protocol::NodeId, std::pair<std::string, std::uint64_t>> known_;  // id -> name, examples
  std::map<std::string, std::uint64_t> counters_;  // rounds_started, rounds_completed, ...
  std::map<std::string, std::uint64_t> dropouts_by_stage_;
  std::map<std::string, prometheus::Histogram> round_seconds_;  // by outcome
  std::map<std::string, prometheus::Histogram> stage_seconds_;  // by stage
  RoundStage stage_ = RoundStage::kIdle;
  std::int64_t stage_since_ms_ = 0;
  std::uint64_t current_round_ = 0, global_version_ = 0;
  bool running_ = false, finished_ = false;
  double epsilon_ = 0, delta_ = 0;
  std::optional<RoundRow> last_completed_;
  std::uint64_t bytes_in_ = 0, bytes_out_ = 0, messages_in_ = 0, messages_out_ = 0;
};

}  // namespace fedge::coordinator
