#include "fedge/serving/zmq_inference.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <deque>
#include <future>
#include <list>
#include <mutex>
#include <thread>

#include "fedge/serving/inference_service.h"

namespace fedge::serving {

using namespace std::chrono_literals;

namespace {

constexpr std::uint16_t kInferenceRequestIndex = 14;  // Body index of inferenceRequest

protocol::Bytes envelope_bytes(protocol::Body body) {
  protocol::Envelope env;
  env.body = std::move(body);
  return protocol::encode(env);
}

protocol::FinishReason finish_of(const std::string& reason) {
  return reason == "length" ? protocol::FinishReason::kLength : protocol::FinishReason::kStop;
}

AdapterChoice choice_of(protocol::AdapterChoice a) {
  switch (a) {
    case protocol::AdapterChoice::kGlobal: return AdapterChoice::kGlobal;
    case protocol::AdapterChoice::kLocal: return AdapterChoice::kLocal;
    case protocol::AdapterChoice::kNone: return AdapterChoice::kNone;
  }
  return AdapterChoice::kNone;
}

// Messages produced on the service's worker thread, sent by the server thread
// (a ZeroMQ socket belongs to one thread).
struct Outbox {
  std::mutex mutex;
  std::deque<std::pair<std::string, protocol::Bytes>> items;
  void push(const std::string& peer, protocol::Bytes bytes) {
    std::lock_guard lock(mutex);
    items.emplace_back(peer, std::move(bytes));
  }
  std::deque<std::pair<std::string, protocol::Bytes>> take() {
    std::lock_guard lock(mutex);
    std::deque<std::pair<std::string, protocol::Bytes>> out;
    out.swap(items);
    return out;
  }
};

struct InFlight {
  std::string peer;
  std::uint64_t request_id = 0;
  bool stream = false;
  std::shared_ptr<std::uint32_t> chunks;  // tokenChunks sent so far
  std::future<CompletionResult> future;
};

}  // namespace

struct ZmqInferenceServer::Impl {
  InferenceService& service;
  ZmqServerOptions options;
  protocol::Context context;
  std::unique_ptr<protocol::Router> router;
  std::thread thread;
  std::atomic<bool> stopping{false};
  Outbox outbox;
  std::list<InFlight> in_flight;

  Impl(InferenceService& s, ZmqServerOptions o) : service(s), options(std::move(o)) {}
  void loop();
  void handle(const protocol::Incoming& in);
  void finish(InFlight& f);
  void flush();
  void send(const std::string& peer, const protocol::Bytes& bytes) {
    try {
      router->send(peer, bytes);
    } catch (const std::exception& e) {
      spdlog::warn("zmq inference: could not send to a client: {}", e.what());
    }
  }
  void refuse(const std::string& peer, protocol::ErrorCode code, const std::string& message) {
    spdlog::warn("zmq inference: refused a request: {}", message);
    send(peer, envelope_bytes(protocol::ErrorReply{code, message, kInferenceRequestIndex}));
  }
  void settle(bool wait);
};

void ZmqInferenceServer::Impl::flush() {
  for (auto& [peer, bytes] : outbox.take()) send(peer, bytes);
}

// Sends the answers of finished requests; with `wait`, of all of them.
void ZmqInferenceServer::Impl::settle(bool wait) {
  std::vector<std::list<InFlight>::iterator> ready;
  for (auto it = in_flight.begin(); it != in_flight.end(); ++it)
    if (wait || it->future.wait_for(0s) == std::future_status::ready) ready.push_back(it);
  if (wait)
    for (auto it : ready) it->future.wait();
  flush();  // token chunks of the finished requests go before their answers
  for (auto it : ready) {
    finish(*it);
    in_flight.erase(it);
  }
}

void ZmqInferenceServer::Impl::finish(InFlight& f) {
  try {
    CompletionResult r = f.future.get();
    if (f.stream) {
      protocol::TokenChunk last;
      last.request_id = f.request_id;
      last.index = *f.chunks;
      last.last = true;
      last.finish = finish_of(r.finish_reason);
      send(f.peer, envelope_bytes(last));
    }
    protocol::InferenceResponse resp;
    resp.request_id = f.request_id;
    resp.text = std::move(r.text);
    resp.prompt_tokens = std::uint32_t(r.prompt_tokens);
    resp.completion_tokens = std::uint32_t(r.completion_tokens);
    resp.finish = finish_of(r.finish_reason);
    resp.fell_back_to_local = r.fell_back_to_local;
    resp.note = std::move(r.note);
    send(f.peer, envelope_bytes(std::move(resp)));
  } catch (const InvalidRequest& e) {
    refuse(f.peer, protocol::ErrorCode::kMalformed, std::string("inferenceRequest.") + e.what());
  } catch (const std::exception& e) {
    refuse(f.peer, protocol::ErrorCode::kInternal, std::string("inference failed: ") + e.what());
  }
}

void ZmqInferenceServer::Impl::handle(const protocol::Incoming& in) {
  protocol::Envelope env;
  try {
    env = protocol::decode(in.payload, options.socket.limits);
  } catch (const protocol::DecodeError& e) {
    return refuse(in.peer, e.code(), e.what());
  }
  const auto* req = std::get_if<protocol::InferenceRequest>(&env.body);
  if (!req)
    return refuse(in.peer, protocol::ErrorCode::kUnsupported,
                  std::string("this endpoint serves inferenceRequest only, not ") + protocol::body_name(env.body));
  CompletionRequest c;
  c.prompt = req->prompt;
  c.max_tokens = req->max_tokens == 0 ? 16 : int(std::min<std::uint32_t>(req->max_tokens, 1u << 30));
  c.temperature = req->temperature;
  c.top_p = req->top_p == 0 ? 1.0f : req->top_p;
  c.seed = req->seed;
  c.adapter = choice_of(req->adapter);
  InFlight f;
  f.peer = in.peer;
  f.request_id = req->request_id;
  f.stream = req->stream;
  f.chunks = std::make_shared<std::uint32_t>(0);
  OnToken on_token;
  if (f.stream) {
    on_token = [this, peer = in.peer, id = req->request_id, chunks = f.chunks](std::int32_t token,
                                                                                std::string_view text) {
      protocol::TokenChunk chunk;
      chunk.request_id = id;
      chunk.index = (*chunks)++;
      chunk.token_id = token < 0 ? 0 : std::uint32_t(token);
      chunk.text = std::string(text);
      outbox.push(peer, envelope_bytes(std::move(chunk)));
      return true;
    };
  }
  try {
    f.future = service.submit(std::move(c), std::move(on_token));
  } catch (const ServiceOverloaded& e) {
    return refuse(in.peer, protocol::ErrorCode::kOverloaded, e.what());
  } catch (const InvalidRequest& e) {
    return refuse(in.peer, protocol::ErrorCode::kMalformed, std::string("inferenceRequest.") + e.what());
  } catch (const std::exception& e) {
    return refuse(in.peer, protocol::ErrorCode::kInternal, e.what());
  }
  in_flight.push_back(std::move(f));
}

void ZmqInferenceServer::Impl::loop() {
  while (!stopping.load()) {
    std::optional<protocol::Incoming> in;
    try {
      // Poll briefly while requests run, so their tokens go out promptly.
      in = router->recv(in_flight.empty() ? 50ms : 1ms);
    } catch (const std::exception& e) {
      spdlog::warn("zmq inference: receive failed: {}", e.what());
    }
    if (in) handle(*in);
    settle(false);
    flush();
  }
  settle(true);
}

ZmqInferenceServer::ZmqInferenceServer(InferenceService& service, ZmqServerOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {
  impl_->router = std::make_unique<protocol::Router>(impl_->context, impl_->options.endpoint, impl_->options.socket,
                                                     impl_->options.curve);
  impl_->thread = std::thread([this] { impl_->loop(); });
}

ZmqInferenceServer::~ZmqInferenceServer() { stop(); }

void ZmqInferenceServer::stop() {
  impl_->stopping = true;
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->router.reset();
}

std::string ZmqInferenceServer::endpoint() const { return impl_->router ? impl_->router->endpoint() : std::string(); }

// ---------------- client ----------------

ZmqInferenceClient::ZmqInferenceClient(const std::string& endpoint, std::optional<protocol::CurveClient> curve,
                                       protocol::NodeId sender, protocol::SocketOptions socket)
    : context_(std::make_unique<protocol::Context>()), sender_(sender), limits_(socket.limits) {
  dealer_ = std::make_unique<protocol::Dealer>(*context_, endpoint, socket, std::move(curve));
}

ZmqInferenceClient::~ZmqInferenceClient() {
  dealer_.reset();  // sockets before their context
}

protocol::InferenceResponse ZmqInferenceClient::complete(
    const protocol::InferenceRequest& request, const std::function<void(const protocol::TokenChunk&)>& on_chunk,
    std::chrono::milliseconds timeout) {
  protocol::Envelope env;
  env.sender = sender_;
  env.body = request;
  dealer_->send(protocol::encode(env));
  for (;;) {
    auto bytes = dealer_->recv(timeout);
    if (!bytes)
      throw Error(ErrorKind::kIo, "inference server sent nothing for request " + std::to_string(request.request_id) +
                                      " within " + std::to_string(timeout.count()) + " ms");
    protocol::Envelope reply = protocol::decode(*bytes, limits_);
    if (const auto* err = std::get_if<protocol::ErrorReply>(&reply.body))
      throw Error(ErrorKind::kProtocol, "inference server refused request " + std::to_string(request.request_id) +
                                            ": " + err->message);
    if (const auto* chunk = std::get_if<protocol::TokenChunk>(&reply.body)) {
      if (chunk->request_id == request.request_id && on_chunk) on_chunk(*chunk);
      continue;
    }
    if (const auto* resp = std::get_if<protocol::InferenceResponse>(&reply.body))
      if (resp->request_id == request.request_id) return *resp;
  }
}

}  // namespace fedge::serving
