#include "fedge/serving/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace fedge::serving {

StopFilter::StopFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopFilter::push(std::string_view piece) {
  if (stopped_) return {};
  held_ += piece;
  // Every place a stop string could start is still held (below), so searching
  // the held text finds the first stop string in the whole output.
  std::size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    released_ += out.size();
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of some stop string. Such a
  // tail starts where a stop string starts, so at a UTF-8 character boundary.
  std::size_t keep = 0;
  for (const auto& s : stops_)
    for (std::size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, out.size());
  released_ += out.size();
  return out;
}

std::string StopFilter::finish() {
  if (stopped_) return {};
  std::string out;
  out.swap(held_);
  released_ += out.size();
  return out;
}

void apply_penalties(std::vector<float>& logits, const std::unordered_map<std::int32_t, int>& counts, float presence,
                     float frequency) {
  if (presence == 0 && frequency == 0) return;
  for (const auto& [token, count] : counts)
    if (token >= 0 && std::size_t(token) < logits.size() && count > 0)
      logits[std::size_t(token)] -= presence + frequency * float(count);
}

void apply_min_p(std::vector<float>& logits, float min_p) {
  if (!(min_p > 0) || logits.empty()) return;
  const float top = *std::max_element(logits.begin(), logits.end());
  const float floor = top + std::log(min_p);
  for (float& l : logits)
    if (l < floor) l = -std::numeric_limits<float>::infinity();
}

LogprobEntry logprobs_of(const std::vector<float>& logits, std::int32_t chosen, int top) {
  LogprobEntry e;
  if (logits.empty()) return e;
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  const double log_z = mx + std::log(sum);
  auto logprob = [&](std::int32_t t) { return float(double(logits[std::size_t(t)]) - log_z); };
  e.chosen = {chosen, chosen >= 0 && std::size_t(chosen) < logits.size() ? logprob(chosen) : 0.0f};
  const std::size_t k = std::min<std::size_t>(std::size_t(std::max(top, 0)), logits.size());
  if (k == 0) return e;
  std::vector<std::int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(k), ids.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[std::size_t(a)] > logits[std::size_t(b)] || (logits[std::size_t(a)] == logits[std::size_t(b)] && a < b);
  });
  for (std::size_t i = 0; i < k; ++i) e.top.push_back({ids[i], logprob(ids[i])});
  return e;
}

}  // namespace fedge::serving
