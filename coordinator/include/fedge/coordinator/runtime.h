// The coordinator process: the federation core (federation.h) driven over a
// ZeroMQ ROUTER socket with CurveZMQ, its state kept in the SQLite Store and
// one safetensors adapter per global version. A coordinator killed at any
// point and started again with the same state directory continues from the
// last completed round (Store::recover), neither losing nor repeating a round.
//
// State directory layout:
//   coordinator.db                      the Store (nodes and their key bindings, rounds, metrics, DP)
//   adapters/v<N>/adapter_model.safetensors   global adapter version N (PEFT layout,
//   adapters/v<N>/adapter_config.json         loadable by `fedge generate --adapter`)
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedge/common/config.h"
#include "fedge/coordinator/federation.h"
#include "fedge/protocol/codec.h"

namespace fedge::coordinator {

// How to make the initial adapter when `initial_adapter` does not exist yet
// (done by `fedge coordinator`, which links the model code; the coordinator
// library itself never touches a model).
struct AdapterInit {
  std::string model = "tiny";  // base model directory or "tiny"
  int rank = 8;
  double alpha = 16.0;
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  std::uint64_t seed = 0;
};

struct CoordinatorRuntimeConfig {
  std::string bind = "tcp://127.0.0.1:5555";      // "tcp://127.0.0.1:0" picks a free port
  // CURVE: the coordinator's secret key file (PREFIX.key) and the node allow-list
  // (a line may pin its key's node id: allow_list.h). Both are required unless
  // `insecure` (plain TCP, for tests on one host only; no key is authenticated,
  // so no node id is bound to one).
  std::filesystem::path key_file;
  std::filesystem::path allow_list;
  bool insecure = false;
  std::filesystem::path state_dir = "coordinator-state";
  // The adapter the federation starts from (a PEFT directory); read once, when
  // the state directory has no version yet.
  std::filesystem::path initial_adapter;
  AdapterInit adapter_init;
  protocol::Limits limits;
  // Messages ZeroMQ queues per node, each way ([limits] queue_per_peer): a
  // node sends a handful per round, so a small queue bounds what one node can
  // make the coordinator hold (with each message at most its size cap).
  int queue_per_peer = 16;
  FederationConfig federation;
  // [federation] personalization = "shared-a" (FedSA-LoRA; docs/FEDERATION.md,
  // "Personalization on the node"): the global is the adapter's A matrices
  // only, taken from the initial adapter; each node keeps its own B and runs
  // [personalization] kind = "shared-a". "none" (false): whole adapters.
  bool shared_a = false;
  // After the last round, keep answering this long so the final global model
  // reaches every node before the sockets close.
  std::uint32_t finish_linger_ms = 1500;
  // Where to write the bound endpoint (with the real port) once listening; empty: nowhere.
  std::filesystem::path endpoint_file;
  // [http]: metrics and dashboard (http_api.h). Off while `listen` is empty.
  struct Http {
    std::string listen;               // "host:port"; port 0 picks a free one
    std::filesystem::path api_keys;   // key file (protocol/api_keys.h); required beyond loopback
    std::filesystem::path url_file;   // where to write "http://host:port" once listening; empty: nowhere
  } http;
};

// Reads a coordinator config file ([coordinator], [federation], [limits]);
// relative paths are taken from the file's folder. Unknown keys, wrong types and
// out-of-range values are errors naming file:line and key.
CoordinatorRuntimeConfig read_coordinator_config(const std::filesystem::path& file);
// The [federation] table alone (also used by simulator scenarios).
FederationConfig read_federation_config(const config::Table& table);

class CoordinatorRuntime {
 public:
  // Opens the store (recovering from a crash), loads the latest global adapter
  // and binds the socket. Throws fedge::Error naming the file or setting at fault.
  explicit CoordinatorRuntime(CoordinatorRuntimeConfig config);
  ~CoordinatorRuntime();
  CoordinatorRuntime(const CoordinatorRuntime&) = delete;
  CoordinatorRuntime& operator=(const CoordinatorRuntime&) = delete;

  // Serves until the configured rounds are complete (returns 0) or stop() is
  // called (returns 1: interrupted; the state is consistent either way).
  int run();
  // Safe from another thread or a signal handler.
  void stop() { stop_.store(true); }
  // The bound endpoint with its real port.
  std::string endpoint() const;
  // "http://host:port" of the metrics and dashboard listener; empty when off.
  std::string http_url() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace fedge::coordinator
