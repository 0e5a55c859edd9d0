// The HTTP API's request bodies (requests.h): every field a client sends is
// checked here, with an OpenAI-style error naming it.
#include "fedge/serving/requests.h"

#include <nlohmann/json.hpp>

namespace fedge::serving {

using json = nlohmann::json;

const char* adapter_choice_name(AdapterChoice choice) {
  switch (choice) {
    case AdapterChoice::kDefault: return "default";
    case AdapterChoice::kGlobal: return "global";
    case AdapterChoice::kLocal: return "local";
    case AdapterChoice::kNone: return "none";
  }
  return "?";
}

std::optional<AdapterChoice> parse_adapter_choice(std::string_view name) {
  for (auto c : {AdapterChoice::kDefault, AdapterChoice::kGlobal, AdapterChoice::kLocal, AdapterChoice::kNone})
    if (name == adapter_choice_name(c)) return c;
  return std::nullopt;
}

const char* adapter_slot_name(AdapterSlot slot) { return slot == AdapterSlot::kGlobal ? "global" : "local"; }

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw HttpError{400, message, param}; }

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

template <class T>
T number_field(const json& body, const char* name, T fallback, double lo, double hi, bool integer) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (integer ? !v->is_number_integer() : !v->is_number())
    bad(name, std::string("'") + name + "' must be " + (integer ? "an integer" : "a number"));
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi))
    bad(name, std::string("'") + name + "' is " + v->dump() + ", outside " + json(lo).dump() + ".." + json(hi).dump());
  return v->get<T>();
}

// Everything /v1/completions and /v1/chat/completions share.
ParsedRequest parse_common(const json& body, const RequestRules& rules) {
  ParsedRequest p;
  const json* model = field(body, "model");
  if (!model) bad("model", "'model' is required (see GET /v1/models)");
  if (!model->is_string()) bad("model", "'model' must be a string");
  p.model = model->get<std::string>();
  const std::string& base = rules.model_name;
  AdapterChoice by_model = AdapterChoice::kDefault;
  if (p.model == base) by_model = AdapterChoice::kDefault;
  else if (p.model == base + "+global") by_model = AdapterChoice::kGlobal;
  else if (p.model == base + "+local") by_model = AdapterChoice::kLocal;
  else if (p.model == base + "+none") by_model = AdapterChoice::kNone;
  else
    throw HttpError{404, "The model '" + p.model + "' does not exist; this node serves '" + base + "'", "model",
                    "invalid_request_error", "model_not_found"};
  p.request.adapter = by_model;
  if (const json* a = field(body, "adapter")) {
    if (!a->is_string()) bad("adapter", "'adapter' must be a string: global, local or none");
    auto choice = parse_adapter_choice(a->get<std::string>());
    if (!choice) bad("adapter", "'adapter' is " + a->dump() + "; expected global, local or none");
    if (by_model != AdapterChoice::kDefault && *choice != by_model && *choice != AdapterChoice::kDefault)
      bad("adapter", "'adapter' " + a->dump() + " contradicts model '" + p.model + "'");
    if (*choice != AdapterChoice::kDefault) p.request.adapter = *choice;
  }
  const int limit = rules.max_tokens_limit;
  // Newer OpenAI clients send max_completion_tokens instead.
  const char* max_field = field(body, "max_tokens") || !field(body, "max_completion_tokens") ? "max_tokens"
                                                                                            : "max_completion_tokens";
  p.request.max_tokens = number_field<int>(body, max_field, rules.default_max_tokens, 1, limit, true);
  p.request.temperature = number_field<float>(body, "temperature", 1.0f, 0, 2, false);
  p.request.top_p = number_field<float>(body, "top_p", 1.0f, 0, 1, false);
  if (!(p.request.top_p > 0)) bad("top_p", "'top_p' must be greater than 0");
  p.request.seed = number_field<std::uint64_t>(body, "seed", 0, 0, 1.8446744073709552e19, true);
  if (const json* s = field(body, "stream")) {
    if (!s->is_boolean()) bad("stream", "'stream' must be true or false");
    p.stream = s->get<bool>();
  }
  number_field<int>(body, "n", 1, 1, 1, true);  // one choice per request
  if (field(body, "stop")) bad("stop", "'stop' sequences are not supported by this server; leave it out");
  return p;
}

std::string parse_prompt(const json& body) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) return (*p)[0].get<std::string>();
  if (!p->is_string()) bad("prompt", "'prompt' must be a string (or an array of one string)");
  return p->get<std::string>();
}

std::vector<training::ChatMessage> parse_messages(const json& body) {
  const json* m = field(body, "messages");
  if (!m) bad("messages", "'messages' is required");
  if (!m->is_array() || m->empty()) bad("messages", "'messages' must be a non-empty array");
  std::vector<training::ChatMessage> out;
  for (std::size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) bad(at, "'" + at + "' must be an object with role and content");
    const json* role = field(msg, "role");
    const json* content = field(msg, "content");
    if (!role || !role->is_string()) bad(at + ".role", "'" + at + ".role' must be a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant")
      bad(at + ".role", "'" + at + ".role' is '" + r + "'; expected system, user or assistant");
    if (!content || !content->is_string()) bad(at + ".content", "'" + at + ".content' must be a string");
    out.push_back({r, content->get<std::string>()});
  }
  return out;
}

}  // namespace

json parse_json_body(std::string_view body) {
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number beyond a double
    throw HttpError{400, std::string("the request body is not valid JSON: ") + e.what(), ""};
  }
  if (!parsed.is_object()) throw HttpError{400, "the request body must be a JSON object", ""};
  return parsed;
}

ParsedRequest parse_completion_request(const json& body, const RequestRules& rules) {
  ParsedRequest p = parse_common(body, rules);
  p.request.prompt = parse_prompt(body);
  return p;
}

ParsedRequest parse_chat_request(const json& body, const RequestRules& rules) {
  ParsedRequest p = parse_common(body, rules);
  p.messages = parse_messages(body);
  return p;
}

}  // namespace fedge::serving
