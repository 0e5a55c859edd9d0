// What a node serves while it trains ([serve] in the node config): the
// inference service on its own Model over the node's base weights (shared), the OpenAI-compatible HTTP
// API, inference over ZeroMQ, split inference against a peer (levels 1/2) and,
// optionally, the peer role for other nodes. `fedge node` builds one and feeds
// it every new global adapter (NodeRuntime::on_global_installed) and the
// node's own latest adapter (on_local_trained).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fedge/common/param_vector.h"
#include "fedge/common/prometheus.h"
#include "fedge/node/runtime.h"
#include "fedge/protocol/transport.h"

namespace fedge::node {

class NodeServing {
 public:
  // Serves over `base`'s weights (shared, not copied: the node's one base)
  // with its tokenizer; `base` must outlive this. Null: loads a base as
  // `config` asks.
  // Installs the last global adapter found in the state directory (so a
  // restarted node serves it at once) and starts every configured endpoint.
  // Throws fedge::Error naming the setting at fault.
  explicit NodeServing(const NodeRuntimeConfig& config, const inference::LoadedModel* base = nullptr);
  ~NodeServing();  // stops the endpoints, then the service
  NodeServing(const NodeServing&) = delete;
  NodeServing& operator=(const NodeServing&) = delete;

  void install_global(const ParamVector& params, std::uint64_t version);
  void install_local(const ParamVector& params, std::uint64_t version);

  // Adds families to GET /metrics after the serving ones (the node's
  // training figures: write_node_metrics); called on HTTP threads.
  void set_metrics_provider(std::function<void(prometheus::TextWriter&)> provider);

  std::string http_url() const;      // empty without HTTP
  std::string zmq_endpoint() const;  // empty without ZeroMQ inference
  std::string split_peer_endpoint() const;  // empty unless this node is a split peer
  // The serving Model (its weights are the base's; the worker thread runs it).
  const inference::Model& model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The node's training figures (NodeStats) as Prometheus families
// (fedge_training_*, fedge_node_*; docs/SERVING.md, "Metrics").
void write_node_metrics(const NodeStats& stats, prometheus::TextWriter& out);

// "host:port" -> (host, port): protocol/transport.h's.
using protocol::parse_host_port;

}  // namespace fedge::node
