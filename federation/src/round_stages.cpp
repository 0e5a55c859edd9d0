#include "fedge/federation/round_stages.h"

#include <string>

#include "fedge/common/error.h"
#include "fedge/federation/wire.h"

namespace fedge::federation {

using protocol::ErrorCode;
using protocol::NodeId;

const char* stage_name(RoundStage stage) {
  switch (stage) {
    case RoundStage::kIdle: return "idle";
    case RoundStage::kAdvertiseKeys: return "advertise_keys";
    case RoundStage::kShareKeys: return "share_keys";
    case RoundStage::kMaskedInput: return "masked_input";
    case RoundStage::kConsistency: return "consistency";
    case RoundStage::kUnmask: return "unmask";
    case RoundStage::kPlainUpdate: return "plain_update";
  }
  return "?";
}

namespace {

// Wire order of the round's stages; a message for an earlier stage is late.
int stage_order(RoundStage s) {
  switch (s) {
    case RoundStage::kAdvertiseKeys: case RoundStage::kPlainUpdate: return 1;
    case RoundStage::kShareKeys: return 2;
    case RoundStage::kMaskedInput: return 3;
    case RoundStage::kConsistency: return 4;
    case RoundStage::kUnmask: return 5;
    default: return 0;
  }
}

RoundStage stage_of_body(const protocol::Body& body) {
  if (std::holds_alternative<protocol::AdvertiseKeysBody>(body)) return RoundStage::kAdvertiseKeys;
  if (std::holds_alternative<protocol::ShareKeysBody>(body)) return RoundStage::kShareKeys;
  if (std::holds_alternative<protocol::MaskedInputBody>(body)) return RoundStage::kMaskedInput;
  if (std::holds_alternative<protocol::SurvivorSignatureBody>(body)) return RoundStage::kConsistency;
  if (std::holds_alternative<protocol::UnmaskResponseBody>(body)) return RoundStage::kUnmask;
  if (std::holds_alternative<protocol::PlainUpdate>(body)) return RoundStage::kPlainUpdate;
  return RoundStage::kIdle;
}

}  // namespace

bool is_round_message(const protocol::Body& body) { return stage_of_body(body) != RoundStage::kIdle; }

RoundStages::RoundStages(std::uint64_t round, std::uint32_t attempt, PlannedRound planned, std::int64_t now_ms,
                         int secagg_threads, const SigningRoster& roster)
    : round_(round), attempt_(attempt), planned_(std::move(planned)) {
  const auto& selected = planned_.plan.selected;
  for (std::uint32_t i = 0; i < selected.size(); ++i) clients_[selected[i]] = i + 1;
  if (planned_.secagg)
    server_ = std::make_unique<aggregation::SecAggServer>(round_, *planned_.secagg, secagg_threads, server_auth(roster));
  const auto& dl = planned_.plan.deadlines;
  std::set<NodeId> everyone(selected.begin(), selected.end());
  if (planned_.plan.secure)
    open(RoundStage::kAdvertiseKeys, std::move(everyone), now_ms + dl.train_ms + dl.advertise_keys_ms);
  else
    open(RoundStage::kPlainUpdate, std::move(everyone), now_ms + dl.train_ms + dl.masked_input_ms);
}

std::optional<Refusal> RoundStages::receive(const protocol::Envelope& env) {
  const RoundStage got = stage_of_body(env.body);
  if (env.round != round_)
    return Refusal{ErrorCode::kWrongRound,
                   "round " + std::to_string(env.round) + " is not running; round " + std::to_string(round_) + " is"};
  if (env.attempt != attempt_)
    return Refusal{ErrorCode::kWrongRound, "attempt " + std::to_string(env.attempt) + " of round " +
                                               std::to_string(round_) + " is over; attempt " +
                                               std::to_string(attempt_) + " runs"};
  auto client = clients_.find(env.sender);
  if (client == clients_.end()) return Refusal{ErrorCode::kNotAllowed, "this node is not selected for the round"};
  if ((got == RoundStage::kPlainUpdate) != (stage_ == RoundStage::kPlainUpdate))
    return Refusal{ErrorCode::kWrongStage, planned_.plan.secure
                                               ? "the round is secure: send secure-aggregation messages, not plainUpdate"
                                               : "the round is not secure: send plainUpdate"};
  if (stage_order(got) < stage_order(stage_))
    return Refusal{ErrorCode::kDeadlineMissed,
                   std::string("stage ") + stage_name(got) + " has closed; the round is at " + stage_name(stage_)};
  if (stage_order(got) > stage_order(stage_))
    return Refusal{ErrorCode::kWrongStage, std::string("the round is at ") + stage_name(stage_) + ", not " + stage_name(got)};
  if (!expected_.count(env.sender))
    return Refusal{ErrorCode::kDeadlineMissed, "this node missed an earlier stage and is a dropout"};
  if (received_.count(env.sender))
    return Refusal{ErrorCode::kDuplicate, std::string("a second ") + protocol::body_name(env.body)};
  try {
    accept(env, client->second);
  } catch (const Error& e) {
    return Refusal{ErrorCode::kMalformed, e.what()};
  }
  received_.insert(env.sender);
  return std::nullopt;
}

// With the operator's roster the coordinator checks signatures itself and
// refuses a bad one (so one faulty node cannot make honest ones abort); the
// nodes check them in any case.
std::optional<aggregation::ServerAuth> RoundStages::server_auth(const SigningRoster& roster) const {
  if (!planned_.secagg || planned_.secagg->mode != aggregation::SecAggMode::kMalicious || roster.empty())
    return std::nullopt;
  aggregation::ServerAuth auth{{}, wire::signing_context(round_, attempt_, planned_.plan.selected)};
  for (NodeId id : planned_.plan.selected) {
    auto it = roster.find(id);
    if (it == roster.end()) return std::nullopt;  // the nodes refuse the plan; nothing to check here
    auth.roster.push_back(it->second);
  }
  return auth;
}

void RoundStages::accept(const protocol::Envelope& env, aggregation::ClientId client) {
  if (const auto* m = std::get_if<protocol::AdvertiseKeysBody>(&env.body)) {
    server_->receive(wire::from_wire(*m, round_, client));
  } else if (const auto* m = std::get_if<protocol::ShareKeysBody>(&env.body)) {
    server_->receive(wire::from_wire(*m, round_, client));
  } else if (const auto* m = std::get_if<protocol::MaskedInputBody>(&env.body)) {
    server_->receive(wire::from_wire(*m, round_, client, planned_.secagg->vector_length));
  } else if (const auto* m = std::get_if<protocol::SurvivorSignatureBody>(&env.body)) {
    server_->receive(wire::from_wire(*m, round_, client));
  } else if (const auto* m = std::get_if<protocol::UnmaskResponseBody>(&env.body)) {
    server_->receive(wire::from_wire(*m, round_, client));
  } else if (const auto* m = std::get_if<protocol::PlainUpdate>(&env.body)) {
    if (m->num_examples == 0) throw Error(ErrorKind::kProtocol, "plainUpdate.numExamples is 0");
    plain_[env.sender] = PlainEntry{clip_update(planned_.encoding, m->update.span()), m->num_examples, m->train_loss};
  }
}

bool RoundStages::waits_only_on_lost(const std::function<bool(NodeId)>& is_alive) const {
  if (stage_complete()) return false;
  for (NodeId id : expected_)
    if (!received_.count(id) && is_alive(id)) return false;
  return true;
}

void RoundStages::open(RoundStage stage, std::set<NodeId> expected, std::int64_t deadline_ms) {
  stage_ = stage;
  expected_ = std::move(expected);
  received_.clear();
  deadline_ = deadline_ms;
}

void RoundStages::close() {
  stats_.stages.push_back(
      {stage_, static_cast<std::uint32_t>(expected_.size()), static_cast<std::uint32_t>(received_.size())});
}

void RoundStages::close_for_failure() {
  if (stats_.stages.empty() || stats_.stages.back().stage != stage_) close();
}

StageStep RoundStages::advance(std::int64_t now_ms) {
  close();
  const auto& dl = planned_.plan.deadlines;
  StageStep step;
  std::set<NodeId> next;
  switch (stage_) {
    case RoundStage::kAdvertiseKeys:
      for (auto& kb : server_->finish_advertise()) {
        const NodeId node = node_of(kb.recipient);
        next.insert(node);
        step.send.push_back(to(node, wire::to_wire(kb)));
      }
      open(RoundStage::kShareKeys, std::move(next), now_ms + dl.share_keys_ms);
      break;
    case RoundStage::kShareKeys:
      for (auto& sd : server_->finish_share_keys()) {
        const NodeId node = node_of(sd.recipient);
        next.insert(node);
        step.send.push_back(to(node, wire::to_wire(sd)));
      }
      open(RoundStage::kMaskedInput, std::move(next), now_ms + dl.masked_input_ms);
      break;
    case RoundStage::kMaskedInput: {
      if (planned_.secagg->mode == aggregation::SecAggMode::kMalicious) {
        // The survivors sign the set before anyone reveals a share.
        const aggregation::ConsistencyCheck check = server_->open_consistency_check();
        const protocol::ConsistencyCheckBody m = wire::to_wire(check);
        for (auto c : check.survivors) {
          next.insert(node_of(c));
          step.send.push_back(to(node_of(c), m));
        }
        open(RoundStage::kConsistency, std::move(next), now_ms + dl.unmask_ms);
        break;
      }
      const aggregation::UnmaskRequest req = server_->finish_masked_input();
      const protocol::UnmaskRequestBody m = wire::to_wire(req, static_cast<std::uint32_t>(planned_.plan.selected.size()));
      for (auto c : req.survivors) {
        next.insert(node_of(c));
        step.send.push_back(to(node_of(c), m));
      }
      open(RoundStage::kUnmask, std::move(next), now_ms + dl.unmask_ms);
      break;
    }
    case RoundStage::kConsistency: {
      // Only survivors that signed (this stage's received_) are asked: the
      // others cannot pass their own check (they signed nothing).
      const aggregation::UnmaskRequest req = server_->finish_consistency_check();
      const protocol::UnmaskRequestBody m = wire::to_wire(req, static_cast<std::uint32_t>(planned_.plan.selected.size()));
      for (NodeId node : received_) {
        next.insert(node);
        step.send.push_back(to(node, m));
      }
      open(RoundStage::kUnmask, std::move(next), now_ms + dl.unmask_ms);
      break;
    }
    case RoundStage::kUnmask:
      step.secure_sum = server_->finish_unmask();
      step.done = true;
      break;
    case RoundStage::kPlainUpdate: step.done = true; break;
    case RoundStage::kIdle: break;
  }
  return step;
}

}  // namespace fedge::federation
