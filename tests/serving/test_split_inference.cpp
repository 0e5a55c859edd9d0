// Split inference: layers [0, k) on the node, [k, L) + head on a peer over
// ZeroMQ. Tokens equal full local inference; a stopped or slow peer makes the
// request finish locally with fell_back_to_local and a note; the peer refuses
// out-of-order and malformed messages and frees caches.
#include <chrono>
#include <thread>

#include "fedge/inference/generate.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/inference_service.h"
#include "fedge/serving/split_inference.h"
#include "fedge/protocol/codec.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using inference::Model;
using inference::Tokenizer;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kSeed = 23;

std::vector<std::int32_t> local_tokens(const std::string& prompt, int max_tokens) {
  auto model = Model::tiny(kSeed);
  auto tok = Tokenizer::byte_level_tiny();
  inference::SamplingOptions o;
  o.max_tokens = max_tokens;
  return inference::generate(model, {tok.encode(prompt, true)}, o, &tok).at(0).tokens;
}

CompletionRequest request(const std::string& prompt, int max_tokens) {
  CompletionRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  return r;
}

// Deadlines only bound how long a missing peer is waited for; a test that
// expects the peer to answer uses long ones, so a loaded machine cannot turn
// a slow answer into a fallback.
SplitOptions split_options(const std::string& endpoint, int k, int deadline_ms = 30000) {
  SplitOptions o;
  o.peer_endpoint = endpoint;
  o.split_layer = k;
  o.prefill_deadline_ms = deadline_ms;
  o.token_deadline_ms = deadline_ms;
  return o;
}

// Waits (bounded) until `done` holds; the peer thread works asynchronously.
template <class F>
bool eventually(F done) {
  for (int i = 0; i < 400; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

struct Node {
  Node() { inference::setup_torch(1); }
  Model model = Model::tiny(kSeed);
  Tokenizer tokenizer = Tokenizer::byte_level_tiny();
};

}  // namespace

TEST_CASE("split inference gives the same greedy tokens as local inference", "[split]") {
  Node node;
  auto peer_model = Model::tiny(kSeed);  // the peer's own copy of the weights
  SplitPeer peer(peer_model);
  const auto expected = local_tokens("split me", 12);
  for (int k : {0, 1, 2, 4}) {
    INFO("split layer " << k);
    InferenceService service(node.model, node.tokenizer);
    service.set_split_client(std::make_unique<SplitClient>(node.model, split_options(peer.endpoint(), k)));
    auto r = service.complete(request("split me", 12));
    CHECK(r.split);
    CHECK_FALSE(r.fell_back_to_local);
    CHECK(r.note.empty());
    CHECK(r.tokens == expected);
  }
  CHECK(peer.stats().steps >= 4 * 12);
  CHECK(eventually([&] { return peer.stats().sessions == 0; }));  // every request released its cache
}

TEST_CASE("split with the peer stopped falls back to local and still answers", "[split]") {
  Node node;
  auto peer_model = Model::tiny(kSeed);
  auto peer = std::make_unique<SplitPeer>(peer_model);
  const std::string endpoint = peer->endpoint();
  peer.reset();  // nobody listens there now
  InferenceService service(node.model, node.tokenizer);
  auto options = split_options(endpoint, 2, 200);
  options.retry_after_ms = 60000;
  service.set_split_client(std::make_unique<SplitClient>(node.model, options));
  const auto expected = local_tokens("is anyone there", 10);
  auto r = service.complete(request("is anyone there", 10));
  CHECK(r.fell_back_to_local);
  CHECK_FALSE(r.split);
  CHECK(r.note.find("split peer failed") != std::string::npos);
  CHECK(r.tokens == expected);
  // The next request does not wait for the benched peer.
  auto again = service.complete(request("is anyone there", 10));
  CHECK(again.fell_back_to_local);
  CHECK(again.note.find("benched") != std::string::npos);
  CHECK(again.tokens == expected);
  CHECK(service.stats().fallbacks == 2);
}

TEST_CASE("split with a peer slower than the deadline falls back", "[split]") {
  Node node;
  auto peer_model = Model::tiny(kSeed);
  SplitPeerOptions po;
  po.reply_delay_ms = 300;
  SplitPeer peer(peer_model, po);
  InferenceService service(node.model, node.tokenizer);
  service.set_split_client(std::make_unique<SplitClient>(node.model, split_options(peer.endpoint(), 2, 50)));
  auto r = service.complete(request("slow link", 8));
  CHECK(r.fell_back_to_local);
  CHECK(r.tokens == local_tokens("slow link", 8));
}

TEST_CASE("a peer lost mid-request: the node recomputes from the prompt and continues", "[split]") {
  Node node;
  auto peer_model = Model::tiny(kSeed);
  auto peer = std::make_unique<SplitPeer>(peer_model);
  InferenceService service(node.model, node.tokenizer);
  // The prompt step must reach the peer (long deadline); a lost token step is
  // noticed after 200 ms.
  auto options = split_options(peer->endpoint(), 3, 200);
  options.prefill_deadline_ms = 30000;
  service.set_split_client(std::make_unique<SplitClient>(node.model, options));
  int seen = 0;
  auto r = service.complete(request("half and half", 12), [&](std::int32_t, std::string_view) {
    if (++seen == 4) peer->stop();  // the peer vanishes after four tokens
    return true;
  });
  CHECK(r.split);
  CHECK(r.fell_back_to_local);
  CHECK(r.tokens == local_tokens("half and half", 12));
}

TEST_CASE("adapter requests run locally with a note while split serves the base", "[split]") {
  Node node;
  auto peer_model = Model::tiny(kSeed);
  SplitPeer peer(peer_model);
  ServiceOptions options;
  options.expose_local_adapter = true;
  InferenceService service(node.model, node.tokenizer, options);
  service.set_split_client(std::make_unique<SplitClient>(node.model, split_options(peer.endpoint(), 2)));
  inference::LoraConfig lc;
  service.install_adapter(AdapterSlot::kLocal, inference::LoraAdapter::create(node.model.config(), lc, 3), 1);
  auto r = service.complete(request("with adapter", 4));  // default -> local
  CHECK(r.adapter == "local");
  CHECK_FALSE(r.split);
  CHECK_FALSE(r.fell_back_to_local);
  CHECK(r.note.find("base model only") != std::string::npos);
}

TEST_CASE("split peer refuses out-of-order, malformed and foreign messages", "[split]") {
  inference::setup_torch(1);
  auto peer_model = Model::tiny(kSeed);
  SplitPeerOptions po;
  po.session_timeout_ms = 100;
  SplitPeer peer(peer_model, po);
  protocol::Context ctx;
  protocol::Dealer dealer(ctx, peer.endpoint());
  const int H = peer_model.config().hidden_size;
  auto hidden = [&](std::uint64_t id, std::uint32_t position, std::uint64_t steps, std::uint64_t width) {
    protocol::HiddenStates h;
    h.request_id = id;
    h.layer = 2;
    h.position = position;
    h.shape = {steps, width};
    h.data = protocol::Payload<float>::own(std::vector<float>(steps * width, 0.01f));
    protocol::Envelope env;
    env.sender = 9;
    env.body = h;
    return protocol::encode(env);
  };
  auto reply = [&]() -> protocol::Envelope {
    auto bytes = dealer.recv(5000ms);
    REQUIRE(bytes);
    return protocol::decode(*bytes, protocol::Limits{});
  };
  auto error_code = [&]() {
    auto env = reply();
    const auto* e = std::get_if<protocol::ErrorReply>(&env.body);
    REQUIRE(e);
    return e->code;
  };

  // A session that never started.
  dealer.send(hidden(1, 5, 1, H));
  CHECK(error_code() == protocol::ErrorCode::kWrongStage);
  // Wrong width.
  dealer.send(hidden(2, 0, 1, H + 1));
  CHECK(error_code() == protocol::ErrorCode::kMalformed);
  // Garbage bytes.
  dealer.send(protocol::Bytes::from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9}));
  CHECK(error_code() == protocol::ErrorCode::kMalformed);
  // Not a hidden-states message.
  protocol::Envelope other;
  other.sender = 9;
  other.body = protocol::Heartbeat{};
  dealer.send(protocol::encode(other));
  CHECK(error_code() == protocol::ErrorCode::kUnsupported);
  // A good prompt step, then a skipped position: refused and the session dropped.
  dealer.send(hidden(3, 0, 4, H));
  {
    auto env = reply();
    const auto* h = std::get_if<protocol::HiddenStates>(&env.body);
    REQUIRE(h);
    CHECK(h->kind == protocol::HiddenKind::kLogits);
    CHECK(h->request_id == 3);
    const std::vector<std::uint64_t> logits_shape = {1, std::uint64_t(peer_model.config().vocab_size)};
    CHECK(h->shape == logits_shape);
  }
  dealer.send(hidden(3, 7, 1, H));
  CHECK(error_code() == protocol::ErrorCode::kWrongStage);
  CHECK(eventually([&] { return peer.stats().sessions == 0; }));
  // Beyond the context.
  dealer.send(hidden(4, 0, std::uint64_t(peer_model.config().context_length()) + 1, H));
  CHECK(error_code() == protocol::ErrorCode::kMalformed);
  // An abandoned session expires.
  dealer.send(hidden(5, 0, 2, H));
  reply();
  CHECK(eventually([&] { return peer.stats().expired >= 1 && peer.stats().sessions == 0; }));
  CHECK(peer.stats().refused == 6);
}

TEST_CASE("split client options are checked", "[split]") {
  inference::setup_torch(1);
  auto model = Model::tiny(kSeed);
  CHECK_THROWS_AS(SplitClient(model, split_options("tcp://127.0.0.1:1", 5)), Error);
  CHECK_THROWS_AS(SplitClient(model, split_options("tcp://127.0.0.1:1", -1)), Error);
  CHECK_THROWS_AS(SplitClient(model, split_options("", 1)), Error);
  CHECK_THROWS_AS(SplitClient(model, split_options("tcp://127.0.0.1:1", 1, 0)), Error);
}
