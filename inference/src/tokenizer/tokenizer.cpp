// Tokenizer's public API: construction (tokenizer.json, a model directory with
// its config files, the built-in tiny preset), encode, and the special ids.
#include "fedge/inference/tokenizer.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "encode.h"
#include "fedge/inference/chat_template.h"
#include "fedge/common/error.h"
#include "tokenizer_impl.h"
#include "utf8.h"

namespace fedge::inference {

namespace tok {

std::optional<TokenId> TokenizerData::find(std::string_view token) const {
  if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
  if (auto it = model.vocab.find(token); it != model.vocab.end()) return it->second;
  return std::nullopt;
}

void TokenizerData::build_tables() {
  TokenId max_id = -1;
  for (const auto& [t, id] : model.vocab) max_id = std::max(max_id, id);
  for (const AddedToken& a : added) max_id = std::max(max_id, a.id);
  const auto n = static_cast<std::size_t>(max_id + 1);
  token_text.assign(n, {});
  known.assign(n, 0);
  special.assign(n, 0);
  for (const auto& [t, id] : model.vocab) {
    token_text[id] = t;
    known[id] = 1;
  }
  for (std::size_t i = 0; i < added.size(); ++i) {
    const AddedToken& a = added[i];
    token_text[a.id] = a.content;
    known[a.id] = 1;
    special[a.id] = a.special;
    added_by_content[a.content] = a.id;
    added_trie.insert(a.content, static_cast<int>(i));
  }
  token_raw.assign(n, {});
  for (std::size_t id = 0; id < n; ++id)
    if (known[id]) token_raw[id] = raw_bytes(token_text[id]);
}

void TokenizerData::guess_special_ids() {
  auto first_of = [&](std::initializer_list<std::string_view> names) -> std::optional<TokenId> {
    for (std::string_view name : names)
      if (auto id = find(name)) return id;
    return std::nullopt;
  };
  bos = !prefix.empty() ? std::optional<TokenId>(prefix.front())
                        : first_of({"<|bos|>", "<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"});
  if (!suffix.empty()) eos = {suffix.back()};
  else if (auto e = first_of({"<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})) eos = {*e};
  pad = first_of({"<|pad|>", "<pad>", "[PAD]"});
}

}  // namespace tok

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json_text, std::string source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source_name = source_name;
  tok::parse_tokenizer_json(json_text, source_name, *impl);
  impl->json_text = std::string(json_text);
  return Tokenizer(std::move(impl));
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_bos) const {
  const auto& d = *impl_;
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos) out = d.prefix;
  tok::Encoder(d).run(text, out);
  // A text that already starts with the prefix (a chat template that writes
  // bos_token itself) keeps one copy, as transformers' apply_chat_template does.
  const std::size_t p = add_bos ? d.prefix.size() : 0;
  if (p > 0 && out.size() >= 2 * p && std::equal(d.prefix.begin(), d.prefix.end(), out.begin() + p))
    out.erase(out.begin(), out.begin() + p);
  if (add_bos) out.insert(out.end(), d.suffix.begin(), d.suffix.end());
  return out;
}

int Tokenizer::vocab_size() const { return impl_->vocab_size(); }
std::optional<TokenId> Tokenizer::bos_id() const { return impl_->bos; }
std::vector<TokenId> Tokenizer::eos_ids() const { return impl_->eos; }
std::optional<TokenId> Tokenizer::pad_id() const { return impl_->pad; }
std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const { return impl_->find(token); }

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && id < impl_->vocab_size() && impl_->special[id] != 0;
}

std::string Tokenizer::to_json() const { return impl_->json_text; }

std::string Tokenizer::id_to_token(TokenId id) const {
  return id >= 0 && id < impl_->vocab_size() ? impl_->token_text[id] : std::string();
}
std::optional<std::string> Tokenizer::unk_token() const { return impl_->unk_token; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
void Tokenizer::set_chat_template(std::string source) { impl_->chat_template = std::move(source); }

// ---------------------------------------------------------------------------
// Model directories: tokenizer.json plus the optional config files.

namespace {

using json = nlohmann::json;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path.string() + ": cannot be opened for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kIo, path.string() + ": read failed");
  return ss.str();
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw Error(ErrorKind::kIo, path.string() + ": write failed (disk full or no permission?)");
}

json parse_config_object(std::string_view text, const std::string& file) {
  try {
    json j = json::parse(text);
    if (!j.is_object()) throw Error(ErrorKind::kInvalidInput, file + ": must be a JSON object");
    return j;
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kInvalidInput, file + ": not valid JSON: " + e.what());
  }
}

// bos_token and friends are a string, {"content": string, ...}, or null.
std::optional<std::string> token_field(const json& cfg, const char* key, const std::string& file) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  throw Error(ErrorKind::kInvalidInput, file + ": " + key + " must be a string or {\"content\": string}");
}

std::optional<bool> bool_field(const json& cfg, const char* key, const std::string& file) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) throw Error(ErrorKind::kInvalidInput, file + ": " + key + " must be true or false");
  return it->get<bool>();
}

// Token ids in generation_config.json: an int, a list of ints, or null.
std::vector<TokenId> id_field(const json& cfg, const char* key, const std::string& file, int vocab) {
  auto it = cfg.find(key);
  std::vector<TokenId> ids;
  if (it == cfg.end() || it->is_null()) return ids;
  const json list = it->is_array() ? *it : json::array({*it});
  for (const json& v : list) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= vocab)
      throw Error(ErrorKind::kInvalidInput, file + ": " + key + " = " + v.dump() +
                                                " is not a token id of this vocabulary (size " +
                                                std::to_string(vocab) + ")");
    ids.push_back(static_cast<TokenId>(v.get<std::int64_t>()));
  }
  return ids;
}

std::optional<TokenId> resolve(const tok::TokenizerData& d, const std::optional<std::string>& name,
                               const std::string& file, const char* key) {
  if (!name) return std::nullopt;
  auto id = d.find(*name);
  if (!id) spdlog::warn("{}: {} '{}' is not a token of tokenizer.json; ignored", file, key, *name);
  return id;
}

// chat_template is a string, or (transformers' named templates) a list of
// {"name": ..., "template": ...}: the one named "default" is the chat format.
std::optional<std::string> chat_template_field(const json& cfg, const std::string& file) {
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  const std::string what = file + ": chat_template must be a string or a list of {\"name\", \"template\"}";
  if (!it->is_array()) throw Error(ErrorKind::kInvalidInput, what);
  std::optional<std::string> first;
  for (const json& entry : *it) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() || !entry.contains("template") ||
        !entry["template"].is_string())
      throw Error(ErrorKind::kInvalidInput, what);
    if (entry["name"] == "default") return entry["template"].get<std::string>();
    if (!first) first = entry["template"].get<std::string>();
  }
  return first;
}

void apply_tokenizer_config(tok::TokenizerData& d, std::string_view text, const std::string& file) {
  const json cfg = parse_config_object(text, file);
  if (auto chat = chat_template_field(cfg, file)) d.chat_template = std::move(*chat);
  if (auto unk = token_field(cfg, "unk_token", file)) d.unk_token = std::move(unk);
  if (auto id = resolve(d, token_field(cfg, "bos_token", file), file, "bos_token")) d.bos = id;
  if (auto id = resolve(d, token_field(cfg, "eos_token", file), file, "eos_token")) d.eos = {*id};
  if (auto id = resolve(d, token_field(cfg, "pad_token", file), file, "pad_token")) d.pad = id;
  // Explicit flags win over the post-processor's template, as in transformers.
  if (auto add = bool_field(cfg, "add_bos_token", file)) {
    d.prefix.clear();
    if (*add && d.bos) d.prefix.push_back(*d.bos);
  }
  if (auto add = bool_field(cfg, "add_eos_token", file)) {
    d.suffix.clear();
    if (*add && !d.eos.empty()) d.suffix.push_back(d.eos.front());
  }
}

void apply_generation_config(tok::TokenizerData& d, std::string_view text, const std::string& file) {
  const json cfg = parse_config_object(text, file);
  const int n = d.vocab_size();
  if (auto bos = id_field(cfg, "bos_token_id", file, n); !bos.empty()) d.bos = bos.front();
  if (auto pad = id_field(cfg, "pad_token_id", file, n); !pad.empty()) d.pad = pad.front();
  // generation_config lists every id that ends a turn; keep the tokenizer's
  // own EOS too, first in the list, if it is not among them.
  auto eos = id_field(cfg, "eos_token_id", file, n);
  if (eos.empty()) return;
  for (TokenId id : d.eos)
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.insert(eos.begin(), id);
  d.eos = std::move(eos);
}

}  // namespace

Tokenizer Tokenizer::from_dir(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "tokenizer.json";
  if (!std::filesystem::exists(path))
    throw Error(ErrorKind::kNotFound, path.string() + ": not found (a model directory needs a tokenizer.json)");
  Tokenizer t = from_json(read_text(path), path.string());
  // The order matters: generation_config.json's ids refine tokenizer_config.json's.
  const auto tokenizer_config = model_dir / "tokenizer_config.json";
  if (std::filesystem::exists(tokenizer_config))
    t.apply_tokenizer_config(read_text(tokenizer_config), tokenizer_config.string());
  const auto generation_config = model_dir / "generation_config.json";
  if (std::filesystem::exists(generation_config))
    t.apply_generation_config(read_text(generation_config), generation_config.string());
  return t;
}

void Tokenizer::apply_tokenizer_config(std::string_view json_text, const std::string& source_name) {
  fedge::inference::apply_tokenizer_config(*impl_, json_text, source_name);
}

void Tokenizer::apply_generation_config(std::string_view json_text, const std::string& source_name) {
  fedge::inference::apply_generation_config(*impl_, json_text, source_name);
}

// ---------------------------------------------------------------------------
// The tiny preset and writing a tokenizer back out.

Tokenizer Tokenizer::byte_level_tiny() {
  static const std::string text = [] {
    using ojson = nlohmann::ordered_json;
    const char* specials[] = {"<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"};
    ojson added = ojson::array();
    for (int i = 0; i < 5; ++i)
      added.push_back({{"id", 256 + i}, {"content", specials[i]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
    ojson vocab = ojson::object();
    const auto& map = tok::byte_level_map();
    for (int b = 0; b < 256; ++b) vocab[map.byte_to_utf8[b]] = b;
    const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                              {"use_regex", true}};
    const ojson bos_item = {{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}};
    ojson post = {
        {"type", "TemplateProcessing"},
        {"single", {bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", {bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {256}}, {"tokens", {"<|bos|>"}}}}}}};
    ojson model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                   {"vocab", vocab}, {"merges", ojson::array()}};
    ojson root = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr},
                  {"added_tokens", added}, {"normalizer", nullptr}, {"pre_tokenizer", byte_level},
                  {"post_processor", post}, {"decoder", byte_level}, {"model", model}};
    return root.dump(2);
  }();
  Tokenizer t = from_json(text, "tiny preset tokenizer");
  t.set_chat_template(std::string(kFedgeChatTemplate));
  return t;
}

void Tokenizer::save(const std::filesystem::path& dir) const {
  const auto& d = *impl_;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::kIo, dir.string() + ": cannot create directory: " + ec.message());
  write_text(dir / "tokenizer.json", d.json_text);
  nlohmann::ordered_json cfg;
  auto name = [&](std::optional<TokenId> id) -> nlohmann::ordered_json {
    if (!id) return nullptr;
    return d.token_text[*id];
  };
  if (d.prefix.empty() || (d.bos && d.prefix == std::vector<TokenId>{*d.bos}))
    cfg["add_bos_token"] = !d.prefix.empty();
  if (d.suffix.empty() || (!d.eos.empty() && d.suffix == std::vector<TokenId>{d.eos.front()}))
    cfg["add_eos_token"] = !d.suffix.empty();
  cfg["bos_token"] = name(d.bos);
  cfg["eos_token"] = name(d.eos.empty() ? std::nullopt : std::optional<TokenId>(d.eos.front()));
  cfg["pad_token"] = name(d.pad);
  cfg["clean_up_tokenization_spaces"] = false;
  if (!d.chat_template.empty()) cfg["chat_template"] = d.chat_template;
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  write_text(dir / "tokenizer_config.json", cfg.dump(2) + "\n");
}

}  // namespace fedge::inference
