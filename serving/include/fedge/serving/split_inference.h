// Split inference (paradigm levels 1 and 2): the node runs the embedding and
// layers [0, k); a peer (cloud or edge server) runs layers [k, L), the final
// norm and the LM head, and sends back the logits of the last position.
//
// Wire (docs/SERVING.md): one hiddenStates message per forward step, client
// -> peer {request id, kind activations, layer k, position = tokens already
// sent for this request, shape [steps, hidden]}; peer -> client {kind logits,
// layer L, same position, shape [1, vocab]}. An activations message with
// shape [0, hidden] ends the request (the peer frees its KV cache). The peer
// keeps one KV cache per (client, request id), freed at the end message, after
// session_timeout_ms of silence, or when a message arrives out of order.
// Refusals come back as error messages (overloaded, wrongStage, malformed).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/protocol/transport.h"

namespace fedge::inference {
class Model;
}

namespace fedge::serving {

// The peer failed, refused, or missed a deadline; the caller falls back.
class SplitFailure : public Error {
 public:
  explicit SplitFailure(std::string message) : Error(ErrorKind::kIo, std::move(message)) {}
};

struct SplitPeerOptions {
  std::string endpoint = "tcp://127.0.0.1:*";  // where to bind
  std::optional<protocol::CurveServer> curve;
  protocol::SocketOptions socket;
  int session_timeout_ms = 30000;  // an idle request's KV cache is freed after this
  std::size_t max_sessions = 16;   // concurrent requests (each holds a full-context cache)
  // Simulation/test hook: sleep this long before each reply (a slow link or peer).
  int reply_delay_ms = 0;
};

struct SplitPeerStats {
  std::uint64_t steps = 0, refused = 0, expired = 0;
  std::size_t sessions = 0;  // open now
};

// Serves layers [k, L) of `model` for split clients, in its own thread.
// `model` is borrowed and used only by that thread (its active adapter, if
// any, applies to the peer's layers).
class SplitPeer {
 public:
  SplitPeer(inference::Model& model, SplitPeerOptions options = {});
  ~SplitPeer();  // stop()
  SplitPeer(const SplitPeer&) = delete;
  SplitPeer& operator=(const SplitPeer&) = delete;

  std::string endpoint() const;  // the bound endpoint with its real port
  SplitPeerStats stats() const;
  void stop();  // joins the thread and closes the socket; idempotent

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct SplitOptions {
  std::string peer_endpoint;  // the SplitPeer's endpoint
  int split_layer = 1;        // k: layers [0, k) run on this node (0 < k <= L)
  int prefill_deadline_ms = 2000;  // the prompt's logits must arrive within this
  int token_deadline_ms = 500;     // each later token's logits within this
  // After a failure, requests run locally without trying the peer for this
  // long (so an unreachable peer costs one deadline, not one per request).
  int retry_after_ms = 5000;
  std::optional<protocol::CurveClient> curve;
  protocol::SocketOptions socket;
  protocol::NodeId node_id = 1;  // Envelope::sender
};

struct SplitClientStats {
  std::uint64_t steps = 0, failures = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
};

// The node side. One request at a time (the InferenceService's worker);
// not thread-safe. `model` is borrowed (the service's model).
class SplitClient {
 public:
  SplitClient(inference::Model& model, SplitOptions options);
  ~SplitClient();
  SplitClient(const SplitClient&) = delete;
  SplitClient& operator=(const SplitClient&) = delete;

  const SplitOptions& options() const;
  // False while a recent failure keeps the peer benched (retry_after_ms).
  bool peer_available() const;

  // Starts a request whose tokens fit in `capacity` slots.
  void begin(std::uint64_t request_id, int capacity);
  // Runs `tokens` (first the prompt, then one token per call) through the
  // local layers and the peer; returns the logits [vocab] of the last token.
  // Throws SplitFailure (and benches the peer) on refusal or missed deadline.
  std::vector<float> step(std::span<const std::int32_t> tokens);
  // Ends the request and releases the peer's cache (best effort, no wait).
  void end();

  SplitClientStats stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::serving
