// What the service does to each generated token beyond inference's sampler,
// without a model (so the fuzz build and fast tests reach it): stop strings
// held back across token boundaries, OpenAI's presence/frequency penalties,
// llama.cpp's min_p, and log-probabilities. See docs/SERVING.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fedge::serving {

// Cuts generated text before the first stop string. Text is pushed piece by
// piece (as tokens decode); push() returns what may be shown now: a tail that
// could still grow into a stop string is held back until it cannot, so a stop
// string split across tokens never comes out, not even in part. Pieces must
// be valid UTF-8 (the streaming decoder's output); so are the returned ones.
class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops);
  std::string push(std::string_view piece);
  // The held-back tail once generation ends without a stop string (empty after one).
  std::string finish();
  bool stopped() const { return stopped_; }
  // Bytes of text released so far (all of the text before the stop string once stopped()).
  std::size_t released() const { return released_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::size_t released_ = 0;
  bool stopped_ = false;
};

// OpenAI's penalties: logit[t] -= presence * (count[t] > 0) + frequency * count[t].
void apply_penalties(std::vector<float>& logits, const std::unordered_map<std::int32_t, int>& counts,
                     float presence, float frequency);
// llama.cpp's min_p: drops (-inf) every token whose probability is below
// min_p times the most likely token's, i.e. logit < max + ln(min_p).
void apply_min_p(std::vector<float>& logits, float min_p);

struct TokenLogprob {
  std::int32_t token = 0;
  float logprob = 0;
};
// log_softmax(logits)[chosen] and the `top` most likely tokens (highest
// first, ties by id) with theirs.
struct LogprobEntry {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};
LogprobEntry logprobs_of(const std::vector<float>& logits, std::int32_t chosen, int top);

}  // namespace fedge::serving
