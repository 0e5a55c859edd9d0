// An OpenAI-compatible HTTP front for the InferenceService (cpp-httplib):
//   POST /v1/completions        {model, prompt, max_tokens, temperature, top_p, top_k, min_p,
//                                presence_penalty, frequency_penalty, stop, n, seed, logprobs,
//                                stream, stream_options, adapter}
//   POST /v1/chat/completions   {model, messages, ...; logprobs: bool, top_logprobs}; "stream": true -> SSE
//   POST /v1/embeddings         {model, input, encoding_format}: mean-pooled, L2-normalised
//   POST /tokenize, /detokenize, /apply-template   as llama.cpp's server
//   GET  /v1/models             base model plus "<base>+global" / "<base>+local" when installed
//   GET  /health                status, adapter versions, queue, counters
//   GET  /, /site               the site page (serving/web/, built into the binary), with
//        /site.js, /site.css    its script and style; Content-Security-Policy default-src 'self'
//   GET  /metrics               Prometheus text: requests, tokens, queue, adapters (docs/SERVING.md, "Metrics")
// Responses follow OpenAI's JSON with an extra "fedge" object (adapter used,
// adapter_version, split, fell_back_to_local, note). Errors are OpenAI-style
// {"error": {message, type, param, code}}: 400 for bad JSON, wrong types,
// missing fields and out-of-range values (param names the field), 404 for an
// unknown route or model, 413 for a body over max_body_bytes, 503 when the
// service queue is full. See docs/SERVING.md.
//
// API keys (protocol/api_keys.h): with HttpOptions::api_keys set, every request but
// GET /health and GET of the site page's four paths needs `Authorization: Bearer <key>` with a listed key, else 401
// (code invalid_api_key, WWW-Authenticate: Bearer), checked before the body is
// read; /health then answers a caller without a key with {"status": "ok"}
// only. Without keys the server binds loopback addresses only (the
// constructor refuses any other host, naming serve.api_keys). The local
// adapter is listed and served only when the service exposes it
// (ServiceOptions::expose_local_adapter); otherwise a request for it is a 403
// (code adapter_not_exposed).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

namespace fedge::protocol {
class ApiKeys;
}
namespace fedge::prometheus {
class TextWriter;
}

namespace fedge::serving {

using protocol::ApiKeys;
class InferenceService;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: pick a free port (see HttpServer::port())
  std::size_t max_body_bytes = std::size_t{1} << 20;
  int threads = 32;  // connection threads (an open keep-alive connection holds one)
  int default_max_tokens = 16;        // /v1/completions without max_tokens (OpenAI's default)
  int default_chat_max_tokens = 256;  // /v1/chat/completions without max_tokens
  int max_n = 8;                      // most choices (n) one request may ask for
  // Keys a client must send; null: no authentication, loopback hosts only.
  std::shared_ptr<const ApiKeys> api_keys;
};

class HttpServer {
 public:
  // Binds (Error(kIo) if it cannot; Error(kInvalidInput) for a host beyond
  // loopback without api_keys) and starts serving in a background thread.
  // The service must outlive the server.
  HttpServer(InferenceService& service, HttpOptions options = {});
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;         // the bound port
  std::string url() const;  // "http://host:port"
  // Extra "node" fields for /health (e.g. the round client's state); called
  // on HTTP threads, so it must be thread-safe.
  void set_status_provider(std::function<std::map<std::string, std::string>()> provider);
  // More families for GET /metrics (e.g. the node's training figures), added
  // after the service's own; called on HTTP threads, so it must be thread-safe.
  void set_metrics_provider(std::function<void(prometheus::TextWriter&)> provider);
  void stop();  // stops listening, waits for open requests; idempotent

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::serving
