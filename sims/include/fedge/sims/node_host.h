// A node host: one process of a simulation spread over several processes or
// machines. It connects to the simulation's coordinator process (`fedge sim
// SCENARIO --node-hosts H --bind tcp://*:7000`), receives the scenario and its
// block of virtual nodes from it, builds the same data split and base model,
// and runs its nodes' side of levels 4-6 in the coordinator's lock-step
// windows of simulated time (docs/SIMULATOR.md, "Across machines").
#pragma once

#include <functional>
#include <string>

namespace fedge::sims {

struct NodeHostOptions {
  std::string connect;       // the coordinator's endpoint, e.g. "tcp://10.0.0.5:7000"
  std::string name;          // for the coordinator's logs (default: host name and pid)
  int threads = 0;           // libtorch threads (0: the coordinator's --threads)
  double wait_s = 3600;      // longest wait for the coordinator's next message
  std::function<void(const std::string&)> progress;  // default: spdlog
};

// Runs until the coordinator ends the run. Throws fedge::Error when the run
// fails here or at the coordinator (after telling the other side why).
void run_node_host(const NodeHostOptions& options);

// The same as rank 1.. of an MPI job whose rank 0 runs the scenario with
// RunOptions::mpi (fedge/sims/mpi.h); options.connect is not used. Needs an
// MpiSession in this process.
void run_mpi_node_host(const NodeHostOptions& options);

}  // namespace fedge::sims
