// ZeroMQ transport: a Router (coordinator side, binds) and Dealers (nodes,
// connect). Framing: a Dealer sends each message as ONE frame holding the
// encoded Envelope; the Router sees [peer routing id][payload] and replies the
// same way. No empty delimiter frame (no REQ/REP compatibility is needed).
// Anything else that arrives (more or fewer frames) is dropped and counted.
//
// CurveZMQ: a Router given server keys runs a ZAP handler thread on
// inproc://zeromq.zap.01 of its Context that admits only allow-listed client
// public keys; the admitted key (Z85) comes back with each message as user_id.
// One curve Router per Context (the ZAP endpoint is per context).
//
// Lifetime: destroy Routers and Dealers before their Context. Sockets close with
// linger 0, so nothing queued delays shutdown. Not thread-safe: one thread per socket.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

#include "fedge/protocol/codec.h"
#include "fedge/protocol/keys.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace fedge::protocol {

class Context {
 public:
  explicit Context(int io_threads = 1);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  zmq::context_t& native() { return *ctx_; }

 private:
  std::unique_ptr<zmq::context_t> ctx_;
};

struct SocketOptions {
  Limits limits;                  // max_message_bytes becomes ZMQ_MAXMSGSIZE
  int handshake_ms = 5000;        // ZMQ_HANDSHAKE_IVL: a peer stuck in the handshake is dropped
  int send_timeout_ms = 5000;     // ZMQ_SNDTIMEO: a send that cannot be queued fails with kIo
  int high_water_mark = 1000;     // messages queued per peer, each direction
};

struct CurveServer {
  CurveKeyPair keys;                          // the coordinator's pair
  std::vector<std::string> allowed_clients;   // Z85 public keys of the nodes
};

struct CurveClient {
  CurveKeyPair keys;               // the node's pair
  std::string server_public_z85;   // the coordinator's public key
};

// Whether `host` names this machine only: 127.0.0.0/8, ::1 (with or without
// brackets) or "localhost". Used to allow plaintext and key-less serving on
// loopback only; anything else (0.0.0.0, *, a name, an interface) is not.
bool is_loopback_host(std::string_view host);
// "host:port" (an HTTP listener's setting) -> (host, port); port 0 picks a
// free one. Throws Error(kInvalidInput) naming `what` (the setting).
std::pair<std::string, int> parse_host_port(const std::string& text, const std::string& what);
// Whether a ZeroMQ endpoint stays on this machine: ipc:// and inproc://, or
// tcp:// to/from a loopback host ("tcp://127.0.0.1:5560", "tcp://[::1]:*").
bool is_loopback_endpoint(std::string_view endpoint);

struct Incoming {
  std::string peer;     // routing id to reply to
  std::string user_id;  // the client's Z85 public key under CURVE, else empty
  Bytes payload;
};

class ZapHandler;

class Router {
 public:
  // Binds `endpoint` (e.g. "tcp://127.0.0.1:*", "ipc:///run/fedge.sock",
  // "inproc://coordinator"). Throws Error(kIo) if it cannot bind,
  // Error(kInvalidInput) for malformed keys.
  Router(Context& ctx, const std::string& endpoint, const SocketOptions& options = {},
         std::optional<CurveServer> curve = std::nullopt);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // The bound endpoint with the real port (ZMQ_LAST_ENDPOINT).
  std::string endpoint() const;
  // Throws Error(kNotFound) if `peer` is not connected, Error(kIo) on send timeout.
  void send(const std::string& peer, const Bytes& payload);
  // Waits up to `timeout` for one well-framed message.
  std::optional<Incoming> recv(std::chrono::milliseconds timeout);
  // Allow-list changes take effect for the next handshake (CURVE only).
  void allow(const std::string& public_z85);
  void revoke(const std::string& public_z85);
  std::size_t dropped_frames() const { return dropped_; }
  zmq::socket_t& socket() { return *socket_; }

 private:
  std::unique_ptr<ZapHandler> zap_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::size_t dropped_ = 0;
};

class Dealer {
 public:
  // Connects (asynchronously: the call returns before the peer is reached).
  // `routing_id` (optional) is how the Router will name this peer.
  Dealer(Context& ctx, const std::string& endpoint, const SocketOptions& options = {},
         std::optional<CurveClient> curve = std::nullopt, const std::string& routing_id = {});
  ~Dealer();
  Dealer(const Dealer&) = delete;
  Dealer& operator=(const Dealer&) = delete;

  // Queues one message; throws Error(kIo) if it cannot within the send timeout.
  void send(const Bytes& payload);
  std::optional<Bytes> recv(std::chrono::milliseconds timeout);
  std::size_t dropped_frames() const { return dropped_; }
  zmq::socket_t& socket() { return *socket_; }

 private:
  std::unique_ptr<zmq::socket_t> socket_;
  std::size_t dropped_ = 0;
};

}  // namespace fedge::protocol
