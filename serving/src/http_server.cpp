#include "fedge/serving/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <sodium.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedge/common/error.h"
#include "fedge/common/prometheus.h"
#include "fedge/protocol/transport.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/protocol/http_listener.h"
#include "fedge/serving/inference_service.h"
#include "fedge/serving/requests.h"
#include "fedge/serving/site_assets.h"  // generated from serving/web/ (fedge_embed_files)

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
  // replace: a token of a byte-level model may be a lone byte of a character.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// encoding_format "base64": the floats' little-endian bytes in standard base64,
// as OpenAI sends them.
std::string base64_floats(const std::vector<float>& values) {
  static_assert(std::endian::native == std::endian::little, "base64 embeddings assume a little-endian host");
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  const std::size_t len = values.size() * sizeof(float);
  std::string out(sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes, len, sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

json fedge_meta(const CompletionResult& r) {
  return json{{"adapter", r.adapter},       {"adapter_version", r.adapter_version},
              {"split", r.split},           {"fell_back_to_local", r.fell_back_to_local},
              {"note", r.note},             {"queue_seconds", r.queue_seconds},
              {"run_seconds", r.run_seconds}};
}


// The adapter slots this server names: local only when the service exposes it.
std::vector<AdapterSlot> served_slots(const InferenceService& service) {
  if (service.options().expose_local_adapter) return {AdapterSlot::kGlobal, AdapterSlot::kLocal};
  return {AdapterSlot::kGlobal};
}

// Text pieces (with their choice's index) from the service's worker to the
// HTTP thread that streams them, so a slow client never holds up the worker.
struct Channel {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<int, std::string>> pieces;
  std::atomic<bool> cancelled{false};
};

using Futures = std::vector<std::future<CompletionResult>>;

// Usage of all choices: the prompt once, every choice's tokens.
json usage_json(const std::vector<CompletionResult>& results) {
  int completion = 0;
  for (const auto& r : results) completion += r.completion_tokens;
  const int prompt = results.empty() ? 0 : results.front().prompt_tokens;
  return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

// UTF-8 bytes as the list of numbers OpenAI's logprobs carry.
json byte_list(const std::string& text) {
  json out = json::array();
  for (unsigned char c : text) out.push_back(int(c));
  return out;
}

// A token's text for logprobs: its bytes, with invalid UTF-8 (a byte of a
// character split across tokens) as U+FFFD so the JSON stays valid.
std::string token_text(const inference::Tokenizer& tokenizer, std::int32_t id) {
  // dump() with error_handler_t::replace writes invalid UTF-8 as U+FFFD; read it back.
  const std::string quoted = json(tokenizer.token_bytes(id)).dump(-1, ' ', false, json::error_handler_t::replace);
  return json::parse(quoted).get<std::string>();
}

// Chat's logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}
// for the tokens from `from` on.
json chat_logprobs(const InferenceService& service, const CompletionResult& r, std::size_t from = 0) {
  const auto& tok = service.tokenizer();
  json content = json::array();
  for (std::size_t i = from; i < r.logprobs.size(); ++i) {
    const LogprobEntry& e = r.logprobs[i];
    json top = json::array();
    for (const TokenLogprob& t : e.top) {
      const std::string text = tok.token_bytes(t.token);
      top.push_back({{"token", token_text(tok, t.token)}, {"logprob", t.logprob}, {"bytes", byte_list(text)}});
    }
    content.push_back({{"token", token_text(tok, e.chosen.token)},
                       {"logprob", e.chosen.logprob},
                       {"bytes", byte_list(tok.token_bytes(e.chosen.token))},
                       {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

// The legacy completions form: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}.
json completion_logprobs(const InferenceService& service, const CompletionResult& r, std::size_t from = 0) {
  const auto& tok = service.tokenizer();
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (std::size_t i = from; i < r.logprobs.size(); ++i) {
    const LogprobEntry& e = r.logprobs[i];
    tokens.push_back(token_text(tok, e.chosen.token));
    values.push_back(e.chosen.logprob);
    json top = json::object();
    for (const TokenLogprob& t : e.top) top[token_text(tok, t.token)] = t.logprob;
    tops.push_back(top);
    offsets.push_back(r.text_offsets[i]);
  }
  return json{{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// The site page (serving/web/, built into the binary): the page at / and
// /site, its script and style beside it. Static and the same for everyone, so
// served without a key: the key is asked for by the page and sent by its
// script to the API.
struct SiteAsset {
  const char* path;
  const char* content_type;
  std::string_view body;
};
constexpr SiteAsset kSiteAssets[] = {
    {"/", "text/html; charset=utf-8", site::site_html},
    {"/site", "text/html; charset=utf-8", site::site_html},
    {"/site.js", "text/javascript; charset=utf-8", site::site_js},
    {"/site.css", "text/css; charset=utf-8", site::site_css},
};

// Only this origin's own script, style and API: no inline script, nothing
// from elsewhere, no framing. The page draws its charts as SVG in the DOM.
constexpr const char* kSiteContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SiteAsset* site_asset(const httplib::Request& req) {
  if (req.method != "GET" && req.method != "HEAD") return nullptr;
  for (const SiteAsset& asset : kSiteAssets)
    if (req.path == asset.path) return &asset;
  return nullptr;
}

void send_site_asset(const SiteAsset& asset, httplib::Response& res) {
  res.set_header("Content-Security-Policy", kSiteContentSecurityPolicy);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  // Revalidated on each load, so a node upgraded in place serves its new page.
  res.set_header("Cache-Control", "no-cache");
  res.set_content(asset.body.data(), asset.body.size(), asset.content_type);
}

}  // namespace

struct HttpServer::Impl {
  InferenceService& service;
  HttpOptions options;
  protocol::HttpListener http;
  httplib::Server& server;
  std::atomic<std::uint64_t> next_id{1};
  std::time_t started = std::time(nullptr);
  std::mutex provider_mutex;
  std::function<std::map<std::string, std::string>()> status_provider;
  std::function<void(prometheus::TextWriter&)> metrics_provider;  // guarded by provider_mutex

  Impl(InferenceService& s, HttpOptions o, protocol::HttpListenerOptions listener)
      : service(s), options(std::move(o)), http(std::move(listener)), server(http.server()) {}
  void routes();
  void guarded(const httplib::Request& req, httplib::Response& res,
               const std::function<void(const json&)>& body_handler);
  void complete(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, bool chat, const std::string& id, const ParsedRequest& request,
              std::shared_ptr<Channel> channel, std::shared_ptr<Futures> futures);
  void embeddings(const httplib::Request& req, httplib::Response& res);
  void tokenize(const httplib::Request& req, httplib::Response& res);
  void detokenize(const httplib::Request& req, httplib::Response& res);
  void apply_template(const httplib::Request& req, httplib::Response& res);
  json health(const httplib::Request& req);
  std::string metrics();
  json models();
  bool authorized(const httplib::Request& req) const { return http.authorized(req); }
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
                             chat ? options.default_chat_max_tokens : options.default_max_tokens, options.max_n};
    ParsedRequest p = chat ? parse_chat_request(body, rules) : parse_completion_request(body, rules);
    if (chat) p.request.prompt = service.render_chat(p.messages);
    const std::string id = new_id(chat);
    // The n choices: the same request, each with its own random stream.
    std::vector<CompletionRequest> choices(std::size_t(p.n), p.request);
    for (int i = 0; i < p.n; ++i) choices[std::size_t(i)].seed = choice_seed(p.request.seed, i);
    if (p.stream) {
      auto channel = std::make_shared<Channel>();
      std::vector<OnToken> callbacks;
      for (int i = 0; i < p.n; ++i)
        callbacks.push_back([channel, i](std::int32_t, std::string_view text) {
          if (channel->cancelled.load()) return false;
          if (!text.empty()) {
            std::lock_guard lock(channel->mutex);
            channel->pieces.emplace_back(i, std::string(text));
          }
          channel->cv.notify_one();
          return true;
        });
      // Submitted before the headers go out, so a full queue or a bad field
      // is still a plain JSON error with its status.
      auto futures = std::make_shared<Futures>(service.submit_all(std::move(choices), std::move(callbacks)));
      return stream(res, chat, id, p, channel, futures);
    }
    Futures futures = service.submit_all(std::move(choices));
    std::vector<CompletionResult> results;
    for (auto& f : futures) results.push_back(f.get());
    json choice_list = json::array();
    for (std::size_t i = 0; i < results.size(); ++i) {
      const CompletionResult& r = results[i];
      json choice = {{"index", i}, {"finish_reason", r.finish_reason}, {"logprobs", nullptr}};
      if (chat) choice["message"] = {{"role", "assistant"}, {"content", r.text}};
      else choice["text"] = r.text;
      if (p.request.logprobs >= 0)
        choice["logprobs"] = chat ? chat_logprobs(service, r) : completion_logprobs(service, r);
      choice_list.push_back(choice);
    }
    send_json(res, 200,
              json{{"id", id},
                   {"object", chat ? "chat.completion" : "text_completion"},
                   {"created", std::time(nullptr)},
                   {"model", p.model},
                   {"choices", choice_list},
                   {"usage", usage_json(results)},
                   {"fedge", fedge_meta(results.front())}});
  });
}

void HttpServer::Impl::stream(httplib::Response& res, bool chat, const std::string& id, const ParsedRequest& request,
                              std::shared_ptr<Channel> channel, std::shared_ptr<Futures> futures) {
  const std::time_t created = std::time(nullptr);
  const std::string model = request.model;
  const int n = request.n;
  const bool include_usage = request.include_usage;
  const int logprobs = request.request.logprobs;
  auto chunk = [=](const json& choices) {
    return json{{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", choices}};
  };
  auto piece_choice = [chat](int index, const std::string& text) {
    json c = {{"index", index}, {"finish_reason", nullptr}};
    if (chat) c["delta"] = {{"content", text}};
    else c["text"] = text;
    return c;
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [=, this](std::size_t, httplib::DataSink& sink) {
        auto event = [&](const json& j) {
          const std::string line = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
          if (!sink.write(line.data(), line.size())) {
            channel->cancelled = true;
            return false;
          }
          return true;
        };
        if (chat)
          for (int i = 0; i < n; ++i)
            if (!event(chunk(json::array(
                    {{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}}}))))
              return false;
        auto all_ready = [&] {
          for (auto& f : *futures)
            if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
          return true;
        };
        for (;;) {
          std::deque<std::pair<int, std::string>> pieces;
          bool finished = false;
          {
            std::unique_lock lock(channel->mutex);
            channel->cv.wait_for(lock, std::chrono::milliseconds(10), [&] { return !channel->pieces.empty(); });
            pieces.swap(channel->pieces);
          }
          // The worker pushes every piece before it fulfils the promise.
          if (pieces.empty()) finished = all_ready();
          for (const auto& [index, text] : pieces)
            if (!event(chunk(json::array({piece_choice(index, text)})))) return false;
          if (finished) break;
        }
        try {
          std::vector<CompletionResult> results;
          for (auto& f : *futures) results.push_back(f.get());
          for (int i = 0; i < n; ++i) {
            const CompletionResult& r = results[std::size_t(i)];
            json last = {{"index", i}, {"finish_reason", r.finish_reason}};
            if (chat) last["delta"] = json::object();
            else last["text"] = "";
            // Log-probabilities come with the last chunk of each choice, for
            // all its tokens (the text went out before, held back by stop strings).
            if (logprobs >= 0) last["logprobs"] = chat ? chat_logprobs(service, r) : completion_logprobs(service, r);
            json final_chunk = chunk(json::array({last}));
            if (i == n - 1) final_chunk["usage"] = usage_json(results);
            final_chunk["fedge"] = fedge_meta(r);
            if (!event(final_chunk)) return false;
          }
          if (include_usage) {
            json usage_chunk = chunk(json::array());
            usage_chunk["usage"] = usage_json(results);
            if (!event(usage_chunk)) return false;
          }
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

void HttpServer::Impl::embeddings(const httplib::Request& req, httplib::Response& res) {
  guarded(req, res, [&](const json& body) {
    const RequestRules rules{service.model_name(), service.options().max_tokens_limit, options.default_max_tokens,
                             options.max_n};
    EmbeddingRequest e = parse_embedding_request(body, rules);
    EmbeddingResult r = service.embed(e.inputs, e.adapter).get();
    json data = json::array();
    for (std::size_t i = 0; i < r.vectors.size(); ++i) {
      json item = {{"object", "embedding"}, {"index", i}};
      if (e.base64) item["embedding"] = base64_floats(r.vectors[i]);
      else item["embedding"] = r.vectors[i];
      data.push_back(item);
    }
    send_json(res, 200,
              json{{"object", "list"},
                   {"data", data},
                   {"model", e.model},
                   {"usage", {{"prompt_tokens", r.prompt_tokens}, {"total_tokens", r.prompt_tokens}}},
                   {"fedge", {{"adapter", r.adapter}, {"adapter_version", r.adapter_version},
                              {"pooling", "mean"}, {"normalized", true}, {"run_seconds", r.run_seconds}}}});
  });
}

void HttpServer::Impl::tokenize(const httplib::Request& req, httplib::Response& res) {
  guarded(req, res, [&](const json& body) {
    const TokenizeRequest t = parse_tokenize_request(body);
    send_json(res, 200, json{{"tokens", service.tokenizer().encode(t.content, t.add_special)}});
  });
}

void HttpServer::Impl::detokenize(const httplib::Request& req, httplib::Response& res) {
  guarded(req, res, [&](const json& body) {
    const auto ids = parse_detokenize_request(body, service.tokenizer().vocab_size());
    send_json(res, 200, json{{"content", service.tokenizer().decode(ids)}});
  });
}

void HttpServer::Impl::apply_template(const httplib::Request& req, httplib::Response& res) {
  guarded(req, res, [&](const json& body) {
    send_json(res, 200, json{{"prompt", service.render_chat(parse_template_request(body))}});
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

// GET /metrics: the service's counters in Prometheus' text format, then
// whatever the metrics provider adds (the node's training figures).
std::string HttpServer::Impl::metrics() {
  const ServiceStats st = service.stats();
  prometheus::TextWriter w;
  w.counter("fedge_inference_requests_total", "Inference requests (completions, chats, embeddings) by outcome; "
            "rejected: refused because the queue was full.",
            {{{{"outcome", "completed"}}, double(st.completed)},
             {{{"outcome", "failed"}}, double(st.failed)},
             {{{"outcome", "rejected"}}, double(st.rejected)}});
  w.counter("fedge_inference_split_requests_total", "Completions a split peer took part in.", double(st.split_requests));
  w.counter("fedge_inference_split_fallbacks_total", "Split completions finished locally after the peer failed.",
            double(st.fallbacks));
  w.counter("fedge_inference_batches_total", "Worker runs that decoded several requests together.", double(st.batches));
  w.counter("fedge_inference_prompt_tokens_total", "Prompt tokens of completed completions.", double(st.prompt_tokens));
  w.counter("fedge_inference_generated_tokens_total", "Tokens generated by completed completions.",
            double(st.completion_tokens));
  w.counter("fedge_inference_queue_seconds_total", "Seconds completed completions waited in the queue (summed).",
            st.queue_seconds);
  w.counter("fedge_inference_run_seconds_total", "Seconds completed completions ran (summed; batched requests overlap).",
            st.run_seconds);
  w.gauge("fedge_inference_tokens_per_second",
          "Decode speed of the last completed completion (its tokens over its run time); "
          "rate(fedge_inference_generated_tokens_total[1m]) gives the node's throughput.",
          st.last_tokens_per_second);
  w.gauge("fedge_inference_queue_length", "Requests waiting for the worker now.", double(st.queued));
  w.gauge("fedge_inference_queue_limit", "Most requests that may wait (serve.max_queue).",
          double(service.options().max_queue));
  std::vector<prometheus::Sample> installed, versions;
  for (AdapterSlot slot : served_slots(service)) {
    const AdapterStatus a = service.adapter_status(slot);
    const prometheus::Labels slot_label{{"slot", adapter_slot_name(slot)}};
    installed.push_back({slot_label, a.installed ? 1.0 : 0.0});
    versions.push_back({slot_label, double(a.version)});
  }
  w.gauge("fedge_adapter_installed", "1 when the adapter slot (global, local) is installed for serving.", installed);
  w.gauge("fedge_adapter_version", "Version of the adapter served in each slot (global: the federation's version; "
          "local: the round it was trained in, or with [personalization] the global it was made from).", versions);
  std::function<void(prometheus::TextWriter&)> provider;
  {
    std::lock_guard lock(provider_mutex);
    provider = metrics_provider;
  }
  if (provider) provider(w);
  return w.text();
}

void HttpServer::Impl::routes() {
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, false); });
  server.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, true); });
  server.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
  server.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) { tokenize(req, res); });
  server.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) { detokenize(req, res); });
  server.Post("/apply-template",
              [this](const httplib::Request& req, httplib::Response& res) { apply_template(req, res); });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { send_json(res, 200, models()); });
  server.Get("/health", [this](const httplib::Request& req, httplib::Response& res) { send_json(res, 200, health(req)); });
  // httplib's patterns are regular expressions, hence the escaped dots.
  server.Get(R"(/|/site|/site\.js|/site\.css)", [](const httplib::Request& req, httplib::Response& res) {
    if (const SiteAsset* asset = site_asset(req)) send_site_asset(*asset, res);
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), prometheus::kContentType);
  });
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

namespace {

// Open without a key: /health (load balancers) and the site page's files,
// which hold no data (the page asks for a key and sends it with each request).
bool open_without_key(const httplib::Request& req) {
  return (req.path == "/health" && (req.method == "GET" || req.method == "HEAD")) || site_asset(req);
}

protocol::HttpListenerOptions listener_options(const HttpOptions& o) {
  if (!o.api_keys && !protocol::is_loopback_host(o.host))
    throw Error(ErrorKind::kInvalidInput,
                "serving HTTP on " + o.host + " without API keys would let anyone who reaches that address use the "
                "model: set serve.api_keys to a key file (docs/SERVING.md, \"API keys\"), or serve on 127.0.0.1");
  protocol::HttpListenerOptions l;
  l.host = o.host;
  l.port = o.port;
  l.threads = o.threads;
  l.max_body_bytes = o.max_body_bytes;
  l.api_keys = o.api_keys;
  l.open_without_key = open_without_key;
  l.log_name = "http";
  return l;
}

}  // namespace

HttpServer::HttpServer(InferenceService& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, options, listener_options(options))) {
  impl_->routes();
  impl_->http.start("serve.http");
  const auto& o = impl_->options;
  if (o.api_keys)
    spdlog::info("serving: OpenAI-compatible HTTP on {} (API keys: {} from {})", url(), o.api_keys->size(),
                 o.api_keys->origin());
  else spdlog::info("serving: OpenAI-compatible HTTP on {} (no API keys: loopback only)", url());
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() { impl_->http.stop(); }

int HttpServer::port() const { return impl_->http.port(); }

std::string HttpServer::url() const { return impl_->http.url(); }

void HttpServer::set_metrics_provider(std::function<void(prometheus::TextWriter&)> provider) {
  std::lock_guard lock(impl_->provider_mutex);
  impl_->metrics_provider = std::move(provider);
}

void HttpServer::set_status_provider(std::function<std::map<std::string, std::string>()> provider) {
  std::lock_guard lock(impl_->provider_mutex);
  impl_->status_provider = std::move(provider);
}

}  // namespace fedge::serving
