// The coordinator's side of a simulation spread over node-host processes: the
// host channel (ZeroMQ or MPI, host_channel.h) the node hosts join on, the
// block each one runs, and one HostLink per host for the level drivers
// (federation_sim.h).
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
#include "host_channel.h"
#include "fedge/sims/host_wire.h"
#include "fedge/sims/runner.h"

namespace fedge::sims::detail {

class RemoteHost;

class HostPool {
 public:
  // Opens the host channel (MPI with options.mpi, else ZeroMQ on
  // options.bind) and waits up to options.host_wait_s for its hosts to say
  // hello; hands each its block and the scenario.
  HostPool(const Scenario& scenario, const RunOptions& options);
  // If shutdown() was not called (the run failed), tells the hosts with a HostError.
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  // Waits until every host has loaded its block; refuses a host whose base
  // model or data split differs from this process's (`ctx`).
  std::vector<HostLink*> links(const Context& ctx);
  // The next seed of a run of several: every host rebuilds its block for
  // `seed_index` (links() then waits for their HostReady again).
  void assign_seed(int seed_index);
  void shutdown(const std::string& reason);

  // For RemoteHost: sends to a host, and waits for its next message (messages
  // of other hosts that arrive meanwhile are kept for them).
  void send(const RemoteHost& host, const HostMessage& message);
  HostMessage receive(const RemoteHost& host, std::chrono::duration<double> timeout);

 private:
  void progress(const std::string& line) const;
  // Waits for options_.node_hosts hellos and hands out the blocks.
  void await_hosts();
  HostAssign assignment(int first, int end, int seed_index) const;
  // Ends the run, naming the host, when the channel knows a host is gone.
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
  std::unique_ptr<HostChannel> channel_;
  std::vector<std::unique_ptr<RemoteHost>> hosts_;
  std::map<std::string, std::deque<HostMessage>> inbox_;  // by peer, decoded
  bool shut_down_ = false;
};

}  // namespace fedge::sims::detail
