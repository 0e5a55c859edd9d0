// Encode/decode throughput of fedge's tokenizer (MB of UTF-8 text per second)
// on a synthetic corpus, for the tiny preset and for BPE tokenizers with merges
// learned here from that corpus (no download): GPT-2 style byte-level, Llama-3
// style Split + ByteLevel, and Llama-2 style SentencePiece BPE (no
// pre-tokenizer, so each segment is one long BPE word). The reference in the
// same run is the tiny preset (same regex pre-tokenizer, no merges).
//
//   bench_tokenizer [MB of text, default 4] [merges, default 4000]
#include <algorithm>
#include <cstdint>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "fedge/common/machine.h"
#include "fedge/inference/tokenizer.h"

using fedge::inference::TokenId;
using fedge::inference::Tokenizer;
using ojson = nlohmann::ordered_json;

namespace {

// English-like prose with code, numbers, whitespace runs, CJK and emoji.
std::string make_corpus(std::size_t bytes, unsigned seed) {
  static const char* words[] = {
      "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
      "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were",
      "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
      "who", "so", "no", "federated", "learning", "model", "edge", "node", "training", "inference", "privacy",
      "aggregation", "adapter", "gradient", "tokenizer", "sequence", "attention", "transformer", "network",
      "latency", "bandwidth", "coordinator", "secure", "update", "round", "client", "server", "device", "data",
      "don't", "it's", "we'll", "they've", "Hello", "World", "The", "In", "However", "Therefore", "running",
      "jumped", "quickly", "beautiful", "understanding", "international", "representation", "performance"};
  static const char* extras[] = {
      ", ", ". ", "; ", "! ", "? ", "\n", "\n\n", "  ", "\t", " (", ") ", " \"", "\" ", " 2024", " 3.14159",
      " 1,000,000", " int main() {\n\treturn 0;\n}\n", " x += y * 2;", " 你好世界", " 日本語", " 😀", " 👨\u200d👩\u200d👧",
      " naïve café", " Привет"};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> word(0, sizeof(words) / sizeof(*words) - 1);
  std::uniform_int_distribution<int> extra(0, sizeof(extras) / sizeof(*extras) - 1);
  std::uniform_int_distribution<int> coin(0, 5);
  std::string s;
  s.reserve(bytes + 64);
  while (s.size() < bytes) {
    if (!s.empty() && s.back() != '\n' && s.back() != ' ' && s.back() != '\t') s += ' ';
    s += words[word(rng)];
    if (coin(rng) == 0) s += extras[extra(rng)];
  }
  return s;
}

// Learns `n` BPE merges from word counts: the most frequent adjacent pair
// (ties: the pair seen first) is merged, as BPE training does. Symbols are
// interned to ints so each round is one pass of hash-map counting.
std::vector<std::pair<std::string, std::string>> learn_merges(const std::map<std::string, long>& words_with_counts,
                                                               const std::map<std::string, std::vector<std::string>>& split,
                                                               int n) {
  std::vector<std::string> names;
  std::unordered_map<std::string, int> ids;
  auto intern = [&](const std::string& s) {
    auto [it, fresh] = ids.emplace(s, static_cast<int>(names.size()));
    if (fresh) names.push_back(s);
    return it->second;
  };
  std::vector<std::pair<std::vector<int>, long>> words;
  for (const auto& [w, c] : words_with_counts) {
    std::vector<int> syms;
    for (const auto& s : split.at(w)) syms.push_back(intern(s));
    words.push_back({syms, c});
  }
  std::vector<std::pair<std::string, std::string>> merges;
  std::unordered_map<std::uint64_t, long> counts;
  for (int m = 0; m < n; ++m) {
    counts.clear();
    for (const auto& [syms, c] : words)
      for (std::size_t i = 0; i + 1 < syms.size(); ++i)
        counts[static_cast<std::uint64_t>(syms[i]) << 32 | static_cast<std::uint32_t>(syms[i + 1])] += c;
    if (counts.empty()) break;
    std::uint64_t best = 0;
    long best_count = -1;
    for (const auto& [k, c] : counts)
      if (c > best_count || (c == best_count && k < best)) { best = k; best_count = c; }
    const int l = static_cast<int>(best >> 32), r = static_cast<int>(best & 0xFFFFFFFF);
    merges.push_back({names[l], names[r]});
    const int merged = intern(names[l] + names[r]);
    for (auto& [syms, c] : words) {
      std::size_t o = 0;
      for (std::size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == l && syms[i + 1] == r) {
          syms[o++] = merged;
          ++i;
        } else {
          syms[o++] = syms[i];
        }
      }
      syms.resize(o);
    }
  }
  return merges;
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

// Training words: the corpus split at spaces, each word with its leading space
// (byte-level) or "▁" (SentencePiece), as the real pre-tokenizers roughly do.
std::map<std::string, long> word_counts(const std::string& text, const std::string& space) {
  std::map<std::string, long> counts;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t next = text.find(' ', pos + 1);
    if (next == std::string::npos) next = text.size();
    std::string w = text.substr(pos, next - pos);
    if (!w.empty() && w[0] == ' ') w = space + w.substr(1);
    ++counts[w];
    pos = next;
  }
  return counts;
}

std::vector<std::string> byte_level_chars() {
  // Rebuilt from the tiny preset so the bench does not restate the map.
  const ojson tiny = ojson::parse(Tokenizer::byte_level_tiny().to_json());
  std::vector<std::string> chars(256);
  for (auto it = tiny["model"]["vocab"].begin(); it != tiny["model"]["vocab"].end(); ++it)
    chars[it.value().get<int>()] = it.key();
  return chars;
}

ojson bpe_model(const ojson& vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool sp) {
  ojson m = ojson::array();
  for (const auto& [a, b] : merges) m.push_back({a, b});
  return {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", sp ? ojson("<unk>") : ojson(nullptr)},
          {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", sp},
          {"byte_fallback", sp}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", m}};
}

std::string byte_level_json(const std::string& train, int n_merges, bool llama3) {
  const auto chars = byte_level_chars();
  auto counts = word_counts(train, " ");
  std::map<std::string, std::vector<std::string>> split;
  for (const auto& [w, c] : counts) {
    std::vector<std::string> syms;
    for (unsigned char b : w) syms.push_back(chars[b]);
    split[w] = syms;
  }
  const auto merges = learn_merges(counts, split, n_merges);
  ojson vocab = ojson::object();
  int id = 0;
  for (const auto& c : chars) vocab[c] = id++;
  for (const auto& [a, b] : merges)
    if (!vocab.contains(a + b)) vocab[a + b] = id++;
  ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", !llama3}};
  ojson pre = byte_level;
  if (llama3)
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Split"},
              {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
              {"behavior", "Isolated"}, {"invert", false}},
             byte_level}}};
  ojson root = {{"version", "1.0"}, {"added_tokens", ojson::array()}, {"normalizer", nullptr},
                {"pre_tokenizer", pre}, {"post_processor", nullptr}, {"decoder", byte_level},
                {"model", bpe_model(vocab, merges, false)}};
  return root.dump();
}

std::string sentencepiece_json(const std::string& train, int n_merges) {
  const std::string space = "\xE2\x96\x81";
  auto counts = word_counts(train, space);
  std::map<std::string, std::vector<std::string>> split;
  std::map<std::string, int> char_count;
  for (const auto& [w, c] : counts) {
    split[w] = utf8_chars(w);
    for (const auto& ch : split[w]) char_count[ch] += c;
  }
  const auto merges = learn_merges(counts, split, n_merges);
  ojson vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  int id = 3;
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = id++;
  }
  // Like SentencePiece, only frequent characters get their own token; the
  // rest (here: most CJK and emoji) go through byte fallback.
  for (const auto& [ch, c] : char_count)
    if (c >= 1000 && !vocab.contains(ch)) vocab[ch] = id++;
  std::vector<std::pair<std::string, std::string>> kept;
  for (const auto& [a, b] : merges)
    if (vocab.contains(a) && vocab.contains(b)) {
      if (!vocab.contains(a + b)) vocab[a + b] = id++;
      kept.push_back({a, b});
    }
  ojson normalizer = {{"type", "Sequence"},
                      {"normalizers", {{{"type", "Prepend"}, {"prepend", space}},
                                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}};
  ojson decoder = {{"type", "Sequence"},
                   {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                                 {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                 {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  ojson root = {{"version", "1.0"}, {"added_tokens", ojson::array()}, {"normalizer", normalizer},
                {"pre_tokenizer", nullptr}, {"post_processor", nullptr}, {"decoder", decoder},
                {"model", bpe_model(vocab, kept, true)}};
  return root.dump();
}

// Thread CPU time, not wall time: this machine's cores are shared, and CPU
// time keeps other processes' load out of the figures.
struct CpuClock {
  using time_point = double;
  static double now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  }
};

// A Llama-3-sized vocabulary (128k tokens, ~128k merges) made by merging
// random pairs of existing tokens: not a trained vocabulary, but a valid
// file of the real size, for load time and for BPE on cache-missing text.
std::string big_byte_level_json(int n_merges, unsigned seed) {
  const auto chars = byte_level_chars();
  std::vector<std::string> toks(chars.begin(), chars.end());
  // Plain json (sorted std::map): ordered_json's linear key lookup would make
  // building a 128k vocabulary quadratic.
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = b;
  std::vector<std::pair<std::string, std::string>> merges;
  std::mt19937 rng(seed);
  // Letters and the space symbol first, so the merges look like words.
  std::vector<int> letters;
  for (int b = 'a'; b <= 'z'; ++b) letters.push_back(b);
  letters.push_back(' ');
  std::unordered_map<std::string, int> seen;
  while (static_cast<int>(merges.size()) < n_merges) {
    std::string a = toks.size() == 256 || rng() % 4 == 0 ? chars[letters[rng() % letters.size()]]
                                                          : toks[256 + rng() % (toks.size() - 256)];
    const std::string& b = chars['a' + rng() % 26];
    const std::string m = a + b;
    if (m.size() > 48 || seen.count(m)) continue;
    seen[m] = 1;
    vocab[m] = static_cast<int>(toks.size());
    toks.push_back(m);
    merges.push_back({a, b});
  }
  nlohmann::json m = nlohmann::json::array();
  for (const auto& [x, y] : merges) m.push_back({x, y});
  const nlohmann::json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const nlohmann::json root = {{"version", "1.0"}, {"added_tokens", nlohmann::json::array()}, {"normalizer", nullptr},
                               {"pre_tokenizer", bl}, {"post_processor", nullptr}, {"decoder", bl},
                               {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}}};
  return root.dump();
}

// Random lowercase "words": nearly every pre-token is new, so the word cache
// rarely hits and the figure is the BPE merge loop itself.
std::string random_words(std::size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < bytes) {
    s += ' ';
    const int len = 2 + rng() % 10;
    for (int i = 0; i < len; ++i) s += static_cast<char>('a' + rng() % 26);
  }
  return s;
}

double seconds_since(double t0) { return CpuClock::now() - t0; }

struct Result {
  double cold_mbs, warm_mbs, decode_mbs, bytes_per_token;
};

// Encodes `text` in document-sized chunks (a prompt at a time), as a server
// would; the first pass starts with an empty word cache.
Result measure(const Tokenizer& t, const std::string& text, std::size_t chunk) {
  const double mb = text.size() / 1e6;
  std::size_t tokens = 0;
  std::vector<std::vector<TokenId>> ids;
  auto pass = [&] {
    ids.clear();
    tokens = 0;
    const auto t0 = CpuClock::now();
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t end = std::min(text.size(), pos + chunk);
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
      ids.push_back(t.encode(std::string_view(text).substr(pos, end - pos), false));
      tokens += ids.back().size();
      pos = end;
    }
    return seconds_since(t0);
  };
  const double cold = pass();
  double warm = 1e9;
  for (int i = 0; i < 3; ++i) warm = std::min(warm, pass());
  std::size_t out_bytes = 0;
  const auto t0 = CpuClock::now();
  for (const auto& v : ids) out_bytes += t.decode(v).size();
  const double dec = seconds_since(t0);
  if (out_bytes != text.size()) std::printf("  (decode produced %zu bytes, expected %zu)\n", out_bytes, text.size());
  return {mb / cold, mb / warm, mb / dec, static_cast<double>(text.size()) / tokens};
}

}  // namespace

int main(int argc, char** argv) {
  const double mb = argc > 1 ? std::atof(argv[1]) : 4.0;
  const int n_merges = argc > 2 ? std::atoi(argv[2]) : 4000;
  const std::size_t chunk = 4096;
  std::printf("bench_tokenizer: %s, 1 thread (of %u hardware threads), thread CPU time\n", fedge::cpu_model().c_str(),
              std::thread::hardware_concurrency());
  const std::string train = make_corpus(1 << 20, 1);
  const std::string text = make_corpus(static_cast<std::size_t>(mb * 1e6), 2);
  std::printf("workload: %.1f MB synthetic text (prose, code, numbers, CJK, emoji), encoded in %zu-byte chunks; "
              "merges learned from a separate 1 MB sample\n\n", text.size() / 1e6, chunk);
  const auto t0 = CpuClock::now();
  const std::string gpt2 = byte_level_json(train, n_merges, false);
  const std::string llama3 = byte_level_json(train, n_merges, true);
  const std::string sp = sentencepiece_json(train, n_merges);
  std::printf("training %d merges x3: %.1f s\n", n_merges, seconds_since(t0));

  struct Case {
    const char* name;
    Tokenizer tok;
  };
  std::vector<Case> cases;
  cases.push_back({"tiny preset (bytes, GPT-2 regex, no merges)", Tokenizer::byte_level_tiny()});
  auto load = [&](const char* name, const std::string& json) {
    const auto l0 = CpuClock::now();
    Tokenizer t = Tokenizer::from_json(json, name);
    std::printf("load %-28s %.3f s (%.1f MB json, vocab %d)\n", name, seconds_since(l0), json.size() / 1e6, t.vocab_size());
    cases.push_back({name, std::move(t)});
  };
  load("GPT-2 style byte-level BPE", gpt2);
  load("Llama-3 style Split+ByteLevel", llama3);
  load("Llama-2 style SentencePiece", sp);
  const std::string big = big_byte_level_json(128000, 3);
  load("128k random merges byte-level", big);
  std::printf("\n%-46s %10s %10s %10s %12s %10s\n", "tokenizer", "cold MB/s", "warm MB/s", "decode", "bytes/token",
              "vs tiny");
  double ref = 0;
  for (const Case& c : cases) {
    const Result r = measure(c.tok, text, chunk);
    if (ref == 0) ref = r.warm_mbs;
    std::printf("%-46s %10.1f %10.1f %10.1f %12.2f %9.2fx\n", c.name, r.cold_mbs, r.warm_mbs, r.decode_mbs,
                r.bytes_per_token, r.warm_mbs / ref);
  }
  const std::string words = random_words(text.size() / 4, 5);
  std::printf("\nrandom lowercase words (%.1f MB, few cache hits):\n", words.size() / 1e6);
  for (const Case& c : cases) {
    const Result r = measure(c.tok, words, chunk);
    std::printf("%-46s %10.1f %10.1f %10.1f %12.2f\n", c.name, r.cold_mbs, r.warm_mbs, r.decode_mbs, r.bytes_per_token);
  }
  return 0;
}
