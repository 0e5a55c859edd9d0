// How the coordinator process and its node hosts reach each other: the two
// ends of a channel that carries encoded host_wire.h messages. The lock-step
// protocol, the rendezvous, the block assignment and the digest checks
// (distributed.cpp) are written once against these interfaces; two transports
// implement them:
//
// - ZeroMQ (zmq_channel.cpp): a ROUTER the hosts connect to by address
//   (`fedge sim --node-hosts H --bind EP` and `fedge sim --node-host EP`);
// - MPI (mpi_channel.cpp, with FEDGE_WITH_MPI): rank 0 and ranks 1..H of
//   MPI_COMM_WORLD under `mpirun -n H+1 fedge sim SCENARIO`.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedge/protocol/transport.h"
#include "fedge/sims/node_host.h"
#include "fedge/sims/runner.h"

namespace fedge::sims::detail {

// The coordinator process's end: every node host, each known by a peer id.
class HostChannel {
 public:
  virtual ~HostChannel() = default;
  // Where the hosts join, for logs and errors ("tcp://10.0.0.5:7000", "MPI ranks 1..2").
  virtual std::string where() const = 0;
  // How many node hosts the run has.
  virtual int hosts() const = 0;
  // What makes the missing hosts join (for the wait's log line and its timeout error).
  virtual std::string how_to_join() const = 0;
  // The block of a host that says hello: `arrivals` (hellos before it) over
  // ZeroMQ, rank - 1 over MPI. Distinct for distinct peers, in [0, hosts).
  virtual int block_of(const std::string& peer, int arrivals) const = 0;
  // Queues `bytes` for `peer` and returns; throws fedge::Error (kNotFound, kIo)
  // when the peer cannot be reached.
  virtual void send(const std::string& peer, const protocol::Bytes& bytes) = 0;
  // The next message from any peer, or nothing within `timeout`. Throws
  // fedge::Error for a message the transport cannot take (too large).
  virtual std::optional<protocol::Incoming> recv(std::chrono::milliseconds timeout) = 0;
  // One of `peers` whose connection is gone, if the transport can tell (ZeroMQ
  // watches its connections; under MPI the launcher ends the job instead).
  virtual std::optional<std::string> lost_peer(const std::vector<std::string>& peers) = 0;
  // Waits up to `limit` for queued messages to leave (the last Shutdown or HostError).
  virtual void flush(std::chrono::milliseconds limit) = 0;
};

// A node host's end: its coordinator.
class CoordinatorChannel {
 public:
  virtual ~CoordinatorChannel() = default;
  // The coordinator's address for logs and errors ("tcp://10.0.0.5:7000", "MPI rank 0").
  virtual std::string where() const = 0;
  // What to check when the coordinator does not answer at all.
  virtual std::string unreachable_hint() const = 0;
  // This host's name in logs when NodeHostOptions::name is empty.
  virtual std::string default_name() const = 0;
  virtual void send(const protocol::Bytes& bytes) = 0;
  virtual std::optional<protocol::Bytes> recv(std::chrono::milliseconds timeout) = 0;
  virtual void flush(std::chrono::milliseconds limit) = 0;
};

std::unique_ptr<HostChannel> make_zmq_host_channel(const RunOptions& options);
std::unique_ptr<CoordinatorChannel> make_zmq_coordinator_channel(const NodeHostOptions& options);
// Need an initialised MpiSession (fedge/sims/mpi.h) in this process; throw
// fedge::Error when fedge was built without MPI.
std::unique_ptr<HostChannel> make_mpi_host_channel();
std::unique_ptr<CoordinatorChannel> make_mpi_coordinator_channel();

// The node host's side of a run over `channel` (run_node_host() and
// run_mpi_node_host() in node_host.h).
void serve_as_node_host(CoordinatorChannel& channel, const NodeHostOptions& options);

}  // namespace fedge::sims::detail
