// libFuzzer target for the HTTP API's request bodies (serving/requests.h):
// POST /v1/completions, /v1/chat/completions, /v1/embeddings, /tokenize,
// /detokenize and /apply-template. Built and run by scripts/fuzz.sh
// (docs/FUZZING.md). Accepted stop strings also go through a StopFilter
// (serving/sampling.h) with the prompt as the generated text.
// Each input is one body, read as both endpoints would read it. It must be
// refused with an HttpError (status 400 or 404, naming the field where one is
// at fault) or be accepted; an accepted request has its fields in the ranges
// the service relies on, and an accepted chat renders to a prompt through the
// chat template (training::record_from_chat in fedge's own format;
// InferenceService::render_chat renders the model's, tested in test_serving). Anything else (crash, other exception, sanitizer report) is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/serving/requests.h"
#include "fedge/serving/sampling.h"
#include "fedge/training/records.h"

namespace {

using namespace fedge::serving;

void check(bool ok) {
  if (!ok) std::abort();
}

void check_accepted(const ParsedRequest& p, const RequestRules& rules) {
  const CompletionRequest& r = p.request;
  check(r.max_tokens >= 1 && r.max_tokens <= rules.max_tokens_limit);
  check(std::isfinite(r.temperature) && r.temperature >= 0 && r.temperature <= 2);
  check(r.top_p > 0 && r.top_p <= 1);
  check(p.model.rfind(rules.model_name, 0) == 0);
  check(p.n >= 1 && p.n <= rules.max_n);
  check(r.stop.size() <= std::size_t(kMaxStopStrings));
  for (const auto& s : r.stop) check(!s.empty() && s.size() <= kMaxStopBytes);
  check(r.top_k >= 0 && r.min_p >= 0 && r.min_p <= 1);
  check(std::abs(r.presence_penalty) <= 2 && std::abs(r.frequency_penalty) <= 2);
  check(r.logprobs >= -1 && r.logprobs <= kMaxTopLogprobs);
  check(!p.include_usage || p.stream);
  // The stop filter never shows a stop string, and shows all text without one.
  StopFilter filter(r.stop);
  std::string shown;
  for (char c : r.prompt) shown += filter.push(std::string_view(&c, 1));
  shown += filter.finish();
  for (const auto& s : r.stop) check(shown.find(s) == std::string::npos);
  if (!filter.stopped()) check(shown == r.prompt);
}

// A parser that must answer with its value or an HttpError 400/404.
template <class F>
void refused_or_read(F read) {
  try {
    read();
  } catch (const HttpError& e) {
    check(e.status == 400 || e.status == 404);
    check(!e.message.empty());
  }
}

template <class Parse>
void read_as(const nlohmann::json& body, const RequestRules& rules, Parse parse, bool chat) {
  try {
    const ParsedRequest p = parse(body, rules);
    check_accepted(p, rules);
    if (chat) {
      check(!p.messages.empty());
      auto turns = p.messages;
      turns.push_back({"assistant", ""});
      (void)fedge::training::record_from_chat(turns);  // every accepted role renders
    }
  } catch (const HttpError& e) {
    check(e.status == 400 || e.status == 404);
    check(!e.message.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  RequestRules rules;
  rules.model_name = "tiny";
  rules.max_tokens_limit = 512;
  nlohmann::json body;
  try {
    body = parse_json_body(text);
  } catch (const HttpError& e) {
    check(e.status == 400);
    return 0;
  }
  read_as(body, rules, parse_completion_request, false);
  read_as(body, rules, parse_chat_request, true);
  refused_or_read([&] {
    const EmbeddingRequest e = parse_embedding_request(body, rules);
    check(!e.inputs.empty() && e.inputs.size() <= std::size_t(kMaxEmbeddingInputs));
  });
  refused_or_read([&] { (void)parse_tokenize_request(body); });
  refused_or_read([&] {
    for (std::int32_t id : parse_detokenize_request(body, 259)) check(id >= 0 && id < 259);
  });
  refused_or_read([&] { (void)parse_template_request(body); });
  return 0;
}
