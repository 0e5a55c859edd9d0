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

std::vector<std::string> parse_stop(const json& body);

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
  p.n = number_field<int>(body, "n", 1, 1, rules.max_n, true);
  p.request.stop = parse_stop(body);
  // llama.cpp's server takes these extras too; OpenAI's clients pass them through.
  p.request.top_k = number_field<int>(body, "top_k", 0, 0, 1 << 20, true);
  p.request.min_p = number_field<float>(body, "min_p", 0.0f, 0, 1, false);
  p.request.presence_penalty = number_field<float>(body, "presence_penalty", 0.0f, -2, 2, false);
  p.request.frequency_penalty = number_field<float>(body, "frequency_penalty", 0.0f, -2, 2, false);
  if (const json* o = field(body, "stream_options")) {
    if (!o->is_object()) bad("stream_options", "'stream_options' must be an object such as {\"include_usage\": true}");
    if (!p.stream) bad("stream_options", "'stream_options' is only allowed with \"stream\": true");
    if (const json* u = field(*o, "include_usage")) {
      if (!u->is_boolean()) bad("stream_options.include_usage", "'stream_options.include_usage' must be true or false");
      p.include_usage = u->get<bool>();
    }
  }
  return p;
}

// "stop": a string or an array of up to kMaxStopStrings non-empty strings.
std::vector<std::string> parse_stop(const json& body) {
  const json* s = field(body, "stop");
  if (!s) return {};
  const std::string shape = "'stop' must be a string or an array of at most " + std::to_string(kMaxStopStrings) +
                            " strings";
  std::vector<std::string> stops;
  if (s->is_string()) stops.push_back(s->get<std::string>());
  else if (s->is_array()) {
    if (s->size() > std::size_t(kMaxStopStrings))
      bad("stop", shape + "; got " + std::to_string(s->size()));
    for (std::size_t i = 0; i < s->size(); ++i) {
      if (!(*s)[i].is_string()) bad("stop", shape + "; stop[" + std::to_string(i) + "] is " + (*s)[i].type_name());
      stops.push_back((*s)[i].get<std::string>());
    }
  } else {
    bad("stop", shape);
  }
  for (const auto& text : stops) {
    if (text.empty()) bad("stop", "a 'stop' string must not be empty");
    if (text.size() > kMaxStopBytes)
      bad("stop", "a 'stop' string is " + std::to_string(text.size()) + " bytes; at most " +
                      std::to_string(kMaxStopBytes) + " are allowed");
  }
  return stops;
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
  // The legacy form: "logprobs": k, the k most likely alternatives per token.
  p.request.logprobs = number_field<int>(body, "logprobs", -1, 0, kMaxTopLogprobs, true);
  return p;
}

ParsedRequest parse_chat_request(const json& body, const RequestRules& rules) {
  ParsedRequest p = parse_common(body, rules);
  p.messages = parse_messages(body);
  // Chat's form: "logprobs": true, "top_logprobs": k.
  bool want = false;
  if (const json* l = field(body, "logprobs")) {
    if (!l->is_boolean()) bad("logprobs", "'logprobs' must be true or false (top_logprobs says how many alternatives)");
    want = l->get<bool>();
  }
  const int top = number_field<int>(body, "top_logprobs", 0, 0, kMaxTopLogprobs, true);
  if (field(body, "top_logprobs") && !want) bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
  p.request.logprobs = want ? top : -1;
  return p;
}

EmbeddingRequest parse_embedding_request(const json& body, const RequestRules& rules) {
  // The model field names the adapter as for completions.
  json probe = json::object();
  for (const char* name : {"model", "adapter"})
    if (const json* v = field(body, name)) probe[name] = *v;
  ParsedRequest model = parse_common(probe, rules);
  EmbeddingRequest e;
  e.model = model.model;
  e.adapter = model.request.adapter;
  const json* input = field(body, "input");
  if (!input) bad("input", "'input' is required: a string or an array of strings");
  if (input->is_string()) e.inputs.push_back(input->get<std::string>());
  else if (input->is_array()) {
    if (input->empty()) bad("input", "'input' must not be an empty array");
    if (input->size() > std::size_t(kMaxEmbeddingInputs))
      bad("input", "'input' has " + std::to_string(input->size()) + " strings; at most " +
                       std::to_string(kMaxEmbeddingInputs) + " per request");
    for (std::size_t i = 0; i < input->size(); ++i) {
      if (!(*input)[i].is_string())
        bad("input", "'input[" + std::to_string(i) + "]' must be a string (token arrays are not supported)");
      e.inputs.push_back((*input)[i].get<std::string>());
    }
  } else {
    bad("input", "'input' must be a string or an array of strings");
  }
  for (std::size_t i = 0; i < e.inputs.size(); ++i)
    if (e.inputs[i].empty()) bad("input", "'input[" + std::to_string(i) + "]' is empty");
  if (const json* f = field(body, "encoding_format")) {
    const std::string format = f->is_string() ? f->get<std::string>() : "";
    if (format != "float" && format != "base64")
      bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    e.base64 = format == "base64";
  }
  if (field(body, "dimensions"))
    bad("dimensions", "'dimensions' is not supported: embeddings have the model's hidden size; leave it out");
  return e;
}

TokenizeRequest parse_tokenize_request(const json& body) {
  TokenizeRequest t;
  const json* c = field(body, "content");
  if (!c || !c->is_string()) bad("content", "'content' must be a string");
  t.content = c->get<std::string>();
  if (const json* a = field(body, "add_special")) {
    if (!a->is_boolean()) bad("add_special", "'add_special' must be true or false");
    t.add_special = a->get<bool>();
  }
  return t;
}

std::vector<std::int32_t> parse_detokenize_request(const json& body, int vocab_size) {
  const json* t = field(body, "tokens");
  if (!t || !t->is_array()) bad("tokens", "'tokens' must be an array of token ids");
  if (t->size() > kMaxDetokenizeIds)
    bad("tokens", "'tokens' has " + std::to_string(t->size()) + " ids; at most " +
                      std::to_string(kMaxDetokenizeIds) + " per request");
  std::vector<std::int32_t> ids;
  ids.reserve(t->size());
  for (std::size_t i = 0; i < t->size(); ++i) {
    const json& v = (*t)[i];
    const std::string at = "tokens[" + std::to_string(i) + "]";
    if (!v.is_number_integer()) bad("tokens", "'" + at + "' must be an integer token id");
    const double id = v.get<double>();
    if (!(id >= 0 && id < vocab_size))
      bad("tokens", "'" + at + "' is " + v.dump() + ", outside 0.." + std::to_string(vocab_size - 1));
    ids.push_back(std::int32_t(v.get<std::int64_t>()));
  }
  return ids;
}

std::vector<training::ChatMessage> parse_template_request(const json& body) { return parse_messages(body); }

std::uint64_t choice_seed(std::uint64_t seed, int index) {
  if (index == 0) return seed;
  // splitmix64 of (seed, index): unrelated streams for the other choices.
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * std::uint64_t(index);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace fedge::serving
