// The coordinator's HTTP listener (cpp-httplib), read-only:
//   GET /metrics       Prometheus text (Telemetry::prometheus_text)
//   GET /api/status    JSON for the dashboard (Telemetry::status_json)
//   GET / , /dashboard the dashboard page (HTML, CSS and JS built into the binary)
//   GET /health        {"status": "ok"}
// Off unless the config's [http] listen is set (docs/FEDERATION.md, "Metrics
// and dashboard"). With API keys (protocol/api_keys.h, the config's
// http.api_keys) /metrics and /api/status need `Authorization: Bearer <key>`
// (else 401); the page itself and /health are open, since they hold no data
// (the page asks for a key and sends it with each request). Without keys the
// listener binds loopback addresses only.
#pragma once

#include <memory>
#include <string>

namespace fedge::protocol {
class ApiKeys;
}

namespace fedge::coordinator {

class Telemetry;

class HttpApi {
 public:
  // Binds `listen` ("host:port"; port 0 picks a free one) and serves on
  // threads of its own. Throws Error(kInvalidInput) for a bad `listen` or a
  // host beyond loopback without keys (naming http.api_keys), Error(kIo) when
  // it cannot bind. `telemetry` must outlive the listener.
  HttpApi(const Telemetry& telemetry, const std::string& listen, std::shared_ptr<const protocol::ApiKeys> keys);
  ~HttpApi();  // stop()
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  int port() const;
  std::string url() const;  // "http://host:port"
  void stop();              // idempotent

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The dashboard page served at GET / (coordinator/web/dashboard.html).
const std::string& dashboard_html();

}  // namespace fedge::coordinator
