#include "fedge/serving/split_inference.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "fedge/inference/model.h"

namespace fedge::serving {

using inference::KVCache;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

protocol::Bytes encode_hidden(protocol::NodeId sender, std::uint64_t request_id, protocol::HiddenKind kind,
                              std::uint32_t layer, std::uint32_t position, std::vector<std::uint64_t> shape,
                              std::span<const float> data) {
  protocol::HiddenStates h;
  h.request_id = request_id;
  h.kind = kind;
  h.layer = layer;
  h.position = position;
  h.shape = std::move(shape);
  h.data = protocol::Payload<float>::borrow(data);
  protocol::Envelope env;
  env.sender = sender;
  env.body = std::move(h);
  return protocol::encode(env);
}

protocol::Bytes encode_error(protocol::ErrorCode code, const std::string& message, std::uint16_t in_reply_to) {
  protocol::Envelope env;
  env.body = protocol::ErrorReply{code, message, in_reply_to};
  return protocol::encode(env);
}

constexpr std::uint16_t kHiddenIndex = 17;  // Body index of hiddenStates

}  // namespace

// ---------------- peer ----------------

struct SplitPeer::Impl {
  inference::Model& model;
  SplitPeerOptions options;
  protocol::Context context;
  std::unique_ptr<protocol::Router> router;
  std::thread thread;
  std::atomic<bool> stopping{false};
  mutable std::mutex stats_mutex;
  SplitPeerStats stats;

  struct Session {
    KVCache cache;
    std::uint32_t first_layer = 0;
    clock_type::time_point last;
  };
  std::map<std::pair<std::string, std::uint64_t>, Session> sessions;  // thread only

  Impl(inference::Model& m, SplitPeerOptions o) : model(m), options(std::move(o)) {}
  void loop();
  void handle(const protocol::Incoming& in);
  void expire();
  void refuse(const std::string& peer, protocol::ErrorCode code, const std::string& message);
  void publish_sessions() {
    std::lock_guard lock(stats_mutex);
    stats.sessions = sessions.size();
  }
};

void SplitPeer::Impl::loop() {
  while (!stopping.load()) {
    std::optional<protocol::Incoming> in;
    try {
      in = router->recv(50ms);
    } catch (const std::exception& e) {
      spdlog::warn("split peer: receive failed: {}", e.what());
      continue;
    }
    expire();
    if (in) handle(*in);
    publish_sessions();
  }
}

void SplitPeer::Impl::expire() {
  const auto now = clock_type::now();
  const auto timeout = std::chrono::milliseconds(options.session_timeout_ms);
  for (auto it = sessions.begin(); it != sessions.end();) {
    if (now - it->second.last > timeout) {
      spdlog::info("split peer: request {} idle for {} ms; freeing its cache", it->first.second,
                   options.session_timeout_ms);
      it = sessions.erase(it);
      std::lock_guard lock(stats_mutex);
      ++stats.expired;
    } else {
      ++it;
    }
  }
}

void SplitPeer::Impl::refuse(const std::string& peer, protocol::ErrorCode code, const std::string& message) {
  spdlog::warn("split peer: refused a message: {}", message);
  {
    std::lock_guard lock(stats_mutex);
    ++stats.refused;
  }
  try {
    router->send(peer, encode_error(code, "split peer: " + message, kHiddenIndex));
  } catch (const std::exception& e) {
    spdlog::debug("split peer: could not send the refusal: {}", e.what());
  }
}

void SplitPeer::Impl::handle(const protocol::Incoming& in) {
  const inference::ModelConfig& c = model.config();
  protocol::Envelope env;
  try {
    env = protocol::decode(in.payload, options.socket.limits);
  } catch (const protocol::DecodeError& e) {
    return refuse(in.peer, e.code(), e.what());
  }
  const auto* hs = std::get_if<protocol::HiddenStates>(&env.body);
  if (!hs || hs->kind != protocol::HiddenKind::kActivations)
    return refuse(in.peer, protocol::ErrorCode::kUnsupported,
                  std::string("expects hiddenStates activations, got ") + protocol::body_name(env.body));
  if (hs->shape.size() != 2 || hs->shape[1] != std::uint64_t(c.hidden_size))
    return refuse(in.peer, protocol::ErrorCode::kMalformed,
                  "hiddenStates.shape must be [steps, " + std::to_string(c.hidden_size) + "]");
  const auto key = std::make_pair(in.peer, hs->request_id);
  const std::uint64_t steps = hs->shape[0];
  if (steps == 0) {  // end of the request
    sessions.erase(key);
    return;
  }
  if (hs->layer > std::uint32_t(c.num_layers))
    return refuse(in.peer, protocol::ErrorCode::kMalformed,
                  "hiddenStates.layer " + std::to_string(hs->layer) + " is beyond the model's " +
                      std::to_string(c.num_layers) + " layers");
  const std::uint64_t context = std::uint64_t(c.context_length());
  if (hs->position + steps > context) {
    sessions.erase(key);
    return refuse(in.peer, protocol::ErrorCode::kMalformed,
                  "request " + std::to_string(hs->request_id) + " would exceed the context of " +
                      std::to_string(context) + " tokens");
  }
  auto it = sessions.find(key);
  if (hs->position == 0) {
    if (it != sessions.end()) sessions.erase(it);
    if (sessions.size() >= options.max_sessions)
      return refuse(in.peer, protocol::ErrorCode::kOverloaded,
                    "all " + std::to_string(options.max_sessions) + " split sessions are busy");
    Session s{model.make_cache(1, int(context), int(hs->layer), c.num_layers), hs->layer, clock_type::now()};
    it = sessions.emplace(key, std::move(s)).first;
  } else if (it == sessions.end()) {
    return refuse(in.peer, protocol::ErrorCode::kWrongStage,
                  "request " + std::to_string(hs->request_id) +
                      " has no open session here (ended or expired); start again at position 0");
  } else if (std::uint64_t(it->second.cache.length()) != hs->position || it->second.first_layer != hs->layer) {
    const std::string expected = std::to_string(it->second.cache.length());
    sessions.erase(it);
    return refuse(in.peer, protocol::ErrorCode::kWrongStage,
                  "request " + std::to_string(hs->request_id) + " sent position " + std::to_string(hs->position) +
                      ", expected " + expected + "; session dropped");
  }
  Session& s = it->second;
  s.last = clock_type::now();
  if (options.reply_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options.reply_delay_ms));
  std::vector<float> hidden = hs->data.to_vector();
  if (s.first_layer < std::uint32_t(c.num_layers))
    model.forward_layers(hidden, {}, 1, int(steps), int(s.first_layer), c.num_layers, s.cache);
  else
    s.cache.append({}, int(steps));  // positions still advance with no layers here
  const std::size_t H = std::size_t(c.hidden_size);
  std::vector<float> logits =
      model.logits(std::span<const float>(hidden).subspan((steps - 1) * H, H), 1);
  {
    std::lock_guard lock(stats_mutex);
    ++stats.steps;
  }
  try {
    router->send(in.peer, encode_hidden(0, hs->request_id, protocol::HiddenKind::kLogits, std::uint32_t(c.num_layers),
                                        hs->position, {1, std::uint64_t(c.vocab_size)}, logits));
  } catch (const std::exception& e) {
    spdlog::warn("split peer: could not reply to request {}: {}", hs->request_id, e.what());
  }
}

SplitPeer::SplitPeer(inference::Model& model, SplitPeerOptions options)
    : impl_(std::make_unique<Impl>(model, std::move(options))) {
  impl_->router = std::make_unique<protocol::Router>(impl_->context, impl_->options.endpoint, impl_->options.socket,
                                                     impl_->options.curve);
  impl_->thread = std::thread([this] { impl_->loop(); });
}

SplitPeer::~SplitPeer() { stop(); }

void SplitPeer::stop() {
  impl_->stopping = true;
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->sessions.clear();
  impl_->router.reset();
}

std::string SplitPeer::endpoint() const { return impl_->router ? impl_->router->endpoint() : std::string(); }

SplitPeerStats SplitPeer::stats() const {
  std::lock_guard lock(impl_->stats_mutex);
  return impl_->stats;
}

// ---------------- client ----------------

struct SplitClient::Impl {
  inference::Model& model;
  SplitOptions options;
  protocol::Context context;
  std::unique_ptr<protocol::Dealer> dealer;
  std::optional<KVCache> cache;
  bool active = false;
  std::uint64_t request_id = 0;
  std::uint32_t position = 0;
  clock_type::time_point benched_until{};
  SplitClientStats stats;

  Impl(inference::Model& m, SplitOptions o) : model(m), options(std::move(o)) {}

  [[noreturn]] void fail(const std::string& message) {
    ++stats.failures;
    benched_until = clock_type::now() + std::chrono::milliseconds(options.retry_after_ms);
    throw SplitFailure(message);
  }
  std::vector<float> await_logits(clock_type::time_point deadline, int deadline_ms);
};

std::vector<float> SplitClient::Impl::await_logits(clock_type::time_point deadline, int deadline_ms) {
  const int vocab = model.config().vocab_size;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    std::optional<protocol::Bytes> reply;
    if (left.count() > 0) reply = dealer->recv(left);
    if (!reply)
      fail("peer " + options.peer_endpoint + " did not answer within " + std::to_string(deadline_ms) + " ms");
    stats.bytes_received += reply->size();
    protocol::Envelope env;
    try {
      env = protocol::decode(*reply, options.socket.limits);
    } catch (const protocol::DecodeError& e) {
      fail("peer " + options.peer_endpoint + " sent a malformed reply: " + e.what());
    }
    if (const auto* err = std::get_if<protocol::ErrorReply>(&env.body))
      fail("peer " + options.peer_endpoint + " refused: " + err->message);
    const auto* hs = std::get_if<protocol::HiddenStates>(&env.body);
    // Anything else is a late answer to an earlier, abandoned request.
    if (!hs || hs->kind != protocol::HiddenKind::kLogits || hs->request_id != request_id || hs->position != position)
      continue;
    if (hs->shape.size() != 2 || hs->shape[0] != 1 || hs->shape[1] != std::uint64_t(vocab))
      fail("peer " + options.peer_endpoint + " sent logits of the wrong shape (expected [1, " +
           std::to_string(vocab) + "])");
    return hs->data.to_vector();
  }
}

SplitClient::SplitClient(inference::Model& model, SplitOptions options)
    : impl_(std::make_unique<Impl>(model, std::move(options))) {
  const SplitOptions& o = impl_->options;
  const int layers = model.config().num_layers;
  if (o.split_layer < 0 || o.split_layer > layers)
    throw Error(ErrorKind::kInvalidInput, "split_layer " + std::to_string(o.split_layer) + " is outside 0.." +
                                              std::to_string(layers) + " (the model's layer count)");
  if (o.peer_endpoint.empty()) throw Error(ErrorKind::kInvalidInput, "split inference needs a peer endpoint");
  if (o.prefill_deadline_ms <= 0 || o.token_deadline_ms <= 0)
    throw Error(ErrorKind::kInvalidInput, "split deadlines must be positive milliseconds");
  protocol::SocketOptions socket = o.socket;
  // A send that cannot be queued must not outlast the deadline either.
  socket.send_timeout_ms = std::min(socket.send_timeout_ms, o.token_deadline_ms);
  impl_->dealer = std::make_unique<protocol::Dealer>(impl_->context, o.peer_endpoint, socket, o.curve);
}

SplitClient::~SplitClient() {
  try {
    end();
  } catch (...) {
  }
}

const SplitOptions& SplitClient::options() const { return impl_->options; }

bool SplitClient::peer_available() const { return clock_type::now() >= impl_->benched_until; }

void SplitClient::begin(std::uint64_t request_id, int capacity) {
  if (impl_->active) end();
  const int k = impl_->options.split_layer;
  impl_->cache.emplace(impl_->model.make_cache(1, capacity, 0, k));
  impl_->request_id = request_id;
  impl_->position = 0;
  impl_->active = true;
}

std::vector<float> SplitClient::step(std::span<const std::int32_t> tokens) {
  if (!impl_->active) throw Error(ErrorKind::kRuntime, "SplitClient::step called outside begin()/end()");
  auto& m = impl_->model;
  const int k = impl_->options.split_layer, steps = int(tokens.size()), H = m.config().hidden_size;
  std::vector<float> hidden = m.embed(tokens);
  if (k > 0) m.forward_layers(hidden, {}, 1, steps, 0, k, *impl_->cache);
  const int deadline_ms = impl_->position == 0 ? impl_->options.prefill_deadline_ms : impl_->options.token_deadline_ms;
  const auto deadline = clock_type::now() + std::chrono::milliseconds(deadline_ms);
  const auto bytes = encode_hidden(impl_->options.node_id, impl_->request_id, protocol::HiddenKind::kActivations,
                                   std::uint32_t(k), impl_->position, {std::uint64_t(steps), std::uint64_t(H)}, hidden);
  try {
    impl_->dealer->send(bytes);
  } catch (const Error& e) {
    impl_->fail("could not send to peer " + impl_->options.peer_endpoint + ": " + e.what());
  }
  impl_->stats.bytes_sent += bytes.size();
  std::vector<float> logits = impl_->await_logits(deadline, deadline_ms);
  impl_->position += std::uint32_t(steps);
  ++impl_->stats.steps;
  return logits;
}

void SplitClient::end() {
  if (!impl_->active) return;
  impl_->active = false;
  impl_->cache.reset();
  const int H = impl_->model.config().hidden_size;
  try {
    impl_->dealer->send(encode_hidden(impl_->options.node_id, impl_->request_id, protocol::HiddenKind::kActivations,
                                      std::uint32_t(impl_->options.split_layer), impl_->position,
                                      {0, std::uint64_t(H)}, {}));
  } catch (const std::exception& e) {
    spdlog::debug("split client: could not release request {} on the peer: {}", impl_->request_id, e.what());
  }
}

SplitClientStats SplitClient::stats() const { return impl_->stats; }

}  // namespace fedge::serving
