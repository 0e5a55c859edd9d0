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

namespace {

// The HttpError a chat body gets.
HttpError chat_refusal(const json& body) {
  RequestRules rules;
  rules.model_name = "tiny";
  try {
    (void)parse_chat_request(body, rules);
  } catch (const HttpError& e) {
    return e;
  }
  FAIL("the body was accepted: " << body.dump());
  return HttpError{0, ""};
}

json chat_with(const json& extra) {
  json body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "x"}}})}};
  body.update(extra);
  return body;
}

// The refusal of a completions body with `extra` fields; checks status and param.
void check_refused(const json& extra, const std::string& param, const std::string& says = {}) {
  json body = {{"model", "tiny"}, {"prompt", "x"}};
  body.update(extra);
  INFO(body.dump().substr(0, 200));
  const HttpError e = refusal(body.dump());
  CHECK(e.status == 400);
  CHECK(e.param == param);
  CHECK(e.message.find(param) != std::string::npos);
  if (!says.empty()) CHECK(e.message.find(says) != std::string::npos);
}

}  // namespace

TEST_CASE("request bodies: stop, n, sampling extras, logprobs and stream_options are read", "[http]") {
  RequestRules rules;
  rules.model_name = "tiny";
  auto p = parse_completion_request(parse_json_body(R"({"model": "tiny", "prompt": "x", "stop": "\n\n", "n": 3,
      "top_k": 40, "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": -1.5, "logprobs": 2,
      "stream": true, "stream_options": {"include_usage": true}})"),
                                    rules);
  CHECK(p.request.stop == std::vector<std::string>{"\n\n"});
  CHECK(p.n == 3);
  CHECK(p.request.top_k == 40);
  CHECK(p.request.min_p == Approx(0.05f));
  CHECK(p.request.presence_penalty == 0.5f);
  CHECK(p.request.frequency_penalty == -1.5f);
  CHECK(p.request.logprobs == 2);
  CHECK(p.include_usage);
  p = parse_completion_request(parse_json_body(R"({"model": "tiny", "prompt": "x", "stop": ["a", "bc", "d", "e"]})"),
                               rules);
  CHECK(p.request.stop.size() == 4);
  CHECK(p.request.logprobs == -1);
  CHECK(p.n == 1);
  p = parse_completion_request(parse_json_body(R"({"model": "tiny", "prompt": "x", "stop": []})"),
                               rules);
  CHECK(p.request.stop.empty());
  const auto chat = parse_chat_request(chat_with({{"logprobs", true}, {"top_logprobs", 5}}), rules);
  CHECK(chat.request.logprobs == 5);
  CHECK(parse_chat_request(chat_with({{"logprobs", true}}), rules).request.logprobs == 0);
  CHECK(parse_chat_request(chat_with({{"logprobs", false}}), rules).request.logprobs == -1);
  CHECK(choice_seed(7, 0) == 7);
  CHECK(choice_seed(7, 1) != choice_seed(7, 2));
  CHECK(choice_seed(7, 1) != choice_seed(8, 1));
}

TEST_CASE("request bodies: bad stop, n, extras and logprobs are 400s naming the field", "[http]") {
  check_refused({{"stop", 5}}, "stop", "a string or an array");
  check_refused({{"stop", json::array({"a", 1})}}, "stop", "stop[1]");
  check_refused({{"stop", json::array({"a", "b", "c", "d", "e"})}}, "stop", "at most 4");
  check_refused({{"stop", ""}}, "stop", "empty");
  check_refused({{"stop", json::object()}}, "stop");
  // Hostile sizes: a 10 MB stop string is refused by its length (the HTTP
  // server's 1 MiB body limit stops it earlier still).
  check_refused({{"stop", std::string(10 << 20, 'x')}}, "stop", "256");
  check_refused({{"n", 1000000000}}, "n", "outside");
  check_refused({{"n", 1e9}}, "n", "integer");
  check_refused({{"n", 0}}, "n");
  check_refused({{"n", 9}}, "n", "8");
  check_refused({{"n", "2"}}, "n", "integer");
  check_refused({{"n", 2.5}}, "n", "integer");
  check_refused({{"top_k", -1}}, "top_k");
  check_refused({{"top_k", 0.5}}, "top_k", "integer");
  check_refused({{"top_k", 1e12}}, "top_k");
  check_refused({{"min_p", 1.5}}, "min_p");
  check_refused({{"min_p", "0.1"}}, "min_p", "number");
  check_refused({{"presence_penalty", 2.5}}, "presence_penalty");
  check_refused({{"presence_penalty", true}}, "presence_penalty");
  check_refused({{"frequency_penalty", -3}}, "frequency_penalty");
  check_refused({{"logprobs", 1000}}, "logprobs", "outside");
  check_refused({{"logprobs", true}}, "logprobs", "integer");
  check_refused({{"logprobs", -1}}, "logprobs");
  check_refused({{"stream_options", {{"include_usage", true}}}}, "stream_options", "stream");
  check_refused({{"stream", true}, {"stream_options", 1}}, "stream_options", "object");
  check_refused({{"stream", true}, {"stream_options", {{"include_usage", "yes"}}}}, "stream_options.include_usage");
  // Chat's form of logprobs.
  for (const auto& [extra, param] : std::vector<std::pair<json, std::string>>{
           {{{"logprobs", 3}}, "logprobs"},
           {{{"logprobs", true}, {"top_logprobs", 1000}}, "top_logprobs"},
           {{{"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs"},
           {{{"logprobs", true}, {"top_logprobs", "5"}}, "top_logprobs"},
           {{{"top_logprobs", 2}}, "top_logprobs"}}) {
    const HttpError e = chat_refusal(chat_with(extra));
    CHECK(e.status == 400);
    CHECK(e.param == param);
  }
}

TEST_CASE("request bodies: embeddings, tokenize, detokenize and apply-template", "[http]") {
  RequestRules rules;
  rules.model_name = "tiny";
  auto e = parse_embedding_request(parse_json_body(R"({"model": "tiny+none", "input": ["a", "b"]})"), rules);
  CHECK(e.inputs == std::vector<std::string>{"a", "b"});
  CHECK(e.adapter == AdapterChoice::kNone);
  CHECK_FALSE(e.base64);
  e = parse_embedding_request(parse_json_body(R"({"model": "tiny", "input": "a", "encoding_format": "base64"})"), rules);
  CHECK(e.inputs.size() == 1);
  CHECK(e.base64);
  auto embed_refusal = [&](const json& body) {
    try {
      (void)parse_embedding_request(body, rules);
    } catch (const HttpError& err) {
      return err;
    }
    FAIL("accepted: " << body.dump().substr(0, 100));
    return HttpError{0, ""};
  };
  CHECK(embed_refusal({{"input", "a"}}).param == "model");
  CHECK(embed_refusal({{"model", "other"}, {"input", "a"}}).status == 404);
  CHECK(embed_refusal({{"model", "tiny"}}).param == "input");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", 3}}).param == "input");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", json::array()}}).param == "input");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", json::array({1, 2})}}).param == "input");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", ""}}).param == "input");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", std::vector<std::string>(65, "a")}}).message.find("64") !=
        std::string::npos);
  CHECK(embed_refusal({{"model", "tiny"}, {"input", "a"}, {"encoding_format", "int8"}}).param == "encoding_format");
  CHECK(embed_refusal({{"model", "tiny"}, {"input", "a"}, {"dimensions", 8}}).param == "dimensions");

  CHECK(parse_tokenize_request({{"content", "hi"}}).content == "hi");
  CHECK(parse_tokenize_request({{"content", "hi"}, {"add_special", true}}).add_special);
  CHECK_THROWS_AS(parse_tokenize_request({{"content", 1}}), HttpError);
  CHECK_THROWS_AS(parse_tokenize_request(json::object()), HttpError);
  CHECK_THROWS_AS(parse_tokenize_request({{"content", "x"}, {"add_special", 1}}), HttpError);

  CHECK(parse_detokenize_request({{"tokens", {1, 2, 3}}}, 10) == std::vector<std::int32_t>{1, 2, 3});
  for (const json& bad : {json{{"tokens", {1, 10}}}, json{{"tokens", {-1}}}, json{{"tokens", {1.5}}},
                          json{{"tokens", "12"}}, json::object(), json{{"tokens", {1e300}}}}) {
    try {
      (void)parse_detokenize_request(bad, 10);
      FAIL("accepted " << bad.dump());
    } catch (const HttpError& err) {
      CHECK(err.param == "tokens");
    }
  }
  try {
    (void)parse_detokenize_request({{"tokens", std::vector<int>(70000, 1)}}, 10);
    FAIL("accepted 70000 ids");
  } catch (const HttpError& err) {
    CHECK(err.message.find("65536") != std::string::npos);
  }

  const auto messages = parse_template_request(
      {{"messages", {{{"role", "system"}, {"content", "s"}}, {{"role", "user"}, {"content", "u"}}}}});
  CHECK(messages.size() == 2);
  try {
    (void)parse_template_request({{"messages", {{{"role", "robot"}, {"content", "s"}}}}});
    FAIL("accepted a robot");
  } catch (const HttpError& err) {
    CHECK(err.param == "messages[0].role");
  }
}
