// The HTTP API's request bodies read without a server (serving/requests.h):
// the pure functions http_server.cpp calls, and inputs fuzz_http found.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "fedge/serving/requests.h"

using namespace fedge::serving;
using json = nlohmann::json;

namespace {

// The HttpError a body gets, read as /v1/completions.
HttpError refusal(std::string_view body) {
  RequestRules rules;
  rules.model_name = "tiny";
  try {
    (void)parse_completion_request(parse_json_body(body), rules);
  } catch (const HttpError& e) {
    return e;
  }
  FAIL("the body was accepted: " << body);
  return HttpError{0, ""};
}

}  // namespace

TEST_CASE("request bodies: completions and chat read every field", "[http]") {
  RequestRules rules;
  rules.model_name = "tiny";
  rules.max_tokens_limit = 64;
  rules.default_max_tokens = 9;
  const auto p = parse_completion_request(
      parse_json_body(R"({"model": "tiny+local", "prompt": ["hi"], "temperature": 0.5, "top_p": 0.9, "seed": 7})"),
      rules);
  CHECK(p.model == "tiny+local");
  CHECK(p.request.prompt == "hi");
  CHECK(p.request.adapter == AdapterChoice::kLocal);
  CHECK(p.request.max_tokens == 9);
  CHECK(p.request.temperature == 0.5f);
  CHECK(p.request.seed == 7);
  CHECK_FALSE(p.stream);
  const auto chat = parse_chat_request(
      parse_json_body(R"({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": true})"), rules);
  REQUIRE(chat.messages.size() == 1);
  CHECK(chat.messages[0].role == "user");
  CHECK(chat.stream);
  CHECK(chat.request.prompt.empty());  // the service renders the turns
}

TEST_CASE("request bodies: a number too large for a double is a 400, not an internal error", "[http]") {
  // fuzz_http's first find: nlohmann reports an overflowing number as
  // out_of_range, not parse_error, and the server answered 500.
  for (std::string_view body : {std::string_view("445e6516154073762580"),
                                std::string_view(R"({"model": "tiny", "prompt": "x", "max_tokens": 1e999})")}) {
    const HttpError e = refusal(body);
    CHECK(e.status == 400);
    CHECK(e.message.find("not valid JSON") != std::string::npos);
  }
  CHECK(refusal(R"({"model": "tiny", "prompt": "x", "temperature": -1e308})").param == "temperature");
}
