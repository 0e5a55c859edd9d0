#include "fedge/inference/generate.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>

#include "fedge/common/error.h"
#include "fedge/inference/model_gguf.h"
#include "fedge/inference/torch_setup.h"

namespace fedge::inference {

LoadedModel load_model_spec(const std::string& spec, const LoadOptions& options) {
  if (spec == "tiny") return {Model::random(ModelConfig::tiny(), 0, options), Tokenizer::byte_level_tiny()};
  if (is_gguf_file(spec)) return {Model::load(spec, options), load_gguf_tokenizer(spec)};
  return {Model::load(spec, options), Tokenizer::from_dir(spec)};
}


void SamplingOptions::validate() const {
  auto bad = [](const std::string& m) { throw Error(ErrorKind::kInvalidInput, m); };
  if (max_tokens < 0) bad("max tokens must be >= 0");
  if (!(temperature >= 0) || !std::isfinite(temperature)) bad("temperature must be a finite number >= 0");
  if (top_k < 0) bad("top-k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) bad("top-p must be in (0, 1]");
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty)) bad("repetition penalty must be > 0");
  for (const auto& s : stop_strings)
    if (s.empty()) bad("stop strings must not be empty");
}

TokenId sample_token(std::vector<float> logits, const std::vector<TokenId>& history,
                     const SamplingOptions& o, std::mt19937_64& rng) {
  const int V = int(logits.size());
  if (o.repetition_penalty != 1.0f) {
    std::set<TokenId> seen(history.begin(), history.end());
    for (TokenId id : seen)
      if (id >= 0 && id < V) logits[id] = logits[id] > 0 ? logits[id] / o.repetition_penalty
                                                         : logits[id] * o.repetition_penalty;
  }
  if (o.temperature <= 0.0f)
    return TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // Highest first; ties by id, so the order never depends on the sort.
  auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int keep = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  idx.resize(keep);
  std::vector<double> p(keep);
  const double mx = logits[idx[0]];
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / o.temperature);
  for (auto& v : p) v /= sum;
  if (o.top_p < 1.0f) {
    double acc = 0;
    int n = 0;
    while (n < keep) {
      acc += p[n++];
      if (acc >= o.top_p) break;
    }
    p.resize(n);
    idx.resize(n);
    sum = std::accumulate(p.begin(), p.end(), 0.0);
    for (auto& v : p) v /= sum;
  }
  const double u = (rng() >> 11) * (1.0 / 9007199254740992.0);
  double acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return idx[i];
  }
  return idx.back();
}

namespace {

// Length of the longest prefix of `s` that ends in a complete UTF-8 character.
std::size_t complete_utf8(const std::string& s, std::size_t from) {
  std::size_t end = s.size();
  // Look back at most 3 bytes for an unfinished lead byte.
  for (std::size_t back = 1; back <= 3 && back <= end - from; ++back) {
    const unsigned char c = s[end - back];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? end - back : end;
  }
  return end;
}

// Replaces each byte that does not start a well-formed UTF-8 sequence with
// U+FFFD, so streamed text is always valid UTF-8 (random or byte-fallback
// models can emit stray bytes).
std::string sanitize_utf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const unsigned char c = in[i];
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= in.size() && !(c == 0xC0 || c == 0xC1 || c > 0xF4);
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(in[i + k]) & 0xC0) == 0x80;
    if (ok && n == 3) {
      const unsigned char d = in[i + 1];
      ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d >= 0xA0);  // overlong, surrogates
    }
    if (ok && n == 4) {
      const unsigned char d = in[i + 1];
      ok = !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d >= 0x90);
    }
    if (ok) {
      out.append(in.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// Per-row text state: decoded bytes, what was already emitted, stop strings.
struct RowText {
  std::string text;        // raw bytes
  std::string out;         // what was emitted, as valid UTF-8
  std::size_t emitted = 0;
  bool stopped_by_string = false;

  // Appends a token's bytes; returns newly emittable text.
  std::string push(const std::string& bytes, const std::vector<std::string>& stops) {
    text += bytes;
    for (const auto& s : stops) {
      const std::size_t from = emitted > s.size() ? emitted - s.size() : 0;
      const std::size_t at = text.find(s, from);
      if (at != std::string::npos) {
        text.resize(at);
        stopped_by_string = true;
        return take(std::max(emitted, at));
      }
    }
    // Hold back a tail that could still become a stop string.
    std::size_t safe = text.size();
    for (const auto& s : stops)
      for (std::size_t n = std::min(s.size() - 1, text.size()); n > 0; --n)
        if (text.compare(text.size() - n, n, s, 0, n) == 0) {
          safe = std::min(safe, text.size() - n);
          break;
        }
    return take(complete_utf8(text.substr(0, safe), emitted));
  }
  std::string take(std::size_t upto) {
    if (upto <= emitted) return {};
    std::string piece = sanitize_utf8(std::string_view(text).substr(emitted, upto - emitted));
    emitted = upto;
    out += piece;
    return piece;
  }
};

}  // namespace

std::vector<GenerationResult> generate(Model& model, const std::vector<std::vector<TokenId>>& prompts,
                                       const SamplingOptions& options, const Tokenizer* tokenizer,
                                       const TokenCallback& callback) {
  options.validate();
  const ModelConfig& c = model.config();
  const int B = int(prompts.size());
  if (B == 0) return {};
  int longest = 0;
  for (int b = 0; b < B; ++b) {
    if (prompts[b].empty()) throw Error(ErrorKind::kInvalidInput, "prompt " + std::to_string(b) + " has no tokens");
    longest = std::max<int>(longest, int(prompts[b].size()));
  }
  if (longest + 1 > c.context_length())
    throw Error(ErrorKind::kInvalidInput, "prompt of " + std::to_string(longest) +
                                              " tokens leaves no room in the model's context of " +
                                              std::to_string(c.context_length()) + " tokens; shorten it");
  if (!options.stop_strings.empty() && !tokenizer)
    throw Error(ErrorKind::kInvalidInput, "stop strings need a tokenizer");
  const int max_new = std::min(options.max_tokens, c.context_length() - longest);
  std::set<TokenId> stops(options.stop_ids.begin(), options.stop_ids.end());
  for (int e : c.eos_token_ids) stops.insert(e);
  if (tokenizer)
    for (TokenId e : tokenizer->eos_ids()) stops.insert(e);

  KVCache cache = model.make_cache(B, std::min(c.context_length(), longest + std::max(max_new, 1)));
  std::vector<TokenId> tokens(std::size_t(B) * longest, 0);
  std::vector<std::uint8_t> mask(tokens.size(), 0);
  for (int b = 0; b < B; ++b) {
    const int pad = longest - int(prompts[b].size());
    for (int t = 0; t < int(prompts[b].size()); ++t) {
      tokens[std::size_t(b) * longest + pad + t] = prompts[b][t];
      mask[std::size_t(b) * longest + pad + t] = 1;
    }
  }
  std::vector<GenerationResult> results(B);
  std::vector<std::vector<TokenId>> history(prompts);
  std::vector<std::mt19937_64> rngs(B, std::mt19937_64(options.seed));
  std::vector<RowText> texts(B);
  std::vector<bool> done(B, false);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  std::vector<float> logits = model.forward(tokens, mask, B, longest, cache);
  const double prefill = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  int steps = 0, live = B;
  const int V = c.vocab_size;
  for (int b = 0; b < B; ++b) {
    results[b].prompt_tokens = int(prompts[b].size());
    results[b].prefill_seconds = prefill;
    if (max_new == 0) { done[b] = true; results[b].stop_reason = "max_tokens"; --live; }
  }
  std::vector<TokenId> next(B, 0);
  std::vector<std::uint8_t> step_mask(B, 0);
  while (live > 0) {
    for (int b = 0; b < B; ++b) {
      step_mask[b] = 0;
      if (done[b]) continue;
      std::vector<float> row(logits.begin() + std::size_t(b) * V, logits.begin() + std::size_t(b + 1) * V);
      const TokenId id = sample_token(std::move(row), history[b], options, rngs[b]);
      GenerationResult& r = results[b];
      auto finish = [&](const char* reason) { done[b] = true; r.stop_reason = reason; --live; };
      if (stops.count(id)) { finish("eos"); continue; }
      r.tokens.push_back(id);
      history[b].push_back(id);
      std::string piece;
      if (tokenizer && !tokenizer->is_special(id)) piece = texts[b].push(tokenizer->token_bytes(id), options.stop_strings);
      if (callback && !callback(b, id, piece)) { finish("callback"); continue; }
      if (texts[b].stopped_by_string) { finish("stop_string"); continue; }
      if (int(r.tokens.size()) >= max_new) { finish(int(r.tokens.size()) >= options.max_tokens ? "max_tokens" : "context"); continue; }
      next[b] = id;
      step_mask[b] = 1;
    }
    if (live == 0) break;
    if (cache.length() >= cache.capacity()) break;
    logits = model.forward(next, step_mask, B, 1, cache);
    ++steps;
  }
  const double decode = std::chrono::duration<double>(clock::now() - t0).count();
  for (int b = 0; b < B; ++b) {
    GenerationResult& r = results[b];
    if (r.stop_reason.empty()) r.stop_reason = "context";
    r.decode_seconds = decode;
    r.decoded_steps = steps;
    if (tokenizer) {
      // Whatever was held back (a partial stop-string prefix, partial UTF-8).
      std::string rest = texts[b].take(texts[b].text.size());
      if (callback && !rest.empty()) callback(b, -1, rest);
      r.text = texts[b].out;
    }
  }
  return results;
}

}  // namespace fedge::inference
