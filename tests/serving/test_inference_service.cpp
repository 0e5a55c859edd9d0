// InferenceService: results equal the inference library's generate() on the
// same weights, adapters hot-swap between requests, bad options and a full
// queue are refused with the field named.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/inference_service.h"
#include "fedge/training/records.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using inference::Model;
using inference::Tokenizer;

namespace {

constexpr std::uint64_t kSeed = 11;

// An adapter whose every parameter is a small deterministic non-zero value,
// so it visibly changes the model's output.
inference::LoraAdapter busy_adapter(const inference::ModelConfig& config, float scale) {
  inference::LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = {"q_proj", "v_proj", "o_proj", "up_proj", "down_proj"};
  auto adapter = inference::LoraAdapter::create(config, lc, 5);
  ParamVector p = adapter.to_params();
  auto v = p.values();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = scale * float(int((i * 2654435761u) % 17) - 8) / 8.0f;
  adapter.from_params(p);
  return adapter;
}

// generate() on a fresh copy of the same weights: the reference.
inference::GenerationResult reference(const std::string& prompt, int max_tokens,
                                      const inference::LoraAdapter* adapter = nullptr, float temperature = 0,
                                      std::uint64_t seed = 0) {
  auto model = Model::tiny(kSeed);
  auto tok = Tokenizer::byte_level_tiny();
  if (adapter) {
    model.add_adapter("a", adapter->clone());
    model.set_active_adapter("a");
  }
  inference::SamplingOptions o;
  o.max_tokens = max_tokens;
  o.temperature = temperature;
  o.seed = seed;
  return inference::generate(model, {tok.encode(prompt, true)}, o, &tok).at(0);
}

CompletionRequest request(const std::string& prompt, int max_tokens, AdapterChoice adapter = AdapterChoice::kDefault) {
  CompletionRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.adapter = adapter;
  return r;
}

// Holds the service's worker on one request's first token until release(),
// so the requests submitted meanwhile queue up behind it.
class WorkerGate {
 public:
  OnToken hold() {
    return [this](std::int32_t, std::string_view) {
      std::unique_lock lock(m_);
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
      return true;
    };
  }
  void wait_until_held() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return held_; });
  }
  void release() {
    {
      std::lock_guard lock(m_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool held_ = false, released_ = false;
};

struct Fixture {
  Fixture() { inference::setup_torch(1); }
  Model model = Model::tiny(kSeed);
  Tokenizer tokenizer = Tokenizer::byte_level_tiny();
};

}  // namespace

TEST_CASE("service greedy completion equals generate() token for token", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  auto ref = reference("hello edge", 12);
  std::string streamed;
  int calls = 0;
  auto r = service.complete(request("hello edge", 12), [&](std::int32_t, std::string_view text) {
    streamed += text;
    ++calls;
    return true;
  });
  CHECK(r.tokens == ref.tokens);
  CHECK(r.text == ref.text);
  CHECK(streamed == r.text);
  CHECK(calls >= int(r.tokens.size()));
  CHECK(r.prompt_tokens == ref.prompt_tokens);
  CHECK(r.completion_tokens == int(ref.tokens.size()));
  CHECK(r.finish_reason == (ref.stop_reason == "eos" ? "stop" : "length"));
  CHECK(r.adapter == "none");
  CHECK_FALSE(r.split);
  CHECK_FALSE(r.fell_back_to_local);
}

TEST_CASE("service sampling with a seed equals generate() with that seed", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  auto ref = reference("abc", 10, nullptr, 0.9f, 42);
  auto req = request("abc", 10);
  req.temperature = 0.9f;
  req.seed = 42;
  CHECK(service.complete(req).tokens == ref.tokens);
}

TEST_CASE("adapters install without stopping and each request uses its choice", "[serving]") {
  Fixture f;
  ServiceOptions options;
  options.expose_local_adapter = true;
  InferenceService service(f.model, f.tokenizer, options);
  const auto global = busy_adapter(f.model.config(), 1.0f);
  const auto local = busy_adapter(f.model.config(), -0.7f);
  const auto base_ref = reference("the well", 10);
  const auto global_ref = reference("the well", 10, &global);
  const auto local_ref = reference("the well", 10, &local);
  // The adapters must matter for this test to mean anything.
  REQUIRE(global_ref.tokens != base_ref.tokens);
  REQUIRE(local_ref.tokens != base_ref.tokens);
  REQUIRE(local_ref.tokens != global_ref.tokens);

  CHECK_FALSE(service.adapter_status(AdapterSlot::kGlobal).installed);
  CHECK(service.complete(request("the well", 10)).tokens == base_ref.tokens);

  service.install_adapter(AdapterSlot::kGlobal, global, 3);
  CHECK(service.adapter_status(AdapterSlot::kGlobal).version == 3);
  auto g = service.complete(request("the well", 10));  // default -> global
  CHECK(g.tokens == global_ref.tokens);
  CHECK(g.adapter == "global");
  CHECK(g.adapter_version == 3);
  CHECK(service.complete(request("the well", 10, AdapterChoice::kNone)).tokens == base_ref.tokens);
  CHECK_THROWS_AS(service.submit(request("the well", 10, AdapterChoice::kLocal)), InvalidRequest);

  // The flat-parameter path (what aggregation hands over).
  service.install_adapter(AdapterSlot::kLocal, local.to_params(), local.config(), 1);
  auto l = service.complete(request("the well", 10, AdapterChoice::kLocal));
  CHECK(l.tokens == local_ref.tokens);
  CHECK(l.adapter == "local");

  // A newer global replaces the old one.
  service.install_adapter(AdapterSlot::kGlobal, local, 4);
  auto g4 = service.complete(request("the well", 10, AdapterChoice::kGlobal));
  CHECK(g4.tokens == local_ref.tokens);
  CHECK(g4.adapter_version == 4);

  service.remove_adapter(AdapterSlot::kGlobal);
  CHECK_FALSE(service.adapter_status(AdapterSlot::kGlobal).installed);
  auto d = service.complete(request("the well", 10));  // default -> local now
  CHECK(d.adapter == "local");
  try {
    service.submit(request("the well", 10, AdapterChoice::kGlobal));
    FAIL("expected InvalidRequest");
  } catch (const InvalidRequest& e) {
    CHECK(e.field() == "adapter");
  }
}

TEST_CASE("an install during a request applies to the next request only", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  const auto global = busy_adapter(f.model.config(), 1.0f);
  const auto old = busy_adapter(f.model.config(), -0.7f);
  service.install_adapter(AdapterSlot::kGlobal, old, 1);
  const auto old_ref = reference("abc", 8, &old);
  const auto new_ref = reference("abc", 8, &global);
  bool installed = false;
  auto first = service.complete(request("abc", 8), [&](std::int32_t, std::string_view) {
    if (!installed) service.install_adapter(AdapterSlot::kGlobal, global, 2);  // from the worker thread, mid-request
    installed = true;
    return true;
  });
  CHECK(first.tokens == old_ref.tokens);
  CHECK(first.adapter_version == 1);
  auto second = service.complete(request("abc", 8));
  CHECK(second.tokens == new_ref.tokens);
  CHECK(second.adapter_version == 2);
}

TEST_CASE("adapter of another model shape is refused at install", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  auto other = inference::ModelConfig::tiny();
  other.num_layers = 2;
  inference::LoraConfig lc;
  CHECK_THROWS_AS(service.install_adapter(AdapterSlot::kGlobal, inference::LoraAdapter::create(other, lc, 1), 1), Error);
  CHECK_FALSE(service.adapter_status(AdapterSlot::kGlobal).installed);
}

TEST_CASE("bad request options name the field", "[serving]") {
  Fixture f;
  ServiceOptions o;
  o.max_tokens_limit = 64;
  InferenceService service(f.model, f.tokenizer, o);
  auto field_of = [&](CompletionRequest r) -> std::string {
    try {
      service.complete(std::move(r));
    } catch (const InvalidRequest& e) {
      return e.field();
    }
    return "accepted";
  };
  auto r = request("x", 4);
  r.max_tokens = 0;
  CHECK(field_of(r) == "max_tokens");
  r.max_tokens = 65;
  CHECK(field_of(r) == "max_tokens");
  r = request("x", 4);
  r.temperature = -1;
  CHECK(field_of(r) == "temperature");
  r.temperature = std::numeric_limits<float>::quiet_NaN();
  CHECK(field_of(r) == "temperature");
  r = request("x", 4);
  r.top_p = 0;
  CHECK(field_of(r) == "top_p");
  // Longer than the tiny model's 512-token context: refused by the worker.
  CHECK(field_of(request(std::string(600, 'a'), 4)) == "prompt");
  CHECK(field_of(request("fine", 4)) == "accepted");
}

TEST_CASE("a prompt near the context end stops at the context with finish_reason length", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  // BOS + 508 bytes = 509 tokens of the 512-token context: room for 3.
  auto r = service.complete(request(std::string(508, 'z'), 50));
  CHECK(r.prompt_tokens == 509);
  CHECK(r.completion_tokens <= 3);
  if (r.completion_tokens == 3) CHECK(r.finish_reason == "length");
}

TEST_CASE("ServiceOptions::context caps prompt plus answer below the model's context", "[serving]") {
  Fixture f;
  ServiceOptions o;
  o.context = 16;  // a node's [serve] context: a smaller KV cache per request
  InferenceService service(f.model, f.tokenizer, o);
  // BOS + 12 bytes = 13 tokens of 16: room for 3 new ones.
  auto r = service.complete(request(std::string(12, 'z'), 50));
  CHECK(r.prompt_tokens == 13);
  CHECK(r.completion_tokens <= 3);
  try {
    service.complete(request(std::string(20, 'z'), 4));
    FAIL("a prompt past the serving context was accepted");
  } catch (const InvalidRequest& e) {
    CHECK(e.field() == "prompt");
    CHECK(std::string(e.what()).find("serving context of 16 tokens") != std::string::npos);
  }
}

TEST_CASE("a full queue refuses with ServiceOverloaded and queued requests still finish", "[serving]") {
  Fixture f;
  ServiceOptions o;
  o.max_queue = 1;
  InferenceService service(f.model, f.tokenizer, o);
  WorkerGate gate;
  auto first = service.submit(request("a", 3), gate.hold());
  gate.wait_until_held();
  auto second = service.submit(request("b", 3));  // waits in the queue
  CHECK_THROWS_AS(service.submit(request("c", 3)), ServiceOverloaded);
  CHECK(service.stats().rejected == 1);
  CHECK(service.stats().queued == 1);
  gate.release();
  CHECK(first.get().completion_tokens >= 1);
  CHECK(second.get().tokens == reference("b", 3).tokens);
  CHECK(service.stats().completed == 2);
}

TEST_CASE("concurrent callers all get the answer they would get alone", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  const std::vector<std::string> prompts = {"alpha", "beta gamma", "delta", "epsilon zeta eta"};
  std::vector<std::vector<std::int32_t>> expected;
  for (const auto& p : prompts) expected.push_back(reference(p, 8).tokens);
  std::vector<std::vector<std::int32_t>> got(prompts.size() * 3);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = service.complete(request(prompts[i % prompts.size()], 8)).tokens; });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == expected[i % prompts.size()]);
}

TEST_CASE("stop() fails queued requests and refuses new ones", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  std::mutex m;
  std::condition_variable cv;
  bool started = false;
  std::atomic<bool> release{false};
  auto running = service.submit(request("a", 3), [&](std::int32_t, std::string_view) {
    {
      std::lock_guard lock(m);
      started = true;
    }
    cv.notify_all();
    while (!release.load()) std::this_thread::yield();
    return true;
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return started; });
  }
  auto queued = service.submit(request("b", 3));
  std::thread stopper([&] { service.stop(); });
  // stop() drops the queue before it waits for the running request.
  CHECK_THROWS_AS(queued.get(), Error);
  release = true;
  stopper.join();
  CHECK(running.get().completion_tokens >= 1);
  CHECK_THROWS_AS(service.submit(request("c", 3)), Error);
}

TEST_CASE("chat messages render with the training chat template", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  std::vector<training::ChatMessage> m = {{"system", "be brief"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "rate?"}};
  CHECK(service.render_chat(m) == "<|user|>be brief\nhi<|assistant|>hello<|user|>rate?<|assistant|>");
  // Same prompt as a training record with that reply.
  auto with_reply = m;
  with_reply.push_back({"assistant", "42"});
  CHECK(service.render_chat(m) == training::record_from_chat(with_reply).prompt);
}

TEST_CASE("chat requests render with the model's own chat template, as training does", "[serving]") {
  Fixture f;
  // A ChatML template (SmolLM2's), as a model's tokenizer_config.json carries it.
  f.tokenizer.set_chat_template(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
      "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}");
  InferenceService service(f.model, f.tokenizer);
  std::vector<training::ChatMessage> m = {{"system", "be brief"}, {"user", "hi"}};
  CHECK(service.render_chat(m) == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                                  "<|im_start|>assistant\n");
  auto with_reply = m;
  with_reply.push_back({"assistant", "ok"});
  const auto chat = inference::ChatTemplate::for_tokenizer(f.tokenizer);
  const auto record = training::record_from_chat(with_reply, chat);
  CHECK(record.prompt == service.render_chat(m));  // trained on the format it is served with
  CHECK(record.completion == "ok<|im_end|>\n");
}

TEST_CASE("a chat template that raises refuses the request with its message", "[serving]") {
  Fixture f;
  f.tokenizer.set_chat_template("{{ raise_exception('Only user and assistant roles are supported!') }}");
  InferenceService service(f.model, f.tokenizer);
  CHECK_THROWS_WITH(service.render_chat({{"system", "x"}}),
                    Catch::Contains("raise_exception: Only user and assistant roles are supported!"));
}

TEST_CASE("adapter choice names parse both ways", "[serving]") {
  for (auto c : {AdapterChoice::kDefault, AdapterChoice::kGlobal, AdapterChoice::kLocal, AdapterChoice::kNone})
    CHECK(parse_adapter_choice(adapter_choice_name(c)) == c);
  CHECK_FALSE(parse_adapter_choice("Global").has_value());
  CHECK_FALSE(parse_adapter_choice("").has_value());
}

TEST_CASE("waiting requests are decoded as a batch and each gets its solo answer", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  const auto global = busy_adapter(f.model.config(), 1.0f);
  service.install_adapter(AdapterSlot::kGlobal, global, 1);
  // Hold the worker on a first request so the others queue up behind it.
  WorkerGate gate;
  auto blocker = service.submit(request("hold", 2, AdapterChoice::kNone), gate.hold());
  gate.wait_until_held();
  struct Case {
    std::string prompt;
    int max_tokens;
    AdapterChoice adapter;
    float temperature;
    std::uint64_t seed;
  };
  const std::vector<Case> cases = {{"a short one", 5, AdapterChoice::kNone, 0, 0},
                                   {"a much longer prompt than the others", 12, AdapterChoice::kNone, 0, 0},
                                   {"with the adapter", 9, AdapterChoice::kGlobal, 0, 0},
                                   {"sampled", 10, AdapterChoice::kNone, 0.8f, 7},
                                   {"x", 7, AdapterChoice::kNone, 0, 0},
                                   {"adapter again", 6, AdapterChoice::kGlobal, 0, 0}};
  std::vector<std::future<CompletionResult>> futures;
  std::vector<std::string> streamed(cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto r = request(cases[i].prompt, cases[i].max_tokens, cases[i].adapter);
    r.temperature = cases[i].temperature;
    r.seed = cases[i].seed;
    futures.push_back(service.submit(r, [&streamed, i](std::int32_t, std::string_view text) {
      streamed[i] += text;
      return true;
    }));
  }
  gate.release();
  blocker.get();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i << ": " << cases[i].prompt);
    const auto got = futures[i].get();
    const auto ref = reference(cases[i].prompt, cases[i].max_tokens,
                               cases[i].adapter == AdapterChoice::kGlobal ? &global : nullptr,
                               cases[i].temperature, cases[i].seed);
    CHECK(got.tokens == ref.tokens);
    CHECK(got.text == ref.text);
    CHECK(streamed[i] == got.text);
    CHECK(got.adapter == (cases[i].adapter == AdapterChoice::kGlobal ? "global" : "none"));
  }
  // Four "none" requests waited together, then the two "global" ones.
  CHECK(service.stats().batches == 2);
  CHECK(service.stats().completed == cases.size() + 1);
}

TEST_CASE("stop strings, penalties, min_p, top_k and logprobs give the same answer batched and alone", "[serving]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  // Stop strings from inside each prompt's greedy answer (bytes 3..5: several tokens).
  std::vector<CompletionRequest> cases;
  for (const std::string prompt : {"alpha", "beta gamma", "delta", "epsilon"}) {
    auto r = request(prompt, 16);
    const std::string text = service.complete(r).text;
    if (text.size() >= 6 && text.substr(3, 3).find('\xEF') == std::string::npos) r.stop = {"\x02never", text.substr(3, 3)};
    cases.push_back(r);
  }
  cases[1].frequency_penalty = 1.5f;
  cases[1].presence_penalty = 0.5f;
  cases[2].temperature = 0.9f;
  cases[2].seed = 3;
  cases[2].min_p = 0.05f;
  cases[2].top_k = 20;
  cases[3].logprobs = 4;
  cases[0].logprobs = 0;
  std::vector<CompletionResult> alone;
  for (const auto& c : cases) alone.push_back(service.complete(c));
  // Hold the worker so the cases queue up and decode as one batch.
  WorkerGate gate;
  auto blocker = service.submit(request("hold", 2), gate.hold());
  gate.wait_until_held();
  std::vector<std::string> streamed(cases.size());
  std::vector<OnToken> callbacks;
  for (std::size_t i = 0; i < cases.size(); ++i)
    callbacks.push_back([&streamed, i](std::int32_t, std::string_view text) {
      streamed[i] += text;
      return true;
    });
  auto futures = service.submit_all(cases, callbacks);
  gate.release();
  blocker.get();
  int stopped = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i << ": " << cases[i].prompt);
    const auto got = futures[i].get();
    CHECK(got.tokens == alone[i].tokens);
    CHECK(got.text == alone[i].text);
    CHECK(streamed[i] == got.text);
    CHECK(got.finish_reason == alone[i].finish_reason);
    for (const auto& s : cases[i].stop) CHECK(got.text.find(s) == std::string::npos);
    if (!cases[i].stop.empty() && got.finish_reason == "stop") ++stopped;
    REQUIRE(got.logprobs.size() == alone[i].logprobs.size());
    for (std::size_t t = 0; t < got.logprobs.size(); ++t) {
      CHECK(got.logprobs[t].chosen.token == alone[i].logprobs[t].chosen.token);
      CHECK(got.logprobs[t].chosen.logprob == Approx(alone[i].logprobs[t].chosen.logprob).margin(1e-4));
      CHECK(got.logprobs[t].top.size() == std::size_t(std::max(cases[i].logprobs, 0)));
    }
  }
  CHECK(stopped >= 1);
  CHECK(futures.size() == cases.size());
  CHECK(service.stats().batches >= 1);
  CHECK(cases[3].logprobs == 4);
  CHECK(alone[3].logprobs.size() == alone[3].text_offsets.size());
}

TEST_CASE("submit_all queues all choices or none", "[serving]") {
  Fixture f;
  ServiceOptions o;
  o.max_queue = 2;
  InferenceService service(f.model, f.tokenizer, o);
  WorkerGate gate;
  auto first = service.submit(request("a", 3), gate.hold());
  gate.wait_until_held();
  CHECK_THROWS_AS(service.submit_all(std::vector<CompletionRequest>(3, request("b", 3))), ServiceOverloaded);
  CHECK(service.stats().queued == 0);  // none of the three went in
  auto two = service.submit_all(std::vector<CompletionRequest>(2, request("b", 3)));
  CHECK(service.stats().queued == 2);
  gate.release();
  first.get();
  for (auto& fut : two) CHECK(fut.get().tokens == reference("b", 3).tokens);
  auto bad = request("b", 3);
  bad.stop = {std::string(300, 'x')};
  CHECK_THROWS_AS(service.submit(bad), InvalidRequest);
  bad.stop.clear();
  bad.min_p = 2;
  CHECK_THROWS_AS(service.submit(bad), InvalidRequest);
}

// ---------------- continuous batching ----------------

namespace {

// The order in which the worker streamed tokens, by request name: when each
// request started and finished relative to the others, without clocks.
class Timeline {
 public:
  // on_token for request `name`; `at_token(n)` runs at its n-th token (from
  // 1) on the worker thread, and its false cancels the request.
  OnToken record(std::string name, std::function<bool(int)> at_token = {}) {
    return [this, name, at_token, n = 0](std::int32_t token, std::string_view) mutable {
      if (token < 0) return true;  // the held-back text at the end
      {
        std::lock_guard lock(m_);
        events_.push_back(name);
      }
      return at_token ? at_token(++n) : true;
    };
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(m_);
    return events_;
  }
  int first(const std::string& name) const {
    std::lock_guard lock(m_);
    for (std::size_t i = 0; i < events_.size(); ++i)
      if (events_[i] == name) return int(i);
    FAIL("no token of " << name);
    return -1;
  }
  int last(const std::string& name) const {
    std::lock_guard lock(m_);
    for (std::size_t i = events_.size(); i-- > 0;)
      if (events_[i] == name) return int(i);
    FAIL("no token of " << name);
    return -1;
  }
  // The most requests that were between their first and last token at once.
  int most_at_once() const {
    std::set<std::string> names;
    {
      std::lock_guard lock(m_);
      names.insert(events_.begin(), events_.end());
    }
    int most = 0;
    const int n = int(events_.size());
    for (int i = 0; i < n; ++i) {
      int now = 0;
      for (const auto& name : names) now += first(name) <= i && i <= last(name);
      most = std::max(most, now);
    }
    return most;
  }

 private:
  mutable std::mutex m_;
  std::vector<std::string> events_;
};

}  // namespace

TEST_CASE("a request submitted mid-decode joins the running batch and both get their solo answers",
          "[serving][continuous]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  const auto ref_a = reference("the first request", 16), ref_b = reference("second", 6);
  REQUIRE(ref_a.tokens.size() == 16);  // no early end: a is still decoding when b arrives
  REQUIRE(ref_b.tokens.size() == 6);
  Timeline t;
  std::future<CompletionResult> b;
  auto a = service.submit(request("the first request", 16), t.record("a", [&](int n) {
    if (n == 3) b = service.submit(request("second", 6), t.record("b"));  // while a decodes
    return true;
  }));
  const auto got_a = a.get();
  const auto got_b = b.get();
  CHECK(got_a.tokens == ref_a.tokens);
  CHECK(got_b.tokens == ref_b.tokens);
  CHECK(got_b.text == ref_b.text);
  // b prefilled in the pass after a's third token, the same pass that gave
  // a its fourth (a's row comes first): a joining row costs a no pass of its own.
  const std::vector<std::string> order = t.events();
  REQUIRE(order.size() == 22);
  CHECK(std::vector<std::string>(order.begin(), order.begin() + 6) ==
        std::vector<std::string>{"a", "a", "a", "a", "b", "a"});
  CHECK(t.last("b") < t.last("a"));   // and b finished while a still ran
  CHECK(service.stats().batches == 1);
  CHECK(service.stats().completed == 2);
}

TEST_CASE("a finished row frees its slot for a waiting request and at most max_batch rows decode together",
          "[serving][continuous]") {
  Fixture f;
  ServiceOptions o;
  o.max_batch = 2;
  InferenceService service(f.model, f.tokenizer, o);
  const std::vector<std::string> names = {"bee", "sea", "dee"};
  std::vector<inference::GenerationResult> refs;
  for (const auto& n : names) {
    refs.push_back(reference(n, 12));
    REQUIRE(refs.back().tokens.size() == 12);
  }
  WorkerGate gate;
  OnToken hold = gate.hold();
  Timeline t;
  auto a = service.submit(request("a", 3), t.record("a", [&](int n) { return n == 1 ? hold(0, "") : true; }));
  gate.wait_until_held();
  std::vector<std::future<CompletionResult>> futures;
  for (const auto& n : names) futures.push_back(service.submit(request(n, 12), t.record(n)));
  gate.release();
  CHECK(a.get().tokens == reference("a", 3).tokens);
  for (std::size_t i = 0; i < names.size(); ++i) CHECK(futures[i].get().tokens == refs[i].tokens);
  CHECK(t.most_at_once() == 2);
  CHECK(t.first("bee") < t.last("a"));  // joined a at once
  CHECK(t.first("sea") > t.last("a"));  // waited for a's row ...
  CHECK(t.first("sea") < t.last("bee"));  // ... and took it while bee still ran
  CHECK(t.first("dee") > t.last("bee"));
}

TEST_CASE("a run passes over a request for another adapter at most max_batch times, then it runs next",
          "[serving][continuous]") {
  Fixture f;
  ServiceOptions o;
  o.max_batch = 2;
  InferenceService service(f.model, f.tokenizer, o);
  const auto global = busy_adapter(f.model.config(), 1.0f);
  service.install_adapter(AdapterSlot::kGlobal, global, 1);
  const auto ref_a = reference("long one", 20);
  REQUIRE(ref_a.tokens.size() == 20);
  Timeline t;
  std::future<CompletionResult> g;
  std::vector<std::future<CompletionResult>> later;
  const std::vector<std::string> names = {"n1", "n2", "n3"};
  auto a = service.submit(request("long one", 20, AdapterChoice::kNone), t.record("a", [&](int n) {
    if (n == 2) {
      g = service.submit(request("for the adapter", 6, AdapterChoice::kGlobal), t.record("g"));
      for (const auto& name : names) later.push_back(service.submit(request(name, 4, AdapterChoice::kNone), t.record(name)));
    }
    return true;
  }));
  CHECK(a.get().tokens == ref_a.tokens);
  const auto got_g = g.get();
  CHECK(got_g.tokens == reference("for the adapter", 6, &global).tokens);
  CHECK(got_g.adapter == "global");
  for (std::size_t i = 0; i < names.size(); ++i) CHECK(later[i].get().tokens == reference(names[i], 4).tokens);
  // n1 and n2 joined a's run past g; then the run took no one, and g went before n3.
  CHECK(t.first("n2") < t.last("a"));
  CHECK(t.first("g") > t.last("a"));
  CHECK(t.first("g") > t.last("n2"));
  CHECK(t.first("n3") > t.last("g"));
}

TEST_CASE("an adapter installed while a batch runs applies to requests submitted after it, not mid-run",
          "[serving][continuous]") {
  Fixture f;
  InferenceService service(f.model, f.tokenizer);
  const auto old = busy_adapter(f.model.config(), -0.7f), fresh = busy_adapter(f.model.config(), 1.0f);
  service.install_adapter(AdapterSlot::kGlobal, old, 1);
  Timeline t;
  std::future<CompletionResult> b;
  auto a = service.submit(request("abc", 10, AdapterChoice::kGlobal), t.record("a", [&](int n) {
    if (n == 2) {
      service.install_adapter(AdapterSlot::kGlobal, fresh, 2);
      b = service.submit(request("abc", 6, AdapterChoice::kGlobal), t.record("b"));
    }
    return true;
  }));
  const auto got_a = a.get();
  CHECK(got_a.tokens == reference("abc", 10, &old).tokens);
  CHECK(got_a.adapter_version == 1);
  const auto got_b = b.get();
  CHECK(got_b.tokens == reference("abc", 6, &fresh).tokens);
  CHECK(got_b.adapter_version == 2);
  CHECK(t.first("b") > t.last("a"));
}

TEST_CASE("a cancelled row and a refused prompt leave the other rows of the batch untouched",
          "[serving][continuous]") {
  Fixture f;
  ServiceOptions o;
  o.context = 40;
  InferenceService service(f.model, f.tokenizer, o);
  const auto ref_a = reference("steady", 14), ref_b = reference("cancel me", 10), ref_c = reference("fine", 5);
  REQUIRE(ref_a.tokens.size() == 14);
  REQUIRE(ref_b.tokens.size() >= 3);
  Timeline t;
  std::future<CompletionResult> b, too_long, c;
  auto a = service.submit(request("steady", 14), t.record("a", [&](int n) {
    if (n == 2) {
      b = service.submit(request("cancel me", 10), t.record("b", [](int m) { return m < 3; }));  // stops at its 3rd
      too_long = service.submit(request(std::string(60, 'z'), 4), t.record("long"));
      c = service.submit(request("fine", 5), t.record("c"));
    }
    return true;
  }));
  CHECK(a.get().tokens == ref_a.tokens);
  const auto got_b = b.get();
  CHECK(got_b.finish_reason == "stop");
  CHECK(got_b.tokens == std::vector<std::int32_t>(ref_b.tokens.begin(), ref_b.tokens.begin() + 3));
  CHECK(c.get().tokens == ref_c.tokens);
  try {
    too_long.get();
    FAIL("a prompt past the serving context was accepted");
  } catch (const InvalidRequest& e) {
    CHECK(e.field() == "prompt");
    CHECK(std::string(e.what()).find("serving context of 40 tokens") != std::string::npos);
  }
  CHECK(t.first("b") < t.last("a"));
  CHECK(t.first("c") < t.last("a"));
  CHECK(service.stats().failed == 1);
  CHECK(service.stats().completed == 3);
}
