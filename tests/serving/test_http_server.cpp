// The OpenAI-compatible HTTP API over real loopback HTTP (httplib::Client):
// completions, chat, streamed chat parsed event by event, models, health, bad
// inputs, concurrent clients, and answers while a trainer runs on another model.
#include <httplib.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"
#include "fedge/training/records.h"
#include "http_fixture.h"
#include "fedge/training/trainer.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using json = nlohmann::json;

namespace {

using testing_http::HttpFixture;

// Server-Sent Events split into their data payloads.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  std::size_t at = 0;
  for (;;) {
    const std::size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    std::string event = body.substr(at, end - at);
    REQUIRE(event.rfind("data: ", 0) == 0);
    out.push_back(event.substr(6));
    at = end + 2;
  }
  CHECK(at == body.size());  // nothing after the last event
  return out;
}

// Checks the error object and returns its param ("" for null).
std::string error_param(const httplib::Result& res, int status) {
  REQUIRE(res);
  CHECK(res->status == status);
  const json j = json::parse(res->body);
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["message"].is_string());
  CHECK(!j["error"]["message"].get<std::string>().empty());
  CHECK(j["error"]["type"].is_string());
  return j["error"]["param"].is_null() ? "" : j["error"]["param"].get<std::string>();
}

}  // namespace

TEST_CASE("POST /v1/completions answers in OpenAI's format", "[http]") {
  HttpFixture f;
  auto res = f.post("/v1/completions", {{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 10}, {"temperature", 0}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  const json j = json::parse(res->body);
  const auto ref = f.direct("hello", 10);
  CHECK(j["object"] == "text_completion");
  CHECK(j["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  CHECK(j["model"] == "tiny");
  CHECK(j["created"].is_number_integer());
  REQUIRE(j["choices"].size() == 1);
  CHECK(j["choices"][0]["index"] == 0);
  CHECK(j["choices"][0]["text"] == ref.text);
  CHECK(j["choices"][0]["finish_reason"] == ref.finish_reason);
  CHECK(j["usage"]["prompt_tokens"] == ref.prompt_tokens);
  CHECK(j["usage"]["completion_tokens"] == ref.completion_tokens);
  CHECK(j["usage"]["total_tokens"] == ref.prompt_tokens + ref.completion_tokens);
  CHECK(j["fedge"]["adapter"] == "none");
  CHECK(j["fedge"]["fell_back_to_local"] == false);
}

TEST_CASE("POST /v1/chat/completions renders the chat template", "[http]") {
  HttpFixture f;
  const json messages = json::array({{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "status?"}}});
  auto res = f.post("/v1/chat/completions", {{"model", "tiny"}, {"messages", messages}, {"max_tokens", 12}, {"temperature", 0}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  const auto ref = f.direct(f.service.render_chat({{"system", "be brief"}, {"user", "status?"}}), 12);
  CHECK(j["object"] == "chat.completion");
  CHECK(j["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  CHECK(j["choices"][0]["message"]["role"] == "assistant");
  CHECK(j["choices"][0]["message"]["content"] == ref.text);
  CHECK(j["choices"][0]["finish_reason"] == ref.finish_reason);
  CHECK(j["usage"]["prompt_tokens"] == ref.prompt_tokens);
}

TEST_CASE("streamed chat completion parses chunk by chunk as OpenAI's format", "[http]") {
  HttpFixture f;
  const json body = {{"model", "tiny"},
                     {"messages", json::array({{{"role", "user"}, {"content", "stream please"}}})},
                     {"max_tokens", 16},
                     {"temperature", 0},
                     {"stream", true}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string received;
  int pieces = 0;
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    received.append(data, n);
    ++pieces;
    return true;
  };
  auto cli = f.client();
  auto res = cli.send(req);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "text/event-stream");
  CHECK(pieces >= 2);  // arrived in several chunks, not one body
  const auto events = sse_events(received);
  REQUIRE(events.size() >= 3);
  CHECK(events.back() == "[DONE]");
  const auto ref = f.direct(f.service.render_chat({{"user", "stream please"}}), 16);
  std::string content;
  std::string id;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    CHECK(c["object"] == "chat.completion.chunk");
    CHECK(c["model"] == "tiny");
    if (i == 0) id = c["id"];
    CHECK(c["id"] == id);
    REQUIRE(c["choices"].size() == 1);
    const json& choice = c["choices"][0];
    CHECK(choice["index"] == 0);
    REQUIRE(choice.contains("delta"));
    if (i == 0) CHECK(choice["delta"]["role"] == "assistant");
    if (choice["delta"].contains("content")) content += choice["delta"]["content"].get<std::string>();
    if (i + 2 < events.size()) {
      CHECK(choice["finish_reason"].is_null());
    } else {
      CHECK(choice["finish_reason"] == ref.finish_reason);
      CHECK(choice["delta"].empty());
      CHECK(c["usage"]["completion_tokens"] == ref.completion_tokens);
      CHECK(c["fedge"]["adapter"] == "none");
    }
  }
  CHECK(content == ref.text);
}

TEST_CASE("streamed completion ends with finish_reason and [DONE]", "[http]") {
  HttpFixture f;
  auto res = f.post("/v1/completions",
                    {{"model", "tiny"}, {"prompt", "abc"}, {"max_tokens", 6}, {"temperature", 0}, {"stream", true}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const auto events = sse_events(res->body);
  REQUIRE(events.size() >= 2);
  CHECK(events.back() == "[DONE]");
  std::string text;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json c = json::parse(events[i]);
    CHECK(c["object"] == "text_completion");
    text += c["choices"][0]["text"].get<std::string>();
  }
  const json last = json::parse(events[events.size() - 2]);
  const auto ref = f.direct("abc", 6);
  CHECK(last["choices"][0]["finish_reason"] == ref.finish_reason);
  CHECK(text == ref.text);
}

TEST_CASE("GET /v1/models and /health report adapters and versions", "[http]") {
  HttpFixture f({}, /*expose_local=*/true);
  auto ids = [&] {
    auto res = f.client().Get("/v1/models");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    const json j = json::parse(res->body);
    CHECK(j["object"] == "list");
    std::vector<std::string> out;
    for (const auto& m : j["data"]) {
      CHECK(m["object"] == "model");
      out.push_back(m["id"]);
    }
    return out;
  };
  CHECK(ids() == std::vector<std::string>{"tiny"});
  inference::LoraConfig lc;
  f.service.install_adapter(AdapterSlot::kGlobal, inference::LoraAdapter::create(f.model.config(), lc, 1), 5);
  f.service.install_adapter(AdapterSlot::kLocal, inference::LoraAdapter::create(f.model.config(), lc, 2), 2);
  const std::vector<std::string> all = {"tiny", "tiny+global", "tiny+local"};
  CHECK(ids() == all);

  f.server.set_status_provider([] { return std::map<std::string, std::string>{{"round", "3"}}; });
  auto res = f.client().Get("/health");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json h = json::parse(res->body);
  CHECK(h["status"] == "ok");
  CHECK(h["model"] == "tiny");
  CHECK(h["adapters"]["global"]["installed"] == true);
  CHECK(h["adapters"]["global"]["version"] == 5);
  CHECK(h["adapters"]["local"]["version"] == 2);
  CHECK(h["node"]["round"] == "3");

  // The model id picks the adapter.
  auto r = f.post("/v1/completions", {{"model", "tiny+local"}, {"prompt", "x"}, {"max_tokens", 2}});
  REQUIRE(r);
  CHECK(json::parse(r->body)["fedge"]["adapter"] == "local");
  CHECK(json::parse(r->body)["fedge"]["adapter_version"] == 2);
  r = f.post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}, {"adapter", "none"}});
  REQUIRE(r);
  CHECK(json::parse(r->body)["fedge"]["adapter"] == "none");
  r = f.post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}});
  REQUIRE(r);
  CHECK(json::parse(r->body)["fedge"]["adapter"] == "global");
}

TEST_CASE("bad requests get 400/404/413 with an OpenAI error naming the field", "[http]") {
  HttpOptions http;
  http.max_body_bytes = 4096;
  HttpFixture f(http);
  const json ok = {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 2}};
  auto with = [&](const char* key, json value) {
    json b = ok;
    b[key] = std::move(value);
    return f.post("/v1/completions", b);
  };
  auto without = [&](const char* key) {
    json b = ok;
    b.erase(key);
    return f.post("/v1/completions", b);
  };
  CHECK(error_param(f.client().Post("/v1/completions", "{\"model\": \"tiny\", ", "application/json"), 400) == "");
  CHECK(error_param(f.client().Post("/v1/completions", "[1, 2]", "application/json"), 400) == "");
  // A number beyond a double (found by fuzz_http; it was a 500).
  CHECK(error_param(f.client().Post("/v1/completions", R"({"model": "tiny", "prompt": "x", "max_tokens": 1e999})",
                                    "application/json"),
                    400) == "");
  CHECK(error_param(without("prompt"), 400) == "prompt");
  CHECK(error_param(without("model"), 400) == "model");
  CHECK(error_param(with("prompt", 42), 400) == "prompt");
  CHECK(error_param(with("max_tokens", "10"), 400) == "max_tokens");
  CHECK(error_param(with("max_tokens", 0), 400) == "max_tokens");
  CHECK(error_param(with("max_tokens", 129), 400) == "max_tokens");
  CHECK(error_param(with("max_tokens", 2.5), 400) == "max_tokens");
  {
    json b = ok;
    b.erase("max_tokens");
    b["max_completion_tokens"] = 0;
    CHECK(error_param(f.post("/v1/completions", b), 400) == "max_completion_tokens");
    b["max_completion_tokens"] = 3;
    auto r3 = f.post("/v1/completions", b);
    REQUIRE(r3);
    CHECK(json::parse(r3->body)["usage"]["completion_tokens"].get<int>() <= 3);
  }
  CHECK(error_param(with("temperature", 3), 400) == "temperature");
  CHECK(error_param(with("temperature", "hot"), 400) == "temperature");
  CHECK(error_param(with("top_p", 0), 400) == "top_p");
  CHECK(error_param(with("seed", -1), 400) == "seed");
  CHECK(error_param(with("stream", "yes"), 400) == "stream");
  CHECK(error_param(with("adapter", "best"), 400) == "adapter");
  CHECK(error_param(with("adapter", "global"), 400) == "adapter");  // not installed
  CHECK(error_param(with("n", 9), 400) == "n");  // beyond HttpOptions::max_n
  CHECK(error_param(with("stop", json::array({1})), 400) == "stop");
  CHECK(error_param(with("logprobs", 1000), 400) == "logprobs");
  CHECK(error_param(with("prompt", std::string(600, 'a')), 400) == "prompt");  // beyond the context
  CHECK(error_param(with("model", "gpt-4"), 404) == "model");
  CHECK(error_param(f.post("/v1/chat/completions", {{"model", "tiny"}, {"messages", json::array()}}), 400) == "messages");
  CHECK(error_param(f.post("/v1/chat/completions", {{"model", "tiny"}, {"messages", "hi"}}), 400) == "messages");
  CHECK(error_param(f.post("/v1/chat/completions",
                           {{"model", "tiny"}, {"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}),
                    400) == "messages[0].role");
  CHECK(error_param(f.post("/v1/chat/completions",
                           {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", 5}}})}}),
                    400) == "messages[0].content");
  CHECK(error_param(with("prompt", std::string(5000, 'a')), 413) == "");  // over max_body_bytes
  CHECK(error_param(f.client().Get("/v1/nothing"), 404) == "");
  CHECK(error_param(f.client().Get("/v1/completions"), 404) == "");
  // And the server still answers.
  auto res = f.post("/v1/completions", ok);
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("concurrent HTTP clients all get their answers", "[http]") {
  HttpFixture f;
  const std::vector<std::string> prompts = {"one", "two two", "three", "four four four"};
  std::vector<std::string> expected;
  for (const auto& p : prompts) expected.push_back(f.direct(p, 8).text);
  std::vector<std::string> got(12);
  std::vector<int> status(12, 0);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] {
      auto res = f.post("/v1/completions",
                        {{"model", "tiny"}, {"prompt", prompts[i % 4]}, {"max_tokens", 8}, {"temperature", 0}});
      if (!res) return;
      status[i] = res->status;
      if (res->status == 200) got[i] = json::parse(res->body)["choices"][0]["text"];
    });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(status[i] == 200);
    CHECK(got[i] == expected[i % 4]);
  }
}

TEST_CASE("completions keep answering while a trainer runs on a separate model", "[http]") {
  HttpFixture f({}, /*expose_local=*/true);
  // The node's trainer: its own model instance and adapter.
  auto train_model = inference::Model::tiny(17);
  inference::LoraConfig lc;
  lc.r = 4;
  train_model.add_adapter("site", inference::LoraAdapter::create(train_model.config(), lc, 9));
  std::vector<training::Sequence> seqs;
  for (int i = 0; i < 8; ++i) {
    training::Sequence s;
    for (int t = 0; t < 48; ++t) {
      s.tokens.push_back(97 + (i + t) % 7);
      s.target.push_back(t > 0 ? 1 : 0);
    }
    seqs.push_back(std::move(s));
  }
  auto data = training::TokenDataset::from_sequences(std::move(seqs));
  training::TrainOptions to;
  to.steps = 1000000;  // stopped by the flag below
  to.batch_size = 4;
  to.log_every = 0;
  auto trainer = training::Trainer::for_adapter(train_model, "site", data, to);
  std::atomic<bool> stop{false};
  std::atomic<int> steps{0};
  std::thread training_thread([&] {
    while (!stop.load()) {
      trainer.step();
      ++steps;
    }
  });
  while (steps.load() < 1) std::this_thread::yield();  // training is under way

  const auto expected = f.direct("while training", 8).text;
  int answered = 0;
  for (int i = 0; i < 5; ++i) {
    auto res = f.post("/v1/completions",
                      {{"model", "tiny"}, {"prompt", "while training"}, {"max_tokens", 8}, {"temperature", 0}});
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(json::parse(res->body)["choices"][0]["text"] == expected);
    ++answered;
  }
  stop = true;
  training_thread.join();
  CHECK(answered == 5);
  CHECK(steps.load() >= 1);
  // The new adapter goes in without stopping the server.
  f.service.install_adapter(AdapterSlot::kLocal, *train_model.adapter("site"), 1);
  auto res = f.post("/v1/completions", {{"model", "tiny+local"}, {"prompt", "after"}, {"max_tokens", 3}});
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("port 0 picks a free port, and a taken port is an error", "[http]") {
  HttpFixture f;
  CHECK(f.server.port() > 0);
  CHECK(f.server.url() == "http://127.0.0.1:" + std::to_string(f.server.port()));
  HttpOptions taken;
  taken.port = f.server.port();
  CHECK_THROWS_AS(HttpServer(f.service, taken), Error);
  f.server.stop();
  f.server.stop();
}

namespace {

// A stretch of the greedy answer to `prompt` (max_tokens 24) that spans
// several byte-level tokens: bytes [4, 8) of its text, and the text before
// its first occurrence.
struct StopCase {
  std::string stop, before;
};
StopCase stop_inside(HttpFixture& f, const std::string& prompt) {
  const std::string text = f.direct(prompt, 24).text;
  REQUIRE(text.size() >= 8);
  std::size_t from = 4;
  while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;  // a character start
  std::size_t to = from + 3;
  while (to < text.size() && (static_cast<unsigned char>(text[to]) & 0xC0) == 0x80) ++to;
  const std::string stop = text.substr(from, to - from);
  return {stop, text.substr(0, text.find(stop))};
}

std::vector<json> stream_chunks(const httplib::Result& res) {
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const auto events = sse_events(res->body);
  REQUIRE(!events.empty());
  CHECK(events.back() == "[DONE]");
  std::vector<json> chunks;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) chunks.push_back(json::parse(events[i]));
  return chunks;
}

}  // namespace

TEST_CASE("stop strings end the answer before them, also split across tokens and streamed", "[http]") {
  HttpFixture f;
  const StopCase c = stop_inside(f, "hello");
  INFO("stop " << json(c.stop).dump() << ", text before it " << json(c.before).dump());
  const json body = {{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 24}, {"temperature", 0},
                     {"stop", json::array({"\x01never", c.stop})}};
  auto res = f.post("/v1/completions", body);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  CHECK(j["choices"][0]["text"] == c.before);
  CHECK(j["choices"][0]["finish_reason"] == "stop");
  // Streamed: the pieces add up to the same text, and no piece holds the stop
  // string or its first byte where the stop string starts.
  json streamed = body;
  streamed["stream"] = true;
  std::string text;
  for (const json& chunk : stream_chunks(f.post("/v1/completions", streamed))) {
    const std::string piece = chunk["choices"][0]["text"];
    CHECK(piece.find(c.stop) == std::string::npos);
    text += piece;
    if (!chunk["choices"][0]["finish_reason"].is_null()) CHECK(chunk["choices"][0]["finish_reason"] == "stop");
  }
  CHECK(text == c.before);
  // Chat streams the same way.
  const json chat_body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                          {"max_tokens", 24}, {"temperature", 0}};
  const StopCase cc = stop_inside(f, f.service.render_chat({{"user", "hi"}}));
  json chat = chat_body;
  chat["stop"] = cc.stop;
  chat["stream"] = true;
  std::string content;
  std::string finish;
  for (const json& chunk : stream_chunks(f.post("/v1/chat/completions", chat))) {
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish = chunk["choices"][0]["finish_reason"];
  }
  CHECK(content == cc.before);
  CHECK(finish == "stop");
}

TEST_CASE("n choices: indexed, sampled on their own, reproducible with a seed, streamed with their index", "[http]") {
  HttpFixture f;
  const json body = {{"model", "tiny"}, {"prompt", "abc"}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 5},
                     {"n", 3}};
  auto res = f.post("/v1/completions", body);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  REQUIRE(j["choices"].size() == 3);
  std::set<std::string> texts;
  int tokens = 0;
  for (int i = 0; i < 3; ++i) {
    CHECK(j["choices"][i]["index"] == i);
    texts.insert(j["choices"][i]["text"].get<std::string>());
  }
  CHECK(texts.size() == 3);  // each choice has its own random stream
  // Choice 0 is what n = 1 gives with that seed; all are reproducible.
  json one = body;
  one["n"] = 1;
  CHECK(json::parse(f.post("/v1/completions", one)->body)["choices"][0]["text"] == j["choices"][0]["text"]);
  CHECK(json::parse(f.post("/v1/completions", body)->body)["choices"] == j["choices"]);
  for (int i = 0; i < 3; ++i) {
    CompletionRequest r;
    r.prompt = "abc";
    r.max_tokens = 12;
    r.temperature = 1.0f;
    r.seed = choice_seed(5, i);
    const auto alone = f.service.complete(r);
    CHECK(j["choices"][i]["text"] == alone.text);
    tokens += alone.completion_tokens;
  }
  CHECK(j["usage"]["completion_tokens"] == tokens);
  CHECK(j["usage"]["prompt_tokens"] == f.direct("abc", 1).prompt_tokens);
  // Streamed: each chunk names its choice; per index the pieces add up.
  json streamed = body;
  streamed["stream"] = true;
  std::map<int, std::string> pieces;
  std::map<int, int> finishes;
  for (const json& chunk : stream_chunks(f.post("/v1/completions", streamed))) {
    REQUIRE(chunk["choices"].size() == 1);
    const int index = chunk["choices"][0]["index"];
    pieces[index] += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) ++finishes[index];
  }
  for (int i = 0; i < 3; ++i) {
    CHECK(pieces[i] == j["choices"][i]["text"]);
    CHECK(finishes[i] == 1);
  }
}

TEST_CASE("logprobs: chat's content list and completions' legacy form, from the model's distribution", "[http]") {
  HttpFixture f;
  const json chat = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                     {"max_tokens", 6}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 3}};
  auto res = f.post("/v1/chat/completions", chat);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  const json& content = j["choices"][0]["logprobs"]["content"];
  REQUIRE(content.size() == j["usage"]["completion_tokens"].get<std::size_t>());
  std::string joined;
  for (const json& t : content) {
    CHECK(t["logprob"].get<double>() <= 0.0);
    REQUIRE(t["top_logprobs"].size() == 3);
    // Greedy: the chosen token is the most likely one.
    CHECK(t["top_logprobs"][0]["token"] == t["token"]);
    CHECK(t["top_logprobs"][0]["logprob"].get<double>() == Approx(t["logprob"].get<double>()));
    CHECK(t["top_logprobs"][0]["logprob"].get<double>() >= t["top_logprobs"][1]["logprob"].get<double>());
    for (const json& b : t["bytes"]) joined += char(b.get<int>());
  }
  CHECK(joined == j["choices"][0]["message"]["content"]);
  // The first token's log-probability equals log_softmax of the model's logits.
  {
    const auto ids = f.tokenizer.encode(f.service.render_chat({{"user", "hi"}}), true);
    auto cache = f.model.make_cache(1, int(ids.size()) + 1);
    const auto logits = f.model.forward(ids, {}, 1, int(ids.size()), cache);
    const auto greedy = std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const LogprobEntry e = logprobs_of(logits, greedy, 0);
    CHECK(content[0]["logprob"].get<double>() == Approx(e.chosen.logprob).margin(1e-4));
  }
  // Without logprobs the field is null.
  json plain = chat;
  plain.erase("top_logprobs");
  plain["logprobs"] = false;
  CHECK(json::parse(f.post("/v1/chat/completions", plain)->body)["choices"][0]["logprobs"].is_null());
  // Completions: {tokens, token_logprobs, top_logprobs, text_offset}.
  auto legacy = f.post("/v1/completions",
                       {{"model", "tiny"}, {"prompt", "abc"}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 2}});
  REQUIRE(legacy);
  const json l = json::parse(legacy->body)["choices"][0]["logprobs"];
  REQUIRE(l["tokens"].size() == 5);
  REQUIRE(l["token_logprobs"].size() == 5);
  REQUIRE(l["top_logprobs"].size() == 5);
  CHECK(l["top_logprobs"][0].size() == 2);
  CHECK(l["text_offset"][0] == 0);
}

TEST_CASE("presence and frequency penalties, top_k and min_p change sampling as asked", "[http]") {
  HttpFixture f;
  auto text = [&](json extra) {
    json body = {{"model", "tiny"}, {"prompt", "aaaa"}, {"max_tokens", 24}, {"temperature", 0}};
    body.update(extra);
    auto res = f.post("/v1/completions", body);
    REQUIRE(res);
    REQUIRE(res->status == 200);
    return json::parse(res->body)["choices"][0]["text"].get<std::string>();
  };
  auto distinct = [](const std::string& s) { return std::set<char>(s.begin(), s.end()).size(); };
  const std::string plain = text(json::object());
  // A strong frequency penalty forbids repeating a token while others remain:
  // greedy output over 24 bytes then holds more distinct bytes.
  const std::string penalised = text({{"frequency_penalty", 2.0}, {"presence_penalty", 2.0}});
  CHECK(distinct(penalised) >= distinct(plain));
  CHECK(penalised != plain);
  // top_k 1 and a min_p of 1 both leave only the most likely token: greedy,
  // whatever the temperature.
  CHECK(text({{"temperature", 1.5}, {"top_k", 1}, {"seed", 3}}) == plain);
  CHECK(text({{"temperature", 1.5}, {"min_p", 1.0}, {"seed", 4}}) == plain);
  CHECK(text({{"temperature", 1.5}, {"seed", 4}}) != plain);
}

TEST_CASE("streams carry usage in a last chunk with no choices when include_usage is set", "[http]") {
  HttpFixture f;
  const json body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                     {"max_tokens", 5}, {"temperature", 0}, {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  const auto chunks = stream_chunks(f.post("/v1/chat/completions", body));
  REQUIRE(chunks.size() >= 2);
  const json& last = chunks.back();
  CHECK(last["choices"].empty());
  CHECK(last["usage"]["completion_tokens"] == 5);
  CHECK(last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"].get<int>() + 5);
  CHECK(chunks[chunks.size() - 2]["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("embeddings, tokenize, detokenize and apply-template", "[http]") {
  HttpFixture f;
  auto res = f.post("/v1/embeddings", {{"model", "tiny"}, {"input", json::array({"Well 7", "Well 7", "pressure"})}});
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  CHECK(j["object"] == "list");
  REQUIRE(j["data"].size() == 3);
  const auto a = j["data"][0]["embedding"].get<std::vector<double>>();
  const auto b = j["data"][2]["embedding"].get<std::vector<double>>();
  CHECK(int(a.size()) == f.model.config().hidden_size);
  double norm = 0, dot = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    norm += a[i] * a[i];
    dot += a[i] * b[i];
  }
  CHECK(norm == Approx(1.0).epsilon(1e-4));  // L2-normalised
  CHECK(dot < 0.9999);                        // different texts, different vectors
  CHECK(j["data"][1]["embedding"] == j["data"][0]["embedding"]);
  {
    // The same vector from the training path's last hidden state (after the
    // final norm), mean-pooled over the tokens and L2-normalised.
    const auto ids = f.tokenizer.encode("Well 7", true);
    std::vector<std::int64_t> ids64(ids.begin(), ids.end());
    at::NoGradGuard no_grad;
    const at::Tensor hidden =
        f.model.forward_train_hidden(at::tensor(ids64, at::dtype(at::kLong)).reshape({1, std::int64_t(ids.size())}));
    const at::Tensor pooled = hidden.mean(1).squeeze(0);
    const at::Tensor unit = pooled / pooled.norm();
    REQUIRE(unit.size(0) == std::int64_t(a.size()));
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(unit[std::int64_t(i)].item<float>()).margin(2e-4));
  }
  CHECK(j["data"][1]["index"] == 1);
  const int expected_tokens = int(f.tokenizer.encode("Well 7", true).size() * 2 + f.tokenizer.encode("pressure", true).size());
  CHECK(j["usage"]["prompt_tokens"] == expected_tokens);
  // base64: the same floats, little-endian.
  auto b64 = f.post("/v1/embeddings", {{"model", "tiny"}, {"input", "Well 7"}, {"encoding_format", "base64"}});
  REQUIRE(b64);
  REQUIRE(b64->status == 200);
  CHECK(json::parse(b64->body)["data"][0]["embedding"].is_string());
  CHECK(error_param(f.post("/v1/embeddings", {{"model", "tiny"}, {"input", 5}}), 400) == "input");
  CHECK(error_param(f.post("/v1/embeddings", {{"model", "tiny"}, {"input", std::string(600, 'a')}}), 400) == "input");

  auto tok = f.post("/tokenize", {{"content", "hi!"}});
  REQUIRE(tok);
  REQUIRE(tok->status == 200);
  const auto ids = json::parse(tok->body)["tokens"].get<std::vector<int>>();
  CHECK(ids == f.tokenizer.encode("hi!", false));
  const auto with_bos = json::parse(f.post("/tokenize", {{"content", "hi!"}, {"add_special", true}})->body)["tokens"];
  CHECK(with_bos.get<std::vector<int>>() == f.tokenizer.encode("hi!", true));
  auto detok = f.post("/detokenize", {{"tokens", ids}});
  REQUIRE(detok);
  CHECK(json::parse(detok->body)["content"] == "hi!");
  CHECK(error_param(f.post("/detokenize", {{"tokens", {100000}}}), 400) == "tokens");
  CHECK(error_param(f.post("/tokenize", {{"text", "x"}}), 400) == "content");

  const json messages = json::array({{{"role", "system"}, {"content", "s"}}, {{"role", "user"}, {"content", "u"}}});
  auto tpl = f.post("/apply-template", {{"messages", messages}});
  REQUIRE(tpl);
  REQUIRE(tpl->status == 200);
  CHECK(json::parse(tpl->body)["prompt"] == f.service.render_chat({{"system", "s"}, {"user", "u"}}));
  CHECK(error_param(f.post("/apply-template", {{"messages", "u"}}), 400) == "messages");
}
