// The node process: the round client (round_client.h) over a ZeroMQ DEALER
// with CurveZMQ, local training on a worker thread (local_trainer.h) and the
// inference service, which keeps answering while the node trains and swaps in
// each new global adapter without stopping.
//
// Threads: run() is the network loop (the only one touching the socket and the
// round client); one worker thread trains and evaluates on the node's model;
// serving runs on its own threads with a second Model over the same base
// weights (Model::share: one copy of the base, adapters and KV caches of its
// own), so training never blocks an answer.
//
// State directory layout (all of it stays on site):
//   global/                  the latest global adapter (PEFT), served and used
//                            to resume after a restart
//   updates/round_<r>.safetensors   this node's own update of round r, when
//                            save_updates is on (an audit trail for the site)
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>

#include "fedge/common/param_vector.h"
#include "fedge/node/local_trainer.h"
#include "fedge/node/round_client.h"
#include "fedge/protocol/codec.h"
#include "fedge/training/commands.h"

namespace fedge::inference {
struct LoadedModel;  // fedge/inference/generate.h: a base model and its tokenizer
}

namespace fedge::node {

// What the node serves while it trains ([serve] in the node config).
struct ServeSettings {
  std::string http;                 // "host:port" of the OpenAI-compatible API; empty = none
  std::string zmq;                  // endpoint of inference over ZeroMQ; empty = none
  std::size_t max_queue = 16;       // waiting requests before "overloaded"
  int max_batch = 4;                // waiting requests decoded together
  int max_n = 8;                    // most choices ("n") one HTTP request may ask for
  int context = 0;                  // tokens per request (prompt + answer); 0 = the model's context
  std::size_t split_sessions = 16;  // concurrent requests a split peer holds (a full-context cache each)
  std::string split_peer;           // split inference: the peer running the upper layers; empty = off
  int split_layers = 1;             // layers run on this node when split
  std::uint32_t split_deadline_ms = 2000;  // per token; slower = fall back to local
  std::string split_serve;          // bind endpoint to act as the split peer for others; empty = off
  // Who may use them (docs/SERVING.md, "Who may ask"):
  std::filesystem::path api_keys;   // HTTP API key file; empty = no keys, HTTP on loopback only
  bool expose_local_adapter = false;  // serve the local adapter (private data, no clipping or noise)
  std::filesystem::path key;        // CURVE secret key of the ZeroMQ endpoints; empty = node.key
  std::filesystem::path zmq_allow_list;    // client public keys that `zmq` answers
  std::filesystem::path split_allow_list;  // node public keys that `split_serve` answers
  std::filesystem::path split_peer_public_key;  // the split peer's public key
  bool insecure = false;            // plaintext zmq/split links; loopback endpoints only
};

struct NodeRuntimeConfig {
  protocol::NodeId node_id = 1;
  std::string name;                    // default "node-<id>"
  std::string device_profile = "edge";
  std::filesystem::path state_dir = "node-state";
  std::string coordinator = "tcp://127.0.0.1:5555";
  // CURVE: this node's secret key file and the coordinator's public key file.
  std::filesystem::path key_file;
  std::filesystem::path coordinator_public_key;
  bool insecure = false;               // plain TCP (tests on one host only)
  // Malicious-mode secure aggregation ([secagg] in the TOML): this node's
  // Ed25519 key file (PREFIX.sign from 'fedge keygen --signing'), the
  // operator's roster (node id -> Ed25519 public key), and whether to refuse
  // every round that is not secure in malicious mode.
  std::filesystem::path signing_key_file;
  std::filesystem::path roster_file;
  bool require_malicious = false;

  std::string model = "tiny";          // HF directory or "tiny"
  // How the base is held ([model] weights): f32, bf16 or f16 weights stored so
  // in the file are used in place from its memory map; q8_0/q4_0 quantize.
  inference::WeightType model_weights = inference::WeightType::kF32;
  // The node's memory budget in MiB ([node] memory_mb; 0: none): a node whose
  // base, KV cache and training state do not fit refuses to start
  // (memory_budget.h).
  double memory_mb = 0;
  int threads = 0;                     // torch threads for training; 0 = all cores
  // HetLoRA ([train] lora_rank; docs/FEDERATION.md, "Heterogeneous ranks"):
  // the LoRA rank this node trains, below the global's rank R on a device that
  // cannot afford R. It trains the global's first lora_rank ranks and reports
  // its rank in the secure sum (the coordinator sets rank_aggregation =
  // "hetlora" and secure = true). 0: the global's rank.
  int lora_rank = 0;
  training::DataSource train_data;
  std::string eval_path;               // held-out file, same format as train_data
  int seq_len = 128;
  LocalTrainerOptions trainer;
  // [personalization]: the node's own adapter, served in the local slot
  // (local_trainer.h, PersonalizationOptions). Off by default.
  PersonalizationOptions personalization;
  bool save_updates = false;
  bool evaluate_global = true;         // held-out loss of each new global -> Metrics "eval_loss"
  protocol::Limits limits;
  ServeSettings serve;
  // Fault injection for tests: "<message>@<round>" (e.g. "maskedInput@2") makes
  // the process exit abruptly (status 99) instead of sending that message, as a
  // node that loses power mid-round would. Empty: off.
  std::string debug_exit_before;
  // Stop after this many installed global versions beyond the first (0: run
  // until stopped). Lets scripts run a node for a fixed number of rounds.
  std::uint64_t exit_after_versions = 0;
};

// Reads a node config file ([node], [coordinator], [model], [data], [train],
// [limits]; [serve] is read by the serving code); relative paths are taken from
// the file's folder. Errors name file:line and key.
NodeRuntimeConfig read_node_config(const std::filesystem::path& file);

// What a node has done since it started, for GET /metrics (docs/SERVING.md,
// "Metrics"): local training by outcome, steps and time, the last losses, the
// installed global version and the round the node is in.
struct NodeStats {
  std::uint64_t rounds_trained = 0;  // local trainings that produced an update
  std::uint64_t rounds_failed = 0;   // local trainings that failed
  std::uint64_t training_steps = 0;  // optimiser steps of the completed trainings
  double training_seconds = 0;
  double last_train_loss = std::numeric_limits<double>::quiet_NaN();
  double last_eval_loss = std::numeric_limits<double>::quiet_NaN();  // held-out loss of the latest global
  bool has_global = false;
  std::uint64_t global_version = 0;
  std::uint64_t global_installs = 0;  // global adapters installed since start
  std::uint64_t current_round = 0;
  std::uint64_t personal_version = 0;  // the global the personal adapter was last made from (0: none yet)
};

class NodeRuntime {
 public:
  // Loads the model and data, restores the last global adapter from the state
  // directory, connects. Throws fedge::Error naming the file or setting at fault.
  explicit NodeRuntime(NodeRuntimeConfig config);
  ~NodeRuntime();
  NodeRuntime(const NodeRuntime&) = delete;
  NodeRuntime& operator=(const NodeRuntime&) = delete;

  // The base model the node trains on and its tokenizer. Serving shares the
  // weights (inference::Model::share): one copy per node.
  const inference::LoadedModel& base() const;

  // Called (on the network thread) with every newly installed global adapter,
  // e.g. to hot-swap it into the inference service.
  void on_global_installed(std::function<void(const ParamVector& global, std::uint64_t version)> callback);
  // Called (on the network thread) with this node's own adapter after each
  // round's local training (global + its update), e.g. to serve it as "local".
  void on_local_trained(std::function<void(const ParamVector& local, std::uint64_t round)> callback);

  // Runs until stop() (returns 1) or exit_after_versions is reached (returns 0).
  int run();
  void stop() { stop_.store(true); }  // safe from any thread or a signal handler

  const NodeRuntimeConfig& config() const;
  // A snapshot of what the node has done; safe from any thread.
  NodeStats stats() const;
  // The directory holding the latest global adapter (PEFT), empty before the first.
  std::filesystem::path global_adapter_dir() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace fedge::node
