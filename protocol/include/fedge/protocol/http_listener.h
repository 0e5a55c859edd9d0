// The part of an HTTP endpoint that the node's OpenAI-compatible API
// (serving/http_server.h) and the coordinator's metrics and dashboard
// (coordinator/http_api.h) share: a cpp-httplib server bound to one address,
// served on threads of its own, with API keys (api_keys.h) checked before
// httplib reads a request body. Callers add their routes to server() and then
// start().
#pragma once

#include <httplib.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "fedge/protocol/api_keys.h"

namespace fedge::protocol {

struct HttpListenerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port, port() says which
  int threads = 4;
  std::size_t max_body_bytes = 4096;
  // Null: every request is served (the callers allow this on loopback only).
  std::shared_ptr<const ApiKeys> api_keys;
  // Requests served without a key (pages and /health that hold no data).
  std::function<bool(const httplib::Request&)> open_without_key;
  std::string log_name = "http";  // prefix of the debug lines on accepted and refused requests
};

class HttpListener {
 public:
  // Configures the server: TCP_NODELAY (without it Nagle and the client's
  // delayed ACK add ~40 ms to every answer), long keep-alive, SO_REUSEADDR
  // but not httplib's default SO_REUSEPORT (a second server must not share a
  // port in use), and the API-key check as the pre-routing handler.
  explicit HttpListener(HttpListenerOptions options);
  ~HttpListener();  // stop()
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  httplib::Server& server() { return server_; }

  // Binds host:port and serves on a thread of its own; returns once the
  // listen loop runs. Throws Error(kIo) naming `setting` (the config key that
  // chose the address) when it cannot bind.
  void start(const std::string& setting);
  void stop();  // idempotent

  int port() const { return port_; }
  std::string url() const;  // "http://host:port"
  // True when the request carries a listed key, or no keys are configured.
  bool authorized(const httplib::Request& req) const;

 private:
  httplib::Server::HandlerResponse refuse_unauthorized(const httplib::Request& req, httplib::Response& res) const;

  HttpListenerOptions options_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fedge::protocol
