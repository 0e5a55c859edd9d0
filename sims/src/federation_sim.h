// Levels 4-6 under the virtual clock, split in two sides that only talk
// through messages, so the nodes can run in this process or in node-host
// processes on other machines with the same results (docs/SIMULATOR.md):
//
// - CoordinatorSide drives federation/'s CoordinatorCore (through coordinator/federation.h);
// - a NodeBlock drives the RoundClients (federation/, through node/round_client.h) of a block of
//   virtual nodes, trains and evaluates them on the shared base.
//
// Time advances in lock-step windows (conservative parallel discrete-event
// simulation): a message takes at least `lookahead` ms of simulated time, so
// within a window [T, T + lookahead) no side can affect another, and the
// coordinator and every block process their own events of the window
// independently. Messages produced in a window are handed over at its end.
// Each side orders its events by (time, origin, sequence), never by arrival,
// so the results do not depend on how the nodes are split over blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <vector>

#include "context.h"
#include "fedge/coordinator/federation.h"
#include "fedge/node/round_client.h"
#include "fedge/sims/host_wire.h"

namespace fedge::sims::detail {

std::int64_t to_ms(double seconds);
const NetworkProfile& level_network(const Scenario& s, int level);
// The least simulated time any message takes on `net`: the window length.
std::int64_t lookahead_ms(const NetworkProfile& net);
// When a message of `bytes` sent at `now` arrives; `link_free` is when the
// sender's link finishes what is queued on it (messages leave in order).
std::int64_t arrival_ms(const NetworkProfile& net, std::int64_t now, std::int64_t& link_free, std::uint64_t bytes,
                        bool upload);
privacy::Key32 key_from(std::uint64_t seed, const std::string& label);

// Events of one side, ordered by (at, origin, seq): origin is the node index for
// a node's own events and messages, -1 for coordinator messages, and kTickOrigin
// for coordinator ticks.
struct SimEvent {
  static constexpr std::int64_t kTickOrigin = std::int64_t{1} << 40;
  std::int64_t at = 0;
  std::int64_t origin = 0;
  std::uint64_t seq = 0;
  enum Kind { kMessage, kTick, kTrainDone } kind = kMessage;
  int node = 0;
  protocol::Bytes bytes;
  std::shared_ptr<node::LocalUpdate> update;
  bool operator>(const SimEvent& o) const {
    if (at != o.at) return at > o.at;
    if (origin != o.origin) return origin > o.origin;
    return seq > o.seq;
  }
};
using EventQueue = std::priority_queue<SimEvent, std::vector<SimEvent>, std::greater<>>;

// The virtual nodes [first, end) of one level, on the shared Context.
class NodeBlock {
 public:
  NodeBlock(Context& ctx, int level, int first, int end);
  ~NodeBlock();

  // Level 4/5: the nodes start and register; level 6: each node trains alone
  // and the report holds its rows.
  WindowReport start();
  // Takes the coordinator's messages, records rows for completed rounds, then
  // processes every event before order.until_ms (nothing when order.finish).
  WindowReport window(const WindowOrder& order);

 private:
  struct VirtualNode;
  void apply(int n, node::NodeActions actions, WindowReport& report);
  void send(int n, const protocol::Envelope& env, WindowReport& report);
  void train(int n, const node::TrainCommand& cmd);
  void on_message(int n, const protocol::Envelope& env);
  void schedule_tick(int n);
  void push(SimEvent e);
  MetricsRow row_for(int n, const RoundDone& done, const std::optional<Quality>& quality) const;
  std::vector<MetricsRow> rows_for(const RoundDone& done);
  void keep_controls(const RoundDone& done);
  std::optional<ParamVector> personal_adapter(int n, const RoundDone& done, const ParamVector& global);
  std::vector<MetricsRow> local_only_rows();
  VirtualNode& at(int n);
  // After the level's last window: frees the nodes' state, measuring what it held.
  void release_nodes();

  Context& ctx_;
  const Scenario& s_;
  int level_, first_, end_;
  const NetworkProfile& net_;
  std::vector<VirtualNode> nodes_;
  EventQueue queue_;
  std::int64_t now_ = 0;
  // Global versions the nodes installed, shared between them; a version no
  // node refers to any more is dropped at the end of a window.
  std::map<std::uint64_t, std::shared_ptr<const std::vector<float>>> versions_;
  std::uint64_t models_installed_ = 0;
};

// One block of nodes as the coordinator sees it: in this process or behind a
// socket. send_*() hands work over; collect() waits for its report, so remote
// blocks work while the coordinator does its own part of the window.
class HostLink {
 public:
  virtual ~HostLink() = default;
  virtual int first_node() const = 0;
  virtual int end_node() const = 0;
  virtual std::string name() const = 0;
  virtual void send_start(int level) = 0;
  virtual void send_window(WindowOrder order) = 0;
  virtual WindowReport collect() = 0;
};

// A block in this process, on the runner's own Context.
class LocalHost : public HostLink {
 public:
  LocalHost(Context& ctx, int first, int end) : ctx_(ctx), first_(first), end_(end) {}
  int first_node() const override { return first_; }
  int end_node() const override { return end_; }
  std::string name() const override;
  void send_start(int level) override;
  void send_window(WindowOrder order) override;
  WindowReport collect() override;

 private:
  Context& ctx_;
  int first_, end_;
  std::unique_ptr<NodeBlock> block_;
  std::function<WindowReport()> pending_;
};

// Blocks of about equal size covering nodes [0, nodes): block i of `blocks`.
std::pair<int, int> block_range(int nodes, int blocks, int i);

// Levels 4 and 5: the coordinator side here, the nodes on `hosts`.
struct FederatedOutcome {
  std::vector<MetricsRow> rows;  // per round and node, ordered by (round, node)
  int rounds_completed = 0, rounds_failed = 0;
  std::optional<double> epsilon;
  bool individual_updates_seen = false;
  double server_compute_s = 0;
  double sim_time_s = 0;
  std::vector<CurvePoint> curve;  // run_fedbuff: one point per evaluated version
};
FederatedOutcome run_federated(Context& ctx, int level, const std::vector<HostLink*>& hosts);

// Levels 4 and 5 with [training] mode = "fedbuff" (fedbuff.cpp), every node
// in this process: rows per published version and node, ordered by (version, node).
FederatedOutcome run_fedbuff(Context& ctx, int level);

// Level 6 on `hosts`: rows ordered by node.
std::vector<MetricsRow> run_local_only(const std::vector<HostLink*>& hosts);

}  // namespace fedge::sims::detail
