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

struct CompletionRequest {
  std::string prompt;  // raw text; chat messages are rendered by render_chat()
  int max_tokens = 16;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
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
};

// A completion or chat request as read from its body. For chat, `messages`
// holds the turns and request.prompt is left empty (the service renders them).
struct ParsedRequest {
  CompletionRequest request;
  std::string model;  // as asked
  bool stream = false;
  std::vector<training::ChatMessage> messages;  // chat only
};

// The body as a JSON object; HttpError 400 for invalid JSON or another type.
nlohmann::json parse_json_body(std::string_view body);
// POST /v1/completions: {model, prompt, max_tokens, temperature, top_p, seed,
// stream, adapter, n}. HttpError 400 naming the field, 404 for an unknown model.
ParsedRequest parse_completion_request(const nlohmann::json& body, const RequestRules& rules);
// POST /v1/chat/completions: as above with `messages` instead of `prompt`.
ParsedRequest parse_chat_request(const nlohmann::json& body, const RequestRules& rules);

}  // namespace fedge::serving
