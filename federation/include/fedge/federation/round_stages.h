// One attempt of one round as a stage machine: the stages a secure round goes
// through (advertise keys, share keys, masked input, unmask: SecAgg+ run by
// aggregation's SecAggServer) or the one stage of a plain round, which nodes
// each stage waits for, the checks every round message passes, and when a
// stage closes (everyone answered, its deadline passed, or only silent nodes
// are left). Sans-I/O: it returns messages; the coordinator core sends them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/outgoing.h"
#include "fedge/federation/round_planner.h"

namespace fedge::federation {

// kConsistency: the malicious mode's consistency round, between masked input and unmask.
enum class RoundStage { kIdle, kAdvertiseKeys, kShareKeys, kMaskedInput, kUnmask, kPlainUpdate, kConsistency };
const char* stage_name(RoundStage stage);
// A message nodes send within a round (advertiseKeys ... unmaskResponse, plainUpdate).
bool is_round_message(const protocol::Body& body);

struct StageCount {
  RoundStage stage = RoundStage::kIdle;
  std::uint32_t expected = 0;  // nodes asked for this stage
  std::uint32_t received = 0;  // accepted answers before the stage closed
  std::uint32_t dropped() const { return expected - received; }
};
struct RoundStats {
  std::vector<StageCount> stages;  // in order, the stages that ran
  std::uint32_t errors_sent = 0;   // ErrorReplies for this round's messages
};

// A plain round's update from one node, clipped as the plan says.
struct PlainEntry {
  std::vector<float> update;
  std::uint64_t num_examples = 0;
  double train_loss = 0;
};

// What closing a stage gives: messages that open the next stage, or, when
// the last stage closed, what the round produced (the secure sum, or the
// plain updates in plain_updates()).
struct StageStep {
  std::vector<Outgoing> send;
  bool done = false;
  std::optional<aggregation::SecAggResult> secure_sum;
};

class RoundStages {
 public:
  // Opens the first stage; its deadline covers training. Throws like
  // SecAggServer's constructor for bad SecAgg parameters. `roster` (malicious
  // mode, optional): node id -> Ed25519 key, for the coordinator's own checks.
  RoundStages(std::uint64_t round, std::uint32_t attempt, PlannedRound planned, std::int64_t now_ms,
              int secagg_threads, const SigningRoster& roster = {});

  std::uint64_t round() const { return round_; }
  std::uint32_t attempt() const { return attempt_; }
  const protocol::RoundPlan& plan() const { return planned_.plan; }
  const UpdateEncoding& encoding() const { return planned_.encoding; }
  RoundStage stage() const { return stage_; }
  std::int64_t deadline_ms() const { return deadline_; }
  const RoundStats& stats() const { return stats_; }
  RoundStats take_stats() { return std::move(stats_); }
  void count_error_sent() { ++stats_.errors_sent; }
  const std::map<protocol::NodeId, PlainEntry>& plain_updates() const { return plain_; }
  protocol::NodeId node_of(aggregation::ClientId client) const { return planned_.plan.selected.at(client - 1); }

  // Checks a round message (advertiseKeys ... unmaskResponse, plainUpdate)
  // from its authenticated sender against the round, the attempt and the
  // stage, and hands it to the state machine. A refusal leaves the round as
  // it was.
  std::optional<Refusal> receive(const protocol::Envelope& envelope);
  // Every node the stage waits for has answered.
  bool stage_complete() const { return received_.size() >= expected_.size(); }
  // The stage waits only on nodes `is_alive` says are gone.
  bool waits_only_on_lost(const std::function<bool(protocol::NodeId)>& is_alive) const;
  // Closes the current stage and opens the next. Throws Error(kPrivacy) when
  // too few nodes are left for the round to go on (no partial result).
  StageStep advance(std::int64_t now_ms);
  // Records the running stage's counts when the round ends early.
  void close_for_failure();

 private:
  void open(RoundStage stage, std::set<protocol::NodeId> expected, std::int64_t deadline_ms);
  void close();
  void accept(const protocol::Envelope& envelope, aggregation::ClientId client);
  std::optional<aggregation::ServerAuth> server_auth(const SigningRoster& roster) const;
  Outgoing to(protocol::NodeId node, protocol::Body body) const {
    return coordinator_message(node, round_, attempt_, std::move(body));
  }

  std::uint64_t round_;
  std::uint32_t attempt_;
  PlannedRound planned_;
  std::map<protocol::NodeId, aggregation::ClientId> clients_;  // node id -> client id (index in selected + 1)
  std::unique_ptr<aggregation::SecAggServer> server_;
  RoundStage stage_ = RoundStage::kIdle;
  std::int64_t deadline_ = 0;
  std::set<protocol::NodeId> expected_, received_;
  std::map<protocol::NodeId, PlainEntry> plain_;
  RoundStats stats_;
};

}  // namespace fedge::federation
