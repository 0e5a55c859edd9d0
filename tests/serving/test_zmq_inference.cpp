// The inference service over ZeroMQ: answers equal the service's own, a
// streamed request yields one tokenChunk per token then a last chunk and the
// response, bad requests get error replies and the server keeps serving.
#include <chrono>

#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/inference_service.h"
#include "fedge/serving/zmq_inference.h"
#include "fedge/protocol/codec.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using namespace std::chrono_literals;

namespace {

struct ZmqFixture {
  ZmqFixture() { inference::setup_torch(1); }
  inference::Model model = inference::Model::tiny(5);
  inference::Tokenizer tokenizer = inference::Tokenizer::byte_level_tiny();
  InferenceService service{model, tokenizer, [] {
                             ServiceOptions o;
                             o.max_tokens_limit = 64;
                             return o;
                           }()};
  ZmqInferenceServer server{service};
};

protocol::InferenceRequest wire_request(std::uint64_t id, const std::string& prompt, std::uint32_t max_tokens,
                                        bool stream) {
  protocol::InferenceRequest r;
  r.request_id = id;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.adapter = protocol::AdapterChoice::kNone;
  r.stream = stream;
  return r;
}

CompletionResult direct(InferenceService& service, const std::string& prompt, int max_tokens) {
  CompletionRequest c;
  c.prompt = prompt;
  c.max_tokens = max_tokens;
  c.adapter = AdapterChoice::kNone;
  auto r = service.complete(c);
  // Cap'n Proto text fields end at a NUL byte (the codec writes C strings), so
  // the prompts here are chosen to give continuations without one.
  REQUIRE(r.text.find('\0') == std::string::npos);
  return r;
}

}  // namespace

TEST_CASE("zmq inference answers like the service", "[zmq-serving]") {
  ZmqFixture f;
  ZmqInferenceClient client(f.server.endpoint());
  auto resp = client.complete(wire_request(7, "over the wire", 10, false));
  auto ref = direct(f.service, "over the wire", 10);
  CHECK(resp.request_id == 7);
  CHECK(resp.text == ref.text);
  CHECK(resp.prompt_tokens == std::uint32_t(ref.prompt_tokens));
  CHECK(resp.completion_tokens == std::uint32_t(ref.completion_tokens));
  CHECK(resp.finish == (ref.finish_reason == "length" ? protocol::FinishReason::kLength : protocol::FinishReason::kStop));
  CHECK_FALSE(resp.fell_back_to_local);
}

TEST_CASE("zmq streamed request: a chunk per token, a last chunk, then the response", "[zmq-serving]") {
  ZmqFixture f;
  ZmqInferenceClient client(f.server.endpoint());
  std::vector<protocol::TokenChunk> chunks;
  auto resp = client.complete(wire_request(8, "stream it", 9, true),
                              [&](const protocol::TokenChunk& c) { chunks.push_back(c); });
  auto ref = direct(f.service, "stream it", 9);
  REQUIRE(!chunks.empty());
  CHECK(chunks.back().last);
  CHECK(chunks.back().finish == resp.finish);
  std::string text;
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    CHECK(chunks[i].index == i);
    CHECK(chunks[i].request_id == 8);
    text += chunks[i].text;
    if (!chunks[i].last && i < ref.tokens.size()) ids.push_back(std::int32_t(chunks[i].token_id));
  }
  CHECK(text == resp.text);
  CHECK(resp.text == ref.text);
  CHECK(ids == ref.tokens);
  CHECK(chunks.size() >= ref.tokens.size() + 1);
}

TEST_CASE("zmq inference refuses bad requests with error replies and keeps serving", "[zmq-serving]") {
  ZmqFixture f;
  ZmqInferenceClient client(f.server.endpoint());
  // max_tokens over the service's limit.
  CHECK_THROWS_WITH(client.complete(wire_request(1, "x", 1000, false)), Catch::Contains("max_tokens"));
  // An adapter that is not installed.
  auto r = wire_request(2, "x", 4, false);
  r.adapter = protocol::AdapterChoice::kGlobal;
  CHECK_THROWS_WITH(client.complete(r), Catch::Contains("adapter"));
  // A prompt too long for the context fails in the worker; still an error reply.
  CHECK_THROWS_WITH(client.complete(wire_request(3, std::string(700, 'q'), 4, false)), Catch::Contains("prompt"));

  // Raw garbage and a wrong message type.
  protocol::Context ctx;
  protocol::Dealer raw(ctx, f.server.endpoint());
  auto error_code = [&] {
    auto bytes = raw.recv(5000ms);
    REQUIRE(bytes);
    auto env = protocol::decode(*bytes, protocol::Limits{});
    const auto* e = std::get_if<protocol::ErrorReply>(&env.body);
    REQUIRE(e);
    return e->code;
  };
  raw.send(protocol::Bytes::from_vector({0xde, 0xad, 0xbe, 0xef}));
  CHECK(error_code() == protocol::ErrorCode::kMalformed);
  protocol::Envelope hb;
  hb.sender = 3;
  hb.body = protocol::Heartbeat{};
  raw.send(protocol::encode(hb));
  CHECK(error_code() == protocol::ErrorCode::kUnsupported);

  // Still serving.
  auto ok = client.complete(wire_request(4, "still here", 5, false));
  CHECK(ok.text == direct(f.service, "still here", 5).text);
}

TEST_CASE("zmq server stop() is idempotent and frees the endpoint", "[zmq-serving]") {
  ZmqFixture f;
  const std::string endpoint = f.server.endpoint();
  CHECK(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);
  f.server.stop();
  f.server.stop();
  CHECK(f.server.endpoint().empty());
}
