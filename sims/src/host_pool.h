// The coordinator's side of a simulation spread over node-host processes: a
// ZeroMQ ROUTER that node hosts connect to, the block each one runs, and one
// HostLink per host for the level drivers (federation_sim.h).
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "context.h"
#include "federation_sim.h"
#include "fedge/protocol/transport.h"
#include "fedge/sims/host_wire.h"
#include "fedge/sims/runner.h"

namespace zmq {
class socket_t;
}  // namespace zmq

namespace fedge::sims::detail {

class RemoteHost;

class HostPool {
 public:
  // Binds options.bind and waits up to options.host_wait_s for
  // options.node_hosts hosts to say hello; hands each its block and the scenario.
  HostPool(const Scenario& scenario, const RunOptions& options);
  // If shutdown() was not called (the run failed), tells the hosts with a HostError.
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  // Waits until every host has loaded its block; refuses a host whose base
  // model or data split differs from this process's (`ctx`).
  std::vector<HostLink*> links(const Context& ctx);
  void shutdown(const std::string& reason);

  // For RemoteHost: sends to a host, and waits for its next message (messages
  // of other hosts that arrive meanwhile are kept for them).
  void send(const RemoteHost& host, const HostMessage& message);
  HostMessage receive(const RemoteHost& host, std::chrono::duration<double> timeout);

 private:
  void progress(const std::string& line) const;
  // Waits for options_.node_hosts hellos and hands out the blocks.
  void await_hosts();
  void watch_connections();
  void check_connections();
  // Files a message from a host that has its block into that host's inbox,
  // whenever it comes (a host that loads fast is ready before the last host
  // has connected). A second hello is refused with a HostError to its host;
  // a message that does not decode ends the run, naming the host.
  void keep(protocol::Incoming in);
  const RemoteHost* host_of(const std::string& peer) const;
  // Tells every assigned host that the run failed here.
  void tell_hosts_the_run_failed() noexcept;

  const Scenario& scenario_;
  RunOptions options_;
  protocol::Context zmq_;
  std::unique_ptr<protocol::Router> router_;
  // Connection events of the router: a dropped connection gets every host a
  // Ping, and a host that can no longer be reached ends the run at once.
  std::unique_ptr<zmq::socket_t> monitor_;
  std::optional<std::chrono::steady_clock::time_point> probe_at_;
  int probes_left_ = 0;
  std::vector<std::unique_ptr<RemoteHost>> hosts_;
  std::map<std::string, std::deque<HostMessage>> inbox_;  // by peer, decoded
  bool shut_down_ = false;
};

}  // namespace fedge::sims::detail
