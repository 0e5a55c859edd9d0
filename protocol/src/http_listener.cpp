#include "fedge/protocol/http_listener.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>

#include "fedge/common/error.h"

namespace fedge::protocol {

HttpListener::HttpListener(HttpListenerOptions options) : options_(std::move(options)) {
  const auto threads = static_cast<std::size_t>(std::max(1, options_.threads));
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_payload_max_length(options_.max_body_bytes);
  server_.set_tcp_nodelay(true);
  // httplib closes a keep-alive connection after 5 requests by default; a
  // client racing that close sees a failed request.
  server_.set_keep_alive_max_count(1000);
  server_.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return refuse_unauthorized(req, res); });
}

HttpListener::~HttpListener() { stop(); }

void HttpListener::start(const std::string& setting) {
  const std::string& host = options_.host;
  port_ = options_.port == 0 ? server_.bind_to_any_port(host)
                             : (server_.bind_to_port(host, options_.port) ? options_.port : -1);
  if (port_ <= 0)
    throw Error(ErrorKind::kIo, setting + ": cannot listen for HTTP on " + host + ":" + std::to_string(options_.port) +
                                    " (address in use or not local?)");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // httplib's stop() does nothing until the listen loop runs: wait for it, so
  // a stop() right after start() cannot leave the thread listening.
  for (int i = 0; i < 5000 && !server_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void HttpListener::stop() {
  if (thread_.joinable()) {
    server_.stop();
    thread_.join();
  }
}

std::string HttpListener::url() const { return "http://" + options_.host + ":" + std::to_string(port_); }

bool HttpListener::authorized(const httplib::Request& req) const {
  return !options_.api_keys || options_.api_keys->authenticate(req.get_header_value("Authorization")).has_value();
}

// Runs before httplib reads a body, so a caller without a key costs no more
// than its headers.
httplib::Server::HandlerResponse HttpListener::refuse_unauthorized(const httplib::Request& req,
                                                                   httplib::Response& res) const {
  const ApiKeys* keys = options_.api_keys.get();
  if (!keys || (options_.open_without_key && options_.open_without_key(req)))
    return httplib::Server::HandlerResponse::Unhandled;
  const std::string header = req.get_header_value("Authorization");
  if (auto who = keys->authenticate(header)) {
    spdlog::debug("{}: {} {} by '{}'", options_.log_name, req.method, req.path, *who);
    return httplib::Server::HandlerResponse::Unhandled;
  }
  spdlog::debug("{}: {} {} from {} refused: {} API key", options_.log_name, req.method, req.path, req.remote_addr,
                header.empty() ? "no" : "a wrong");
  res.status = 401;
  res.set_header("WWW-Authenticate", kApiKeyChallenge);
  res.set_content(api_key_refusal_body(!header.empty(), keys->setting()), "application/json");
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace fedge::protocol
