// The HTTP API's request bodies, read without a model: what /v1/completions
// and /v1/chat/completions accept, as pure functions from the body's text to a
// CompletionRequest (or an HttpError naming the field). http_server.cpp calls
// them; they live apart from it, in a target without libtorch
// (fedge_serving_requests), so the fuzz build (tests/fuzz/fuzz_http.cpp)
// reaches every byte of a body a client controls. See docs/SERVING.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "fedge/training/records.h"

namespace fedge::serving {

// Which adapter a request runs with. kDefault: "global" when installed, else
// "local" when installed and exposed (ServiceOptions::expose_local_adapter),
// else none.
enum class AdapterChoice { kDefault, kGlobal, kLocal, kNone };
// The two slots an adapter can be installed in.
enum class AdapterSlot { kGlobal, kLocal };

const char* adapter_choice_name(AdapterChoice choice);  // "default", "global", "local", "none"
std::optional<AdapterChoice> parse_adapter_choice(std::string_view name);
const char* adapter_slot_name(AdapterSlot slot);  // "global", "local"

// Limits on what one request may ask for (docs/SERVING.md lists them).
inline constexpr int kMaxStopStrings = 4;         // OpenAI's limit
inline constexpr std::size_t kMaxStopBytes = 256; // per stop string
inline constexpr int kMaxTopLogprobs = 20;        // OpenAI's limit for chat
inline constexpr int kMaxEmbeddingInputs = 64;    // strings per /v1/embeddings request
inline constexpr std::size_t kMaxDetokenizeIds = 65536;

struct CompletionRequest {
  std::string prompt;  // raw text; chat messages are rendered by render_chat()
  int max_tokens = 16;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  int top_k = 0;             // 0: off
  float min_p = 0.0f;        // 0: off; else drop tokens below min_p x the top token's probability
  // OpenAI's penalties over the tokens generated so far:
  // logit -= presence * (count > 0) + frequency * count.
  float presence_penalty = 0.0f, frequency_penalty = 0.0f;
  // Generation ends before the first of these texts; it is never returned.
  std::vector<std::string> stop;
  // -1: no log-probabilities; k >= 0: each token's log-probability and the k
  // most likely alternatives (from the unmodified model distribution).
  int logprobs = -1;
  std::uint64_t seed = 0;
  AdapterChoice adapter = AdapterChoice::kDefault;
};

// A request the server refuses, as OpenAI reports it.
struct HttpError {
  HttpError(int status, std::string message, std::string param = {}, std::string type = "invalid_request_error",
            std::string code = {})
      : status(status), message(std::move(message)), param(std::move(param)), type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string message;
  std::string param;  // the offending field, if any
  std::string type;
  std::string code;
};

// What a body is checked against: the served model's name and the service's
// limits.
struct RequestRules {
  std::string model_name = "base";  // "<name>", "<name>+global", "+local", "+none" are known
  int max_tokens_limit = 4096;      // largest max_tokens a request may ask for
  int default_max_tokens = 16;      // without max_tokens (or max_completion_tokens)
  int max_n = 8;                    // largest n (choices per request)
};

// A completion or chat request as read from its body. For chat, `messages`
// holds the turns and request.prompt is left empty (the service renders them).
struct ParsedRequest {
  CompletionRequest request;
  std::string model;  // as asked
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  int n = 1;                   // choices, each sampled on its own
  std::vector<training::ChatMessage> messages;  // chat only
};

// POST /v1/embeddings: the texts to embed and the adapter to embed them with.
struct EmbeddingRequest {
  std::vector<std::string> inputs;
  std::string model;  // as asked
  AdapterChoice adapter = AdapterChoice::kDefault;
  bool base64 = false;  // encoding_format "base64": little-endian float32, base64
};

// The body as a JSON object; HttpError 400 for invalid JSON or another type.
nlohmann::json parse_json_body(std::string_view body);
// POST /v1/completions: {model, prompt, max_tokens, temperature, top_p, seed,
// stream, adapter, n}. HttpError 400 naming the field, 404 for an unknown model.
ParsedRequest parse_completion_request(const nlohmann::json& body, const RequestRules& rules);
// POST /v1/chat/completions: as above with `messages` instead of `prompt`.
ParsedRequest parse_chat_request(const nlohmann::json& body, const RequestRules& rules);
// POST /v1/embeddings: {model, input: string | [string, ...], encoding_format}.
EmbeddingRequest parse_embedding_request(const nlohmann::json& body, const RequestRules& rules);
// POST /tokenize (llama.cpp's server): {content, add_special}; add_special
// (default false) adds BOS as a prompt gets it.
struct TokenizeRequest {
  std::string content;
  bool add_special = false;
};
TokenizeRequest parse_tokenize_request(const nlohmann::json& body);
// POST /detokenize: {tokens: [id, ...]}, each id in 0..vocab_size-1.
std::vector<std::int32_t> parse_detokenize_request(const nlohmann::json& body, int vocab_size);
// POST /apply-template: {messages: [...]}, checked as chat's.
std::vector<training::ChatMessage> parse_template_request(const nlohmann::json& body);
// The seed of choice `index` of a request with `seed`: the seed itself for
// choice 0 (n = 1 is unchanged), a different stream for each other choice.
std::uint64_t choice_seed(std::uint64_t seed, int index);

}  // namespace fedge::serving
