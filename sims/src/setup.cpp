// A run's shared state, built the same way in the simulation's own process and
// in every node host: the data split from the scenario's seed, the (cached)
// pretrained base, and each node's tokenised records.
#include <unistd.h>

#include <filesystem>

#include <spdlog/spdlog.h>

#include "context.h"
#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/inference/generate.h"
#include "fedge/sims/file_data.h"
#include "fedge/training/commands.h"
#include "fedge/training/synth_data.h"

namespace fedge::sims::detail {
namespace {

namespace fs = std::filesystem;

std::uint64_t record_bytes(const std::vector<training::Record>& records) {
  std::uint64_t n = 0;
  for (const auto& r : records) n += r.prompt.size() + r.completion.size();
  return n;
}

// The same cached base as scripts/quickstart.sh: the tiny preset (model seed 0)
// pretrained 300 steps (seed 1) on the public corpus of `fedge data synth --seed 1`.
fs::path ensure_pretrained_base(const Scenario& s) {
  fs::path dir = s.cache_dir / "tiny-base-v1";
  if (fs::exists(dir / "model.safetensors")) return dir;
  spdlog::info("no cached tiny base in {}: pretraining it once ({} steps)", dir.string(), s.model.pretrain_steps);
  training::SynthOptions so;
  so.sites = 8;
  so.seed = 1;
  auto synth = training::make_synth_dataset(so);
  fs::path tmp = s.cache_dir / ("tiny-base-v1.tmp" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  training::PretrainCommand cmd;
  cmd.out = (tmp / "model").string();
  cmd.options.steps = s.model.pretrain_steps;
  cmd.options.batch_size = 8;
  cmd.options.lr = 3e-3;
  cmd.options.warmup_steps = std::min<std::int64_t>(20, s.model.pretrain_steps / 10);
  cmd.options.seed = 1;
  cmd.options.log_every = 50;
  training::pretrain_tiny(synth.public_corpus, cmd);  // into a temporary folder: not a path to print
  std::error_code ec;
  fs::rename(tmp / "model", dir, ec);  // another run may have won the race: fine
  fs::remove_all(tmp, ec);
  if (!fs::exists(dir / "model.safetensors")) {
    throw Error(ErrorKind::kIo, "could not place the pretrained base in " + dir.string());
  }
  spdlog::info("pretrained base cached in {}", dir.string());
  return dir;
}

std::pair<inference::Model, inference::Tokenizer> load_base(const Scenario& s) {
  inference::LoadOptions options;
  options.weights = inference::parse_weight_type(s.model.quant);
  if (s.model.base == "tiny-random") {
    // The base is the scenario's, the same for every seed index.
    return {inference::Model::random(inference::ModelConfig::tiny(), s.scenario_seed, options),
            inference::Tokenizer::byte_level_tiny()};
  }
  // A Hugging Face folder or a GGUF file (model and tokenizer from the file).
  const fs::path base = s.model.base == "tiny-pretrained" ? ensure_pretrained_base(s) : fs::path(s.model.base);
  auto loaded = inference::load_model_spec(base.string(), options);
  return {std::move(loaded.model), std::move(loaded.tokenizer)};
}

std::vector<NodeData> empty_nodes(const Scenario& s) {
  std::vector<NodeData> nodes(static_cast<std::size_t>(s.nodes));
  for (int n = 0; n < s.nodes; ++n) {
    nodes[n].index = n;
    nodes[n].device = s.node_devices[static_cast<std::size_t>(n) % s.node_devices.size()];
  }
  return nodes;
}

// The user's files: a node's held-out records are all measured for perplexity,
// and those with a prompt (instructions) also for exact-match accuracy.
std::vector<NodeData> split_file_data(const Scenario& s) {
  auto sites = load_file_sites(s.data, s.scenario_seed);  // the same records for every seed index
  auto split = split_file_sites(sites, s.nodes, s.partition);
  auto nodes = empty_nodes(s);
  for (auto& node : nodes) {
    auto& records = split[static_cast<std::size_t>(node.index)];
    node.train = std::move(records.train);
    node.eval_text = std::move(records.eval);
    for (const auto& r : node.eval_text) {
      if (r.is_instruction()) node.eval_instruct.push_back(r);
    }
    node.raw_bytes = record_bytes(node.train);
  }
  return nodes;
}

// Items are (site, row) pairs; a node gets the text report and the status
// question of each of its rows, for training and held out alike.
std::vector<NodeData> split_data(const Scenario& s) {
  if (s.data.from_files()) return split_file_data(s);
  training::SynthOptions so;
  so.sites = s.data.sites;
  so.days = s.data.days;
  so.wells_per_site = s.data.wells_per_site;
  so.eval_fraction = s.data.eval_fraction;
  so.public_records = 0;
  so.seed = s.scenario_seed;  // the same records for every seed index; the split below varies with s.seed
  auto synth = training::make_synth_dataset(so);
  struct Item { int site; std::size_t row; };
  std::vector<Item> train_items, eval_items;
  std::vector<int> train_keys, eval_keys;
  for (int k = 0; k < static_cast<int>(synth.sites.size()); ++k) {
    for (std::size_t i = 0; i < synth.sites[k].train_text.size(); ++i) train_items.push_back({k, i}), train_keys.push_back(k);
    for (std::size_t i = 0; i < synth.sites[k].eval_text.size(); ++i) eval_items.push_back({k, i}), eval_keys.push_back(k);
  }
  auto part = partition(train_keys, s.data.sites, s.nodes, s.partition);
  auto eval_split = apply_plan(part.plan, eval_keys, derive_seed(s.seed, "partition/eval"));
  std::vector<NodeData> nodes(static_cast<std::size_t>(s.nodes));
  for (int n = 0; n < s.nodes; ++n) {
    auto& node = nodes[n];
    node.index = n;
    node.device = s.node_devices[static_cast<std::size_t>(n) % s.node_devices.size()];
    for (auto i : part.per_node[n]) {
      const auto& site = synth.sites[train_items[i].site];
      node.train.push_back(site.train_text[train_items[i].row]);
      if (s.data.instructions) node.train.push_back(site.train_instruct[train_items[i].row]);
    }
    for (auto i : eval_split[n]) {
      const auto& site = synth.sites[eval_items[i].site];
      node.eval_text.push_back(site.eval_text[eval_items[i].row]);
      node.eval_instruct.push_back(site.eval_instruct[eval_items[i].row]);
    }
    if (node.eval_text.empty()) {  // a skewed split can leave a node no held-out rows: use its own site's
      const auto& site = synth.sites[train_items[part.per_node[n].front()].site];
      node.eval_text = site.eval_text;
      node.eval_instruct = site.eval_instruct;
    }
    node.raw_bytes = record_bytes(node.train);
  }
  return nodes;
}

void tokenize(const Scenario& s, std::vector<NodeData>& nodes, const inference::Tokenizer& tok) {
  for (auto& node : nodes) {
    node.train_set = training::TokenDataset::build(tok, node.train, s.model.seq_len, false);
    node.eval_set = training::TokenDataset::build(tok, node.eval_text, s.model.seq_len, false);
    // Serving requests: the node's own held-out questions (cycled); plain
    // text data has none, so its held-out texts are the prompts (cut to seq_len).
    for (const auto& r : node.eval_instruct) {
      node.prompt_tokens.push_back(static_cast<std::int64_t>(tok.encode(r.prompt).size()));
      node.prompt_bytes.push_back(r.prompt.size());
    }
    if (node.eval_instruct.empty()) {
      for (const auto& r : node.eval_text) {
        const auto tokens = static_cast<std::int64_t>(tok.encode(r.completion).size());
        const std::int64_t kept = std::min<std::int64_t>(tokens, s.model.seq_len);
        node.prompt_tokens.push_back(kept);
        node.prompt_bytes.push_back(tokens > 0 ? r.completion.size() * kept / tokens : 0);
      }
    }
  }
}

}  // namespace

std::unique_ptr<Context> build_context(const Scenario& s, std::optional<std::pair<int, int>> block) {
  auto nodes = split_data(s);  // fails on an impossible split before any model work
  std::vector<training::Record> pooled_eval;  // personalization: every node's held-out rows, before a block drops them
  if (s.training.personalizes()) {
    for (const auto& node : nodes) pooled_eval.insert(pooled_eval.end(), node.eval_text.begin(), node.eval_text.end());
  }
  if (block) {
    for (auto& node : nodes) {
      if (node.index >= block->first && node.index < block->second) continue;
      node.train.clear();
      node.eval_text.clear();
      node.eval_instruct.clear();
    }
  }
  auto [model, tokenizer] = load_base(s);
  tokenize(s, nodes, tokenizer);
  std::optional<training::TokenDataset> pooled;
  if (!pooled_eval.empty()) pooled = training::TokenDataset::build(tokenizer, pooled_eval, s.model.seq_len, false);
  auto ctx = std::make_unique<Context>(s, std::move(nodes), std::move(model), std::move(tokenizer));
  if (pooled) ctx->set_pooled_eval_set(std::move(*pooled));
  return ctx;
}

namespace {

// A string with its terminating NUL, so "ab"+"c" and "a"+"bc" differ.
std::uint64_t fnv1a(const std::string& s, std::uint64_t h) { return detail::fnv1a(s.data(), s.size() + 1, h); }

std::string hex(std::uint64_t h) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace

std::string base_digest(const Context& ctx) {
  std::uint64_t h = kFnvOffset;
  for (const auto& [name, tensor] : ctx.model().named_weights()) {
    h = fnv1a(name, h);
    auto t = tensor.contiguous();
    h = fnv1a(t.data_ptr(), t.nbytes(), h);
  }
  return hex(h);
}

std::string split_digest(const Context& ctx, int first, int end) {
  std::uint64_t h = kFnvOffset;
  for (int n = first; n < end; ++n) {
    const auto& node = ctx.node(n);
    h = fnv1a(&n, sizeof n, h);
    for (const auto* records : {&node.train, &node.eval_text, &node.eval_instruct}) {
      for (const auto& r : *records) h = fnv1a(r.completion, fnv1a(r.prompt, h));
    }
  }
  return hex(h);
}

}  // namespace fedge::sims::detail
