#include "fedge/coordinator/http_api.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedge/common/clock.h"
#include "fedge/common/error.h"
#include "fedge/common/prometheus.h"
#include "fedge/coordinator/telemetry.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/protocol/transport.h"
#include "fedge/coordinator/dashboard_assets.h"  // generated from coordinator/web/dashboard.html

namespace fedge::coordinator {
namespace {

// Paths open without a key: they hold no federation data.
bool open_path(const httplib::Request& req) {
  if (req.method != "GET" && req.method != "HEAD") return false;
  return req.path == "/" || req.path == "/dashboard" || req.path == "/health";
}

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& code) {
  res.status = status;
  const nlohmann::json body = {
      {"error", {{"message", message}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", code}}}};
  res.set_content(body.dump(), "application/json");
}

}  // namespace

struct HttpApi::Impl {
  const Telemetry& telemetry;
  std::shared_ptr<const protocol::ApiKeys> keys;
  std::string host;
  int port = 0;
  httplib::Server server;
  std::thread thread;

  Impl(const Telemetry& t, std::shared_ptr<const protocol::ApiKeys> k) : telemetry(t), keys(std::move(k)) {}

  httplib::Server::HandlerResponse refuse_unauthorized(const httplib::Request& req, httplib::Response& res) const {
    if (!keys || open_path(req)) return httplib::Server::HandlerResponse::Unhandled;
    const std::string header = req.get_header_value("Authorization");
    if (auto who = keys->authenticate(header)) {
      spdlog::debug("coordinator http: {} {} by '{}'", req.method, req.path, *who);
      return httplib::Server::HandlerResponse::Unhandled;
    }
    spdlog::debug("coordinator http: {} {} from {} refused: {} API key", req.method, req.path, req.remote_addr,
                  header.empty() ? "no" : "a wrong");
    res.status = 401;
    res.set_header("WWW-Authenticate", protocol::kApiKeyChallenge);
    res.set_content(protocol::api_key_refusal_body(!header.empty(), keys->setting()), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }

  void routes() {
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(telemetry.prometheus_text(), prometheus::kContentType);
    });
    server.Get("/api/status", [this](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content(telemetry.status_json(unix_ms()), "application/json");
    });
    const auto page = [](const httplib::Request&, httplib::Response& res) {
      // The page loads nothing from elsewhere: say so to the browser too.
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                     "connect-src 'self'; img-src 'self' data:");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(dashboard_html(), "text/html; charset=utf-8");
    };
    server.Get("/", page);
    server.Get("/dashboard", page);
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status": "ok"})", "application/json");
    });
    server.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) { return refuse_unauthorized(req, res); });
    server.set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          if (res.status == 404) send_error(res, 404, "no route for " + req.method + " " + req.path, "not_found");
          else send_error(res, res.status, "HTTP error " + std::to_string(res.status), "http_error");
          return httplib::Server::HandlerResponse::Handled;
        }));
  }
};

HttpApi::HttpApi(const Telemetry& telemetry, const std::string& listen, std::shared_ptr<const protocol::ApiKeys> keys)
    : impl_(std::make_unique<Impl>(telemetry, std::move(keys))) {
  auto [host, port] = protocol::parse_host_port(listen, "http.listen");
  impl_->host = host;
  if (!impl_->keys && !protocol::is_loopback_host(host))
    throw Error(ErrorKind::kInvalidInput,
                "http.listen = \"" + listen + "\" is beyond loopback but http.api_keys is not set: anyone reaching it "
                "could read the federation's state. Name a key file in http.api_keys (docs/FEDERATION.md, "
                "\"Metrics and dashboard\"), or listen on 127.0.0.1");
  auto& s = impl_->server;
  s.new_task_queue = [] { return new httplib::ThreadPool(4); };
  s.set_payload_max_length(4096);  // every route is a GET: no body is read
  s.set_tcp_nodelay(true);
  // As the node's server: SO_REUSEADDR only, so a second coordinator cannot share the port.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  impl_->routes();
  impl_->port = port == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, port) ? port : -1);
  if (impl_->port <= 0)
    throw Error(ErrorKind::kIo, "http.listen: cannot listen on " + listen + " (address in use or not local?)");
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // httplib's stop() does nothing until the listen loop runs.
  for (int i = 0; i < 5000 && !s.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (impl_->keys)
    spdlog::info("coordinator: metrics and dashboard on {} (API keys: {} from {})", url(), impl_->keys->size(),
                 impl_->keys->origin());
  else spdlog::info("coordinator: metrics and dashboard on {} (no API keys: loopback only)", url());
}

HttpApi::~HttpApi() { stop(); }

void HttpApi::stop() {
  if (impl_->thread.joinable()) {
    impl_->server.stop();
    impl_->thread.join();
  }
}

int HttpApi::port() const { return impl_->port; }
std::string HttpApi::url() const { return "http://" + impl_->host + ":" + std::to_string(impl_->port); }

const std::string& dashboard_html() {
  static const std::string page(web::dashboard_html);
  return page;
}

}  // namespace fedge::coordinator
