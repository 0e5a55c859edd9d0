#include "fedge/serving/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <sys/socket.h>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedge/common/error.h"
#include "fedge/protocol/transport.h"
#include "fedge/serving/api_keys.h"
#include "fedge/serving/inference_service.h"
#include "fedge/serving/requests.h"

namespace fedge::serving {

using json = nlohmann::json;

namespace {

json error_json(const HttpError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

json fedge_meta(const CompletionResult& r) {
  return json{{"adapter", r.adapter},       {"adapter_version", r.adapter_version},
              {"split", r.split},           {"fell_back_to_local", r.fell_back_to_local},
              {"note", r.note},             {"queue_seconds", r.queue_seconds},
              {"run_seconds", r.run_seconds}};
}

json usage_json(const CompletionResult& r) {
  return json{{"prompt_tokens", r.prompt_tokens},
              {"completion_tokens", r.completion_tokens},
              {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

// The adapter slots this server names: local only when the service exposes it.
std::vector<AdapterSlot> served_slots(const InferenceService& service) {
  if (service.options().expose_local_adapter) return {AdapterSlot::kGlobal, AdapterSlot::kLocal};
  return {AdapterSlot::kGlobal};
}

// Text pieces from the service's worker to the HTTP thread that streams them,
// so a slow client never holds up the worker.
struct Channel {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::string> pieces;
  std::atomic<bool> cancelled{false};
};

}  // namespace

struct HttpServer::Impl {
  InferenceService& service;
  HttpOptions options;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::atomic<std::uint64_t> next_id{1};
  std::time_t started = std::time(nullptr);
  std::mutex provider_mutex;
  std::function<std::map<std::string, std::string>()> status_provider;

  Impl(InferenceService& s, HttpOptions o) : service(s), options(std::move(o)) {}
  void routes();
  void guarded(const httplib::Request& req, httplib::Response& res,
               const std::function<void(const json&)>& body_handler);
  void complete(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, bool chat, const std::string& id, const std::string& model,
              std::shared_ptr<Channel> channel, std::shared_ptr<std::future<CompletionResult>> future);
  json health(const httplib::Request& req);
  json models();
  bool authorized(const httplib::Request& req) const;
  httplib::Server::HandlerResponse refuse_unauthorized(const httplib::Request& req, httplib::Response& res) const;
  std::string new_id(bool chat) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s-%016llx", chat ? "chatcmpl" : "cmpl",
                  static_cast<unsigned long long>(next_id.fetch_add(1)));
    return buf;
  }
};

void HttpServer::Impl::guarded(const httplib::Request& req, httplib::Response& res,
                               const std::function<void(const json&)>& body_handler) {
  try {
    body_handler(parse_json_body(req.body));
  } catch (const HttpError& e) {
    send_json(res, e.status, error_json(e));
  } catch (const AdapterNotExposed& e) {
    send_json(res, 403, error_json(HttpError(403, e.what(), e.field(), "invalid_request_error", "adapter_not_exposed")));
  } catch (const InvalidRequest& e) {
    send_json(res, 400, error_json(HttpError(400, e.what(), e.field())));
  } catch (const ServiceOverloaded& e) {
    send_json(res, 503, error_json(HttpError(503, e.what(), "", "overloaded_error", "overloaded")));
  } catch (const Error& e) {
    const int status = e.kind() == ErrorKind::kInvalidInput ? 400 : 500;
    send_json(res, status, error_json(HttpError(status, e.what(), "", status == 400 ? "invalid_request_error" : "server_error")));
  } catch (const std::exception& e) {
    spdlog::error("http: {} {} failed: {}", req.method, req.path, e.what());
    send_json(res, 500, error_json(HttpError(500, std::string("internal error: ") + e.what(), "", "server_error")));
  }
}

void HttpServer::Impl::complete(const httplib::Request& req, httplib::Response& res, bool chat) {
  guarded(req, res, [&](const json& body) {
    const RequestRules rules{service.model_name(), service.options().max_tokens_limit,
                             chat ? options.default_chat_max_tokens : options.default_max_tokens};
    ParsedRequest p = chat ? parse_chat_request(body, rules) : parse_completion_request(body, rules);
    if (chat) p.request.prompt = service.render_chat(p.messages);
    const std::string id = new_id(chat);
    if (p.stream) {
      auto channel = std::make_shared<Channel>();
      OnToken on_token = [channel](std::int32_t, std::string_view text) {
        if (channel->cancelled.load()) return false;
        if (!text.empty()) {
          std::lock_guard lock(channel->mutex);
          channel->pieces.emplace_back(text);
        }
        channel->cv.notify_one();
        return true;
      };
      // Submitted before the headers go out, so a full queue or a bad field
      // is still a plain JSON error with its status.
      auto future = std::make_shared<std::future<CompletionResult>>(service.submit(p.request, std::move(on_token)));
      return stream(res, chat, id, p.model, channel, future);
    }
    CompletionResult r = service.complete(p.request);
    json choice = {{"index", 0}, {"finish_reason", r.finish_reason}};
    if (chat) choice["message"] = {{"role", "assistant"}, {"content", r.text}};
    else {
      choice["text"] = r.text;
      choice["logprobs"] = nullptr;
    }
    send_json(res, 200,
              json{{"id", id},
                   {"object", chat ? "chat.completion" : "text_completion"},
                   {"created", std::time(nullptr)},
                   {"model", p.model},
                   {"choices", json::array({choice})},
                   {"usage", usage_json(r)},
                   {"fedge", fedge_meta(r)}});
  });
}

void HttpServer::Impl::stream(httplib::Response& res, bool chat, const std::string& id, const std::string& model,
                              std::shared_ptr<Channel> channel,
                              std::shared_ptr<std::future<CompletionResult>> future) {
  const std::time_t created = std::time(nullptr);
  auto chunk = [=](const json& choice) {
    return json{{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})}};
  };
  auto piece_choice = [chat](const std::string& text) {
    json c = {{"index", 0}, {"finish_reason", nullptr}};
    if (chat) c["delta"] = {{"content", text}};
    else c["text"] = text;
    return c;
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [=](std::size_t, httplib::DataSink& sink) {
        auto event = [&](const json& j) {
          const std::string line = "data: " + j.dump() + "\n\n";
          if (!sink.write(line.data(), line.size())) {
            channel->cancelled = true;
            return false;
          }
          return true;
        };
        if (chat && !event(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                  {"finish_reason", nullptr}})))
          return false;
        for (;;) {
          std::deque<std::string> pieces;
          bool finished = false;
          {
            std::unique_lock lock(channel->mutex);
            channel->cv.wait_for(lock, std::chrono::milliseconds(10), [&] { return !channel->pieces.empty(); });
            pieces.swap(channel->pieces);
          }
          // The worker pushes every piece before it fulfils the promise.
          if (pieces.empty()) finished = future->wait_for(std::chrono::seconds(0)) == std::future_status::ready;
          for (const auto& text : pieces)
            if (!event(chunk(piece_choice(text)))) return false;
          if (finished) break;
        }
        try {
          CompletionResult r = future->get();
          json last = {{"index", 0}, {"finish_reason", r.finish_reason}};
          if (chat) last["delta"] = json::object();
          else last["text"] = "";
          json final_chunk = chunk(last);
          final_chunk["usage"] = usage_json(r);
          final_chunk["fedge"] = fedge_meta(r);
          if (!event(final_chunk)) return false;
        } catch (const std::exception& e) {
          if (!event(json{{"error", {{"message", e.what()}, {"type", "server_error"}, {"param", nullptr},
                                     {"code", nullptr}}}}))
            return false;
        }
        static const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      });
}

json HttpServer::Impl::models() {
  const std::string& base = service.model_name();
  json data = json::array();
  auto entry = [&](const std::string& id, const std::string& adapter, std::uint64_t version) {
    data.push_back({{"id", id},
                    {"object", "model"},
                    {"created", started},
                    {"owned_by", "fedge"},
                    {"fedge", {{"adapter", adapter}, {"adapter_version", version}}}});
  };
  entry(base, "default", 0);
  for (AdapterSlot slot : served_slots(service)) {
    const AdapterStatus s = service.adapter_status(slot);
    if (s.installed) entry(base + "+" + adapter_slot_name(slot), adapter_slot_name(slot), s.version);
  }
  return json{{"object", "list"}, {"data", data}};
}

bool HttpServer::Impl::authorized(const httplib::Request& req) const {
  return !options.api_keys || options.api_keys->authenticate(req.get_header_value("Authorization")).has_value();
}

// The pre-routing check: runs before httplib reads a body, so a caller
// without a key costs no more than its headers.
httplib::Server::HandlerResponse HttpServer::Impl::refuse_unauthorized(const httplib::Request& req,
                                                                       httplib::Response& res) const {
  if (!options.api_keys || (req.path == "/health" && (req.method == "GET" || req.method == "HEAD")))
    return httplib::Server::HandlerResponse::Unhandled;
  const std::string header = req.get_header_value("Authorization");
  if (auto who = options.api_keys->authenticate(header)) {
    spdlog::debug("http: {} {} by '{}'", req.method, req.path, *who);
    return httplib::Server::HandlerResponse::Unhandled;
  }
  spdlog::debug("http: {} {} from {} refused: {} API key", req.method, req.path, req.remote_addr,
                header.empty() ? "no" : "a wrong");
  res.status = 401;
  res.set_header("WWW-Authenticate", kApiKeyChallenge);
  res.set_content(api_key_refusal_body(!header.empty()), "application/json");
  return httplib::Server::HandlerResponse::Handled;
}

json HttpServer::Impl::health(const httplib::Request& req) {
  // Open to load balancers; the details (model, adapter versions, the round's
  // state) are for key holders.
  if (!authorized(req)) return json{{"status", "ok"}};
  json adapters = json::object();
  for (AdapterSlot slot : served_slots(service)) {
    const AdapterStatus s = service.adapter_status(slot);
    adapters[adapter_slot_name(slot)] = {{"installed", s.installed}, {"version", s.version}};
  }
  const ServiceStats st = service.stats();
  json out = {{"status", "ok"},
              {"model", service.model_name()},
              {"adapters", adapters},
              {"split", service.has_split_client()},
              {"queue", {{"waiting", st.queued}, {"limit", service.options().max_queue}}},
              {"requests",
               {{"completed", st.completed},
                {"failed", st.failed},
                {"rejected", st.rejected},
                {"split", st.split_requests},
                {"fell_back_to_local", st.fallbacks}}}};
  std::function<std::map<std::string, std::string>()> provider;
  {
    std::lock_guard lock(provider_mutex);
    provider = status_provider;
  }
  if (provider) out["node"] = provider();
  return out;
}

void HttpServer::Impl::routes() {
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, false); });
  server.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, true); });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { send_json(res, 200, models()); });
  server.Get("/health", [this](const httplib::Request& req, httplib::Response& res) { send_json(res, 200, health(req)); });
  server.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return refuse_unauthorized(req, res); });
  // httplib's own refusals (no route, body too large) get OpenAI-style bodies.
  server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                       httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    HttpError e{res.status, "", ""};
    if (res.status == 404) e.message = "no route for " + req.method + " " + req.path;
    else if (res.status == 413)
      e.message = "the request body is larger than " + std::to_string(options.max_body_bytes) + " bytes";
    else e.message = "HTTP error " + std::to_string(res.status);
    res.set_content(error_json(e).dump(), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_json(HttpError(500, "internal error: " + what, "", "server_error")));
  });
}

HttpServer::HttpServer(InferenceService& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {
  auto& s = impl_->server;
  const int threads = std::max(1, impl_->options.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(std::size_t(threads)); };
  s.set_payload_max_length(impl_->options.max_body_bytes);
  // Responses go out as headers then body; without TCP_NODELAY, Nagle plus the
  // client's delayed ACK adds ~40 ms to every answer (and streamed chunk).
  s.set_tcp_nodelay(true);
  // httplib closes a keep-alive connection after 5 requests by default; a
  // client racing that close sees a failed request, so allow many more.
  s.set_keep_alive_max_count(1000);
  // httplib's default sets SO_REUSEPORT, which lets a second server share a
  // port that is in use; a node must fail loudly instead. SO_REUSEADDR only
  // allows a restart while old connections linger in TIME_WAIT.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const auto& o = impl_->options;
  if (!o.api_keys && !protocol::is_loopback_host(o.host))
    throw Error(ErrorKind::kInvalidInput,
                "serving HTTP on " + o.host + " without API keys would let anyone who reaches that address use the "
                "model: set serve.api_keys to a key file (docs/SERVING.md, \"API keys\"), or serve on 127.0.0.1");
  impl_->routes();
  if (o.port == 0) {
    impl_->port = s.bind_to_any_port(o.host);
  } else {
    impl_->port = s.bind_to_port(o.host, o.port) ? o.port : -1;
  }
  if (impl_->port <= 0)
    throw Error(ErrorKind::kIo, "cannot listen for HTTP on " + o.host + ":" + std::to_string(o.port) +
                                    " (address in use or not local?)");
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // httplib's stop() does nothing until the listen loop runs: wait for it, so
  // a stop() right after construction cannot leave the thread listening.
  for (int i = 0; i < 5000 && !s.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (o.api_keys)
    spdlog::info("serving: OpenAI-compatible HTTP on {} (API keys: {} from {})", url(), o.api_keys->size(),
                 o.api_keys->origin());
  else spdlog::info("serving: OpenAI-compatible HTTP on {} (no API keys: loopback only)", url());
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  if (impl_->thread.joinable()) {
    impl_->server.stop();
    impl_->thread.join();
  }
}

int HttpServer::port() const { return impl_->port; }

std::string HttpServer::url() const { return "http://" + impl_->options.host + ":" + std::to_string(impl_->port); }

void HttpServer::set_status_provider(std::function<std::map<std::string, std::string>()> provider) {
  std::lock_guard lock(impl_->provider_mutex);
  impl_->status_provider = std::move(provider);
}

}  // namespace fedge::serving
