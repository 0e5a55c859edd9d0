// serving/sampling.h without a model: stop strings held back across pieces,
// OpenAI's penalties, min_p, log-probabilities.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "fedge/serving/sampling.h"

using namespace fedge::serving;

namespace {

// Pushes `pieces` through a filter; the concatenation of what came out.
std::string run(StopFilter& f, const std::vector<std::string>& pieces, std::vector<std::string>* shown = nullptr) {
  std::string out;
  for (const auto& p : pieces) {
    const std::string s = f.push(p);
    if (shown) shown->push_back(s);
    out += s;
    if (f.stopped()) break;
  }
  const std::string rest = f.finish();
  if (shown) shown->push_back(rest);
  return out + rest;
}

}  // namespace

TEST_CASE("stop filter: a stop string split across pieces never comes out, not even in part", "[sampling]") {
  StopFilter f({"END"});
  std::vector<std::string> shown;
  CHECK(run(f, {"ab", "cE", "N", "Dxyz"}, &shown) == "abc");
  CHECK(f.stopped());
  CHECK(f.released() == 3);
  // "E" and "N" were held back until the stop string was complete.
  REQUIRE(shown.size() >= 4);
  CHECK(shown[0] == "ab");
  CHECK(shown[1] == "c");
  CHECK(shown[2].empty());
  CHECK(shown[3].empty());
  for (const auto& s : shown) CHECK(s.find('E') == std::string::npos);
}

TEST_CASE("stop filter: a held-back tail that does not become a stop string comes out", "[sampling]") {
  StopFilter f({"END"});
  std::vector<std::string> shown;
  CHECK(run(f, {"xE", "Nd", "!"}, &shown) == "xENd!");
  CHECK_FALSE(f.stopped());
  CHECK(shown[0] == "x");   // "E" held
  CHECK(shown[1] == "ENd"); // "EN" + "d" is not a stop string
  // At the end the held tail goes out too.
  StopFilter g({"END"});
  CHECK(run(g, {"abcEN"}) == "abcEN");
  CHECK_FALSE(g.stopped());
}

TEST_CASE("stop filter: the first of several stop strings wins, even one inside a piece", "[sampling]") {
  StopFilter f({"zz", "\n\n", "b"});
  CHECK(run(f, {"a\n", "\nbzz"}) == "a");
  StopFilter g({"lo w", "o"});
  CHECK(run(g, {"hel", "lo world"}) == "hel");
  StopFilter at_start({"x"});
  CHECK(run(at_start, {"xyz"}).empty());
  CHECK(at_start.stopped());
  CHECK(at_start.released() == 0);
}

TEST_CASE("stop filter: overlapping prefixes and multi-byte characters", "[sampling]") {
  StopFilter f({"aab"});
  CHECK(run(f, {"a", "a", "a", "a", "b", "c"}) == "aa");
  StopFilter u({"é!"});
  std::vector<std::string> shown;
  CHECK(run(u, {"caf", "\xC3\xA9", "!"}, &shown) == "caf");
  StopFilter v({"\xC3\xA9t\xC3\xA9"});
  CHECK(run(v, {"\xC3\xA9", "\xC3\xA9t", "\xC3\xA9 "}) == "\xC3\xA9");
  StopFilter none({});
  CHECK(run(none, {"a", "b"}) == "ab");
}

TEST_CASE("penalties follow OpenAI's formula over the counts", "[sampling]") {
  std::vector<float> logits = {1.0f, 2.0f, 3.0f, 4.0f};
  apply_penalties(logits, {{1, 1}, {3, 3}}, 0.5f, 0.25f);
  CHECK(logits[0] == Approx(1.0f));
  CHECK(logits[1] == Approx(2.0f - 0.5f - 0.25f));
  CHECK(logits[2] == Approx(3.0f));
  CHECK(logits[3] == Approx(4.0f - 0.5f - 0.75f));
  // Negative values encourage repetition; ids out of range are ignored.
  std::vector<float> l2 = {0.0f, 0.0f};
  apply_penalties(l2, {{0, 2}, {9, 1}, {-1, 1}}, -1.0f, -1.0f);
  CHECK(l2[0] == Approx(3.0f));
  CHECK(l2[1] == Approx(0.0f));
}

TEST_CASE("min_p drops the tokens below min_p times the top probability", "[sampling]") {
  // Probabilities proportional to e^logit: token 1 has e^-1 = 0.37 of the top's, token 2 e^-3 = 0.05.
  std::vector<float> logits = {0.0f, -1.0f, -3.0f};
  apply_min_p(logits, 0.1f);
  CHECK(logits[0] == 0.0f);
  CHECK(logits[1] == -1.0f);
  CHECK(std::isinf(logits[2]));
  std::vector<float> same = {0.0f, -1.0f};
  apply_min_p(same, 0.0f);
  CHECK(same[1] == -1.0f);
}

TEST_CASE("log-probabilities are log_softmax of the logits, top-k highest first", "[sampling]") {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  const LogprobEntry e = logprobs_of(logits, 2, 3);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  CHECK(e.chosen.token == 2);
  CHECK(e.chosen.logprob == Approx(2.0 - std::log(z)));
  REQUIRE(e.top.size() == 3);
  CHECK(e.top[0].token == 1);  // ties by id
  CHECK(e.top[1].token == 3);
  CHECK(e.top[2].token == 2);
  double total = 0;
  for (int t = 0; t < 4; ++t) total += std::exp(logprobs_of(logits, t, 0).chosen.logprob);
  CHECK(total == Approx(1.0));
  CHECK(logprobs_of(logits, 0, 100).top.size() == 4);
}
