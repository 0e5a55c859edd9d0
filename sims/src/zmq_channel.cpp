// The host channel over ZeroMQ: the coordinator process binds a ROUTER, each
// node host connects a DEALER to it by address. Kept beside MPI for runs
// without an MPI launcher (docs/SIMULATOR.md, "Across machines").
#include <unistd.h>

#include <cstdio>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "host_channel.h"
#include "fedge/common/error.h"
#include "fedge/sims/host_wire.h"

namespace fedge::sims::detail {
namespace {

constexpr int kLingerMs = 3000;  // the last messages (Shutdown, HostError) must still leave

protocol::SocketOptions host_socket_options() {
  protocol::SocketOptions o;
  HostWireLimits limits;
  o.limits.max_message_bytes = limits.max_message_bytes;
  o.send_timeout_ms = 60000;
  return o;
}

// ZMTP heartbeats: a peer on a machine that died (no TCP reset) is dropped
// after kHeartbeatTimeoutMs, which the pool's connection monitor then sees.
constexpr int kHeartbeatMs = 5000, kHeartbeatTimeoutMs = 30000;
void set_heartbeats(zmq::socket_t& s) {
  s.set(zmq::sockopt::heartbeat_ivl, kHeartbeatMs);
  s.set(zmq::sockopt::heartbeat_timeout, kHeartbeatTimeoutMs);
}

class ZmqHostChannel : public HostChannel {
 public:
  explicit ZmqHostChannel(const RunOptions& options)
      : hosts_(options.node_hosts), router_(zmq_, options.bind, host_socket_options()), endpoint_(router_.endpoint()) {
    router_.socket().set(zmq::sockopt::linger, kLingerMs);
    set_heartbeats(router_.socket());
    // Watch before any host gets its block: a host may die right after.
    watch_connections();
    if (options.on_bound) options.on_bound(endpoint_);
  }
  std::string where() const override { return endpoint_; }
  int hosts() const override { return hosts_; }
  std::string how_to_join() const override {
    return "run `fedge sim --node-host " + endpoint_ + "` on each (the port as bound here)";
  }
  int block_of(const std::string&, int arrivals) const override { return arrivals; }
  void send(const std::string& peer, const protocol::Bytes& bytes) override { router_.send(peer, bytes); }
  std::optional<protocol::Incoming> recv(std::chrono::milliseconds timeout) override { return router_.recv(timeout); }
  std::optional<std::string> lost_peer(const std::vector<std::string>& peers) override;
  void flush(std::chrono::milliseconds) override {}  // the socket's linger sends what is queued

 private:
  void watch_connections();

  int hosts_;
  protocol::Context zmq_;
  protocol::Router router_;
  std::string endpoint_;
  // Connection events of the router: a dropped connection gets every host a
  // Ping, and a host that can no longer be reached ends the run at once.
  std::unique_ptr<zmq::socket_t> monitor_;
  std::optional<std::chrono::steady_clock::time_point> probe_at_;
  int probes_left_ = 0;
};

void ZmqHostChannel::watch_connections() {
  const std::string address = "inproc://fedge-sim-host-monitor-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
  if (zmq_socket_monitor(router_.socket().handle(), address.c_str(), ZMQ_EVENT_DISCONNECTED) != 0) {
    spdlog::warn("sim: cannot watch node-host connections ({}); a dead host is noticed by its timeout only",
                 zmq_strerror(zmq_errno()));
    return;
  }
  monitor_ = std::make_unique<zmq::socket_t>(zmq_.native(), zmq::socket_type::pair);
  monitor_->set(zmq::sockopt::linger, 0);
  monitor_->connect(address);
}

// A connection dropped: some peer left. Every host gets a Ping; a host the
// router can no longer reach is gone. The router drops a dead peer's route a
// moment after the event (later on a busy machine), so the probe repeats.
std::optional<std::string> ZmqHostChannel::lost_peer(const std::vector<std::string>& peers) {
  if (!monitor_) return std::nullopt;
  constexpr int kProbes = 8;
  constexpr auto kProbeGap = std::chrono::milliseconds(250);
  zmq::message_t event, endpoint;
  while (monitor_->recv(event, zmq::recv_flags::dontwait)) {
    (void)monitor_->recv(endpoint);  // each event is two frames
    probe_at_ = std::chrono::steady_clock::now() + kProbeGap;
    probes_left_ = kProbes;
  }
  if (!probe_at_ || std::chrono::steady_clock::now() < *probe_at_) return std::nullopt;
  if (--probes_left_ > 0) {
    probe_at_ = std::chrono::steady_clock::now() + kProbeGap * (kProbes - probes_left_);
  } else {
    probe_at_.reset();
  }
  const auto ping = encode_host_message(Ping{});
  for (const auto& peer : peers) {
    try {
      router_.send(peer, ping);
    } catch (const Error&) {
      return peer;
    }
  }
  return std::nullopt;
}

class ZmqCoordinatorChannel : public CoordinatorChannel {
 public:
  explicit ZmqCoordinatorChannel(const NodeHostOptions& options)
      : connect_(options.connect), dealer_(zmq_, options.connect, host_socket_options()) {
    dealer_.socket().set(zmq::sockopt::linger, kLingerMs);  // a HostError must still leave
    set_heartbeats(dealer_.socket());
  }
  std::string where() const override { return connect_; }
  std::string unreachable_hint() const override {
    return "check the address and that `fedge sim --node-hosts` runs there";
  }
  std::string default_name() const override {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "host");
    return std::string(name) + ":" + std::to_string(::getpid());
  }
  void send(const protocol::Bytes& bytes) override { dealer_.send(bytes); }
  std::optional<protocol::Bytes> recv(std::chrono::milliseconds timeout) override { return dealer_.recv(timeout); }
  void flush(std::chrono::milliseconds) override {}  // the socket's linger sends what is queued

 private:
  std::string connect_;
  protocol::Context zmq_;
  protocol::Dealer dealer_;
};

}  // namespace

std::unique_ptr<HostChannel> make_zmq_host_channel(const RunOptions& options) {
  return std::make_unique<ZmqHostChannel>(options);
}

std::unique_ptr<CoordinatorChannel> make_zmq_coordinator_channel(const NodeHostOptions& options) {
  return std::make_unique<ZmqCoordinatorChannel>(options);
}

}  // namespace fedge::sims::detail
