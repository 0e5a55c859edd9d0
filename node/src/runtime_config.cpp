// TOML -> NodeRuntimeConfig. Example: configs/node1.toml.
#include <limits>

#include "fedge/common/config.h"
#include "fedge/common/error.h"
#include "fedge/node/runtime.h"
#include "fedge/protocol/limits_config.h"

namespace fedge::node {
namespace {

namespace fs = std::filesystem;
using config::Range;

std::string model_path(const fs::path& base, const std::string& value) {
  return value == "tiny" ? value : config::resolve_path(base, value).string();
}

void read_train_options(const config::Table& t, LocalTrainerOptions& o) {
  o.lora_alpha = t.number("lora_alpha", o.lora_alpha, {1e-6, 1e6});
  o.train.weight_decay = t.number("weight_decay", o.train.weight_decay, {0.0, 10.0});
  o.train.schedule = t.string("schedule", "constant", {"cosine", "linear", "constant"});
  o.train.warmup_steps = t.integer("warmup_steps", 0, {0, 1000000});
  o.train.max_grad_norm = t.number("max_grad_norm", o.train.max_grad_norm, {0.0, 1e6});
  o.train.grad_accum = static_cast<int>(t.integer("grad_accum", 1, {1, 1024}));
  o.train.seed = static_cast<std::uint64_t>(t.integer("seed", 0, {0, std::numeric_limits<std::int64_t>::max()}));
  o.train.gradient_checkpointing = t.boolean("gradient_checkpointing", false);
  o.train.frozen_base_bf16 = t.boolean("frozen_base_bf16", o.train.frozen_base_bf16);
  o.train.log_every = static_cast<int>(t.integer("log_every", 0, {0, 1000000}));
  o.max_batch_size = static_cast<int>(t.integer("max_batch_size", 0, {0, 65536}));
}

}  // namespace

NodeRuntimeConfig read_node_config(const fs::path& file) {
  const auto doc = config::Document::parse_file(file);
  const auto root = doc.root();
  const fs::path base = file.parent_path();
  NodeRuntimeConfig c;

  const auto node = root.table("node");
  c.node_id = static_cast<protocol::NodeId>(node.required_integer("id", {1, 0xffffffffLL}));
  c.name = node.string("name", "");
  c.device_profile = node.string("device_profile", c.device_profile);
  c.state_dir = config::resolve_path(base, node.string("state_dir", "node-state"));
  c.key_file = config::resolve_path(base, node.string("key", ""));
  c.insecure = node.boolean("insecure", false);
  c.save_updates = node.boolean("save_updates", false);
  c.evaluate_global = node.boolean("evaluate_global", true);
  c.debug_exit_before = node.string("debug_exit_before", "");
  c.exit_after_versions = static_cast<std::uint64_t>(node.integer("exit_after_versions", 0, {0, 1000000}));
  c.memory_mb = node.number("memory_mb", 0.0, {0.0, 1e9});

  const auto secagg = root.table("secagg");
  c.signing_key_file = config::resolve_path(base, secagg.string("signing_key", ""));
  c.roster_file = config::resolve_path(base, secagg.string("roster", ""));
  c.require_malicious = secagg.string("require_mode", "any", {"any", "malicious"}) == "malicious";
  if (c.require_malicious && (c.signing_key_file.empty() || c.roster_file.empty()))
    throw Error(ErrorKind::kInvalidInput, file.string() + ": [secagg] require_mode = \"malicious\" needs signing_key "
                                          "and roster (the Ed25519 key from 'fedge keygen --signing' and the operator's roster)");
  if (c.signing_key_file.empty() != c.roster_file.empty())
    throw Error(ErrorKind::kInvalidInput, file.string() + ": [secagg] signing_key and roster are set together");

  const auto co = root.table("coordinator");
  c.coordinator = co.string("endpoint", c.coordinator);
  c.coordinator_public_key = config::resolve_path(base, co.string("public_key", ""));

  const auto model = root.table("model");
  c.model = model_path(base, model.string("path", "tiny"));
  c.threads = static_cast<int>(model.integer("threads", 0, {0, 1024}));
  const std::string weights = model.string("weights", "f32", inference::weight_type_names());
  c.model_weights = inference::parse_weight_type(weights);

  const auto data = root.table("data");
  c.train_data.path = config::resolve_path(base, data.required_string("train")).string();
  c.eval_path = config::resolve_path(base, data.string("eval", "")).string();
  c.train_data.csv_template = data.string("csv_template", "");
  c.train_data.skip_bad = data.boolean("skip_bad", false);
  c.seq_len = static_cast<int>(data.integer("seq_len", c.seq_len, {8, 65536}));

  read_train_options(root.table("train"), c.trainer);
  c.lora_rank = static_cast<int>(root.table("train").integer("lora_rank", 0, {0, 4096}));
  const auto personal = root.table("personalization");
  auto& p = c.personalization;
  p.kind = personal.string("kind", "none", {"none", "finetune", "ditto", "shared-a"});
  p.steps = static_cast<std::uint32_t>(personal.integer("steps", p.steps, {1, 1000000}));
  p.learning_rate = personal.number("learning_rate", p.learning_rate, {1e-9, 10.0});
  p.batch_size = static_cast<std::uint32_t>(personal.integer("batch_size", p.batch_size, {1, 65536}));
  p.ditto_lambda = personal.number("ditto_lambda", p.ditto_lambda, {0.0, 1e6});
  if (c.lora_rank > 0 && p.enabled())
    personal.fail("kind", "[train] lora_rank (heterogeneous ranks) with personalization is not built; remove one");
  c.limits = protocol::read_limits(root.table("limits"));
  const auto serve = root.table("serve");
  c.serve.http = serve.string("http", "");
  c.serve.zmq = serve.string("zmq", "");
  c.serve.max_queue = static_cast<std::size_t>(serve.integer("max_queue", 16, {1, 100000}));
  c.serve.max_batch = static_cast<int>(serve.integer("max_batch", 4, {1, 1024}));
  c.serve.max_n = static_cast<int>(serve.integer("max_n", 8, {1, 64}));
  c.serve.context = static_cast<int>(serve.integer("context", 0, {0, 1 << 20}));
  c.serve.split_sessions = static_cast<std::size_t>(serve.integer("split_sessions", 16, {1, 10000}));
  c.serve.split_serve = serve.string("split_serve", "");
  c.serve.api_keys = config::resolve_path(base, serve.string("api_keys", ""));
  c.serve.expose_local_adapter = serve.boolean("expose_local_adapter", false);
  c.serve.key = config::resolve_path(base, serve.string("key", ""));
  c.serve.zmq_allow_list = config::resolve_path(base, serve.string("zmq_allow_list", ""));
  c.serve.split_allow_list = config::resolve_path(base, serve.string("split_allow_list", ""));
  c.serve.insecure = serve.boolean("insecure", false);
  const auto split = serve.table("split");
  c.serve.split_peer = split.string("peer", "");
  c.serve.split_peer_public_key = config::resolve_path(base, split.string("peer_public_key", ""));
  c.serve.split_layers = static_cast<int>(split.integer("layers", 1, {1, 4096}));
  c.serve.split_deadline_ms = static_cast<std::uint32_t>(split.integer("deadline_ms", 2000, {1, 600000}));
  doc.reject_unknown_keys();
  return c;
}

}  // namespace fedge::node
