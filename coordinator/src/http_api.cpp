#include "fedge/coordinator/http_api.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "fedge/common/clock.h"
#include "fedge/common/error.h"
#include "fedge/common/prometheus.h"
#include "fedge/coordinator/telemetry.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/protocol/http_listener.h"
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
  protocol::HttpListener http;

  Impl(const Telemetry& t, protocol::HttpListenerOptions options) : telemetry(t), http(std::move(options)) {}

  void routes() {
    httplib::Server& server = http.server();
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
    server.set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          if (res.status == 404) send_error(res, 404, "no route for " + req.method + " " + req.path, "not_found");
          else send_error(res, res.status, "HTTP error " + std::to_string(res.status), "http_error");
          return httplib::Server::HandlerResponse::Handled;
        }));
  }
};

namespace {

protocol::HttpListenerOptions listener_options(const std::string& listen,
                                               std::shared_ptr<const protocol::ApiKeys> keys) {
  auto [host, port] = protocol::parse_host_port(listen, "http.listen");
  if (!keys && !protocol::is_loopback_host(host))
    throw Error(ErrorKind::kInvalidInput,
                "http.listen = \"" + listen + "\" is beyond loopback but http.api_keys is not set: anyone reaching it "
                "could read the federation's state. Name a key file in http.api_keys (docs/FEDERATION.md, "
                "\"Metrics and dashboard\"), or listen on 127.0.0.1");
  protocol::HttpListenerOptions o;
  o.host = host;
  o.port = port;
  o.threads = 4;
  o.max_body_bytes = 4096;  // every route is a GET: no body is read
  o.api_keys = std::move(keys);
  o.open_without_key = open_path;
  o.log_name = "coordinator http";
  return o;
}

}  // namespace

HttpApi::HttpApi(const Telemetry& telemetry, const std::string& listen, std::shared_ptr<const protocol::ApiKeys> keys)
    : impl_(std::make_unique<Impl>(telemetry, listener_options(listen, keys))) {
  impl_->routes();
  impl_->http.start("http.listen");
  if (keys)
    spdlog::info("coordinator: metrics and dashboard on {} (API keys: {} from {})", url(), keys->size(),
                 keys->origin());
  else spdlog::info("coordinator: metrics and dashboard on {} (no API keys: loopback only)", url());
}

HttpApi::~HttpApi() { stop(); }

void HttpApi::stop() { impl_->http.stop(); }

int HttpApi::port() const { return impl_->http.port(); }
std::string HttpApi::url() const { return impl_->http.url(); }

const std::string& dashboard_html() {
  static const std::string page(web::dashboard_html);
  return page;
}

}  // namespace fedge::coordinator
