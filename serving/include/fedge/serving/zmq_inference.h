// The inference service over ZeroMQ: a client sends an inferenceRequest; the
// server answers (when stream is set) with one tokenChunk per generated token,
// a last tokenChunk {last = true, finish reason, any held-back text}, then one
// inferenceResponse with the whole text. A refused request gets one error
// message (malformed, tooLarge, overloaded, unsupported) instead.
//
// Wire fields: max_tokens 0 means 16; top_p 0 means 1 (off); adapter global,
// local or none (the request's choice is exact: no default resolution, since
// the enum has no "default").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "fedge/protocol/transport.h"

namespace fedge::serving {

class InferenceService;

struct ZmqServerOptions {
  std::string endpoint = "tcp://127.0.0.1:*";
  std::optional<protocol::CurveServer> curve;  // CurveZMQ with an allow-list
  protocol::SocketOptions socket;
};

// Runs a Router in its own thread and feeds the service. The service must
// outlive the server.
class ZmqInferenceServer {
 public:
  ZmqInferenceServer(InferenceService& service, ZmqServerOptions options = {});
  ~ZmqInferenceServer();  // stop()
  ZmqInferenceServer(const ZmqInferenceServer&) = delete;
  ZmqInferenceServer& operator=(const ZmqInferenceServer&) = delete;

  std::string endpoint() const;  // bound endpoint with the real port
  // Stops receiving, waits for requests in flight to finish (their answers
  // are sent), then closes the socket. Idempotent.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A client for one server; one request at a time, not thread-safe.
class ZmqInferenceClient {
 public:
  ZmqInferenceClient(const std::string& endpoint, std::optional<protocol::CurveClient> curve = std::nullopt,
                     protocol::NodeId sender = 1, protocol::SocketOptions socket = {});
  ~ZmqInferenceClient();
  ZmqInferenceClient(const ZmqInferenceClient&) = delete;
  ZmqInferenceClient& operator=(const ZmqInferenceClient&) = delete;

  // Sends `request` and waits for its inferenceResponse (tokenChunks go to
  // on_chunk). Throws Error(kIo) when nothing arrives within `timeout` of the
  // last message, Error(kProtocol) with the server's text on an error reply.
  protocol::InferenceResponse complete(const protocol::InferenceRequest& request,
                                       const std::function<void(const protocol::TokenChunk&)>& on_chunk = {},
                                       std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  std::unique_ptr<protocol::Context> context_;
  std::unique_ptr<protocol::Dealer> dealer_;
  protocol::NodeId sender_;
  protocol::Limits limits_;
};

}  // namespace fedge::serving
