// Tokenizers read from Hugging Face `tokenizer.json` files: byte-level BPE
// (GPT-2 style byte-to-unicode map and pre-tokenizer regex) and
// SentencePiece-style BPE (metaspace "▁", byte fallback), with special and added
// tokens. Lives in fedge_tokenizer, which does not use libtorch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::inference {

using TokenId = std::int32_t;

class Tokenizer {
 public:
  // Parses tokenizer.json text; `source_name` names it in errors. Malformed
  // JSON, an unsupported model type or pre-tokenizer, or inconsistent vocab and
  // merges is an Error(kInvalidInput) naming the source and the field.
  static Tokenizer from_json(std::string_view json_text, std::string source_name);
  // Reads DIR/tokenizer.json, plus DIR/tokenizer_config.json and
  // DIR/generation_config.json where present for BOS/EOS and add_bos_token.
  static Tokenizer from_dir(const std::filesystem::path& model_dir);
  // The built-in tiny preset's vocabulary: a byte-level BPE over the 256 bytes
  // with no merges, plus the special tokens "<|bos|>", "<|eos|>", "<|pad|>",
  // "<|user|>", "<|assistant|>" (ids 256..260). vocab_size() is 261. Its chat
  // template is fedge's own format (kFedgeChatTemplate in chat_template.h).
  static Tokenizer byte_level_tiny();
  // What from_dir() takes from a model directory's config files, given their
  // text (`source_name` names it in errors): tokenizer_config.json's
  // bos/eos/pad/unk tokens, add_bos_token/add_eos_token and chat_template (a
  // string, or a list of {"name", "template"} of which "default" is taken), and
  // generation_config.json's bos/eos/pad token ids (which refine the former).
  // Malformed JSON or a mistyped field is an Error(kInvalidInput).
  void apply_tokenizer_config(std::string_view json_text, const std::string& source_name);
  void apply_generation_config(std::string_view json_text, const std::string& source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special tokens written in `text` are kept whole (never split). With
  // `add_bos` the BOS token is prepended when the tokenizer's config asks for it
  // (and EOS appended where add_eos_token says so: HF's add_special_tokens),
  // unless the text already starts with BOS (a rendered chat template that
  // writes bos_token itself): never two BOS.
  // Text that is not valid UTF-8 is an Error(kInvalidInput). Thread-safe.
  std::vector<TokenId> encode(std::string_view text, bool add_bos = true) const;
  // Runs the tokenizer.json decoder chain as Hugging Face does (including the
  // leading-space strip after a SentencePiece prepend); ids outside the
  // vocabulary are skipped, invalid UTF-8 comes out as U+FFFD.
  std::string decode(std::span<const TokenId> ids, bool skip_special = true) const;

  int vocab_size() const;
  std::optional<TokenId> bos_id() const;
  std::vector<TokenId> eos_ids() const;   // may be several (generation_config.json)
  std::optional<TokenId> pad_id() const;
  std::optional<TokenId> token_to_id(std::string_view token) const;
  bool is_special(TokenId id) const;
  // The token's string as the vocabulary writes it ("<|im_start|>", "Ġthe"),
  // "" outside the vocabulary.
  std::string id_to_token(TokenId id) const;
  // tokenizer_config.json's unk_token, where it names one.
  std::optional<std::string> unk_token() const;

  // The model's Jinja chat template (tokenizer_config.json's chat_template,
  // or GGUF's tokenizer.chat_template); "" when the model has none. Rendered
  // by ChatTemplate (chat_template.h). Parsed only there.
  const std::string& chat_template() const;
  void set_chat_template(std::string source);

  // The tokenizer.json text that from_json() would read back to an equal
  // tokenizer (used to write the tiny preset as a normal HF directory). For a
  // tokenizer read from a file this is that file's text; BOS/EOS settings that
  // came from the config files are written by save(), not here.
  std::string to_json() const;
  // Writes tokenizer.json and tokenizer_config.json (with the chat template,
  // where there is one) into `dir`.
  void save(const std::filesystem::path& dir) const;

  // Raw bytes that one token stands for (after byte-level / byte-fallback
  // decoding, "▁" as a space); used by the streaming decoder. Empty for ids
  // outside the vocabulary.
  std::string token_bytes(TokenId id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text, emitting only complete UTF-8
// characters (a character split across tokens waits for its last byte).
// Meant for generated continuations: a leading "▁" stays a space (decode()
// would strip it at the start of a whole text).
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  std::string push(TokenId id);  // text that became complete with this token
  std::string flush();           // whatever is left (invalid bytes as U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace fedge::inference
