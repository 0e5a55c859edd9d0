// TOML -> CoordinatorRuntimeConfig / FederationConfig. Every key is typed and
// range-checked; unknown keys are errors (config.h). Example: configs/coordinator.toml.
#include <filesystem>

#include "fedge/common/error.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/protocol/keys.h"
#include "fedge/protocol/limits_config.h"
#include "fedge/protocol/transport.h"

namespace fedge::coordinator {
namespace {

namespace fs = std::filesystem;
using config::Range;

std::uint32_t u32(const config::Table& t, std::string_view key, std::uint32_t fallback,
                  std::int64_t min = 0, std::int64_t max = 0xffffffffLL) {
  return static_cast<std::uint32_t>(t.integer(key, fallback, Range<std::int64_t>{min, max}));
}

protocol::DpMode dp_mode(const std::string& name) {
  if (name == "central") return protocol::DpMode::kCentral;
  if (name == "distributed") return protocol::DpMode::kDistributed;
  return protocol::DpMode::kNone;
}

void read_strategy_params(const config::Table& t, aggregation::StrategyParams& params) {
  // Every key, so plug-in strategies' own parameters come through too;
  // make_strategy refuses names the chosen strategy does not take.
  for (const std::string& name : t.keys()) params[name] = t.number(name, 0.0);
}

// [federation] rank_aggregation of the daemons (read here, as personalization
// is: a scenario sets it in [training]). Real nodes report their LoRA rank in
// the secure sum only, so HetLoRA needs secure rounds; FlexLoRA's dense global
// is the simulator's alone so far.
void read_rank_aggregation(const config::Table& t, CoordinatorRuntimeConfig& c) {
  const auto name = t.string("rank_aggregation", "none", {"none", "hetlora", "flexlora"});
  if (name == "none") return;
  if (name == "flexlora")
    t.fail("rank_aggregation", "\"flexlora\" runs only in the simulator (fedge sim) so far: its global is the dense "
                               "products B A, which fedge node does not factor yet; use \"hetlora\"");
  if (!c.federation.secure)
    t.fail("rank_aggregation", "\"hetlora\" needs secure = true on the real daemons: a node reports its LoRA rank "
                               "in the secure sum ([train] lora_rank in its config)");
  if (c.shared_a)
    t.fail("rank_aggregation", "\"hetlora\" with personalization = \"shared-a\" is not built: shared-a's nodes "
                               "train the global's rank");
  c.federation.rank_aggregation = aggregation::RankAggregation::kHetLora;
}

// SCAFFOLD on the daemons (docs/FEDERATION.md, "Strategies"): a node keeps
// its new control variate only once the unmask request of a secure round says
// its update is in the sum, so rounds must be secure; N is the operator's.
void check_scaffold(const config::Table& t, const CoordinatorRuntimeConfig& c) {
  if (c.federation.strategy != "scaffold") return;
  if (!c.federation.secure)
    t.fail("strategy", "\"scaffold\" needs secure = true on the real daemons: a node learns that its update is in "
                       "the round's sum (and keeps its new control variate) from the secure round's unmask request");
  if (c.federation.strategy_params.count("num_nodes") == 0)
    t.fail("strategy", "\"scaffold\" needs strategy_params.num_nodes: N, every node of the federation (c moves by "
                       "|S|/N of the mean control update)");
  if (c.federation.dp.mode != protocol::DpMode::kNone)
    t.fail("strategy", "\"scaffold\" with [federation.dp] is not built: one clip norm would bind the adapter and "
                       "the control variate together");
  if (c.shared_a || c.federation.rank_aggregation != aggregation::RankAggregation::kNone)
    t.fail("strategy", "\"scaffold\" with personalization = \"shared-a\" or rank_aggregation is not built");
}

}  // namespace

FederationConfig read_federation_config(const config::Table& t) {
  FederationConfig c;
  c.rounds = static_cast<std::uint64_t>(t.integer("rounds", static_cast<std::int64_t>(c.rounds), {1, 1000000}));
  c.min_nodes = u32(t, "min_nodes", c.min_nodes, 1);
  c.max_nodes = u32(t, "max_nodes", c.max_nodes);
  c.startup_nodes = u32(t, "startup_nodes", c.startup_nodes);
  c.fraction = t.number("fraction", c.fraction, {1e-9, 1.0});
  c.heartbeat_interval_ms = u32(t, "heartbeat_interval_ms", c.heartbeat_interval_ms, 10);
  c.liveness_timeout_ms = u32(t, "liveness_timeout_ms", c.liveness_timeout_ms, 10);
  c.seed = static_cast<std::uint64_t>(t.integer("seed", 0, {0, std::numeric_limits<std::int64_t>::max()}));
  c.round_gap_ms = u32(t, "round_gap_ms", c.round_gap_ms);
  c.retry_delay_ms = u32(t, "retry_delay_ms", c.retry_delay_ms);
  c.secure = t.boolean("secure", c.secure);
  c.weight_caps.max_examples = static_cast<std::uint64_t>(
      t.integer("max_examples", static_cast<std::int64_t>(c.weight_caps.max_examples),
                {1, std::numeric_limits<std::int64_t>::max()}));
  c.weight_caps.max_share = t.number("max_weight_share", c.weight_caps.max_share, {1e-9, 1.0});
  c.strategy = t.string("strategy", c.strategy);
  read_strategy_params(t.table("strategy_params"), c.strategy_params);

  const auto train = t.table("train");
  c.hyper.local_steps = u32(train, "local_steps", c.hyper.local_steps, 1, 1000000);
  c.hyper.learning_rate = static_cast<float>(train.number("learning_rate", c.hyper.learning_rate, {0.0, 10.0}));
  c.hyper.batch_size = u32(train, "batch_size", c.hyper.batch_size, 1, 65536);
  c.hyper.fedprox_mu = static_cast<float>(train.number("fedprox_mu", c.hyper.fedprox_mu, {0.0, 1e6}));

  const auto d = t.table("deadlines");
  c.deadlines.train_ms = u32(d, "train_ms", c.deadlines.train_ms, 1);
  c.deadlines.advertise_keys_ms = u32(d, "advertise_keys_ms", c.deadlines.advertise_keys_ms, 1);
  c.deadlines.share_keys_ms = u32(d, "share_keys_ms", c.deadlines.share_keys_ms, 1);
  c.deadlines.masked_input_ms = u32(d, "masked_input_ms", c.deadlines.masked_input_ms, 1);
  c.deadlines.unmask_ms = u32(d, "unmask_ms", c.deadlines.unmask_ms, 1);

  const auto s = t.table("secagg");
  c.expected_dropout = s.number("expected_dropout", c.expected_dropout, {0.0, 0.99});
  c.corrupt_fraction = s.number("corrupt_fraction", c.corrupt_fraction, {0.0, 0.99});
  c.failure_probability = s.number("failure_probability", c.failure_probability, {1e-300, 1.0});
  c.secagg_degree = u32(s, "degree", c.secagg_degree);
  c.secagg_threshold = u32(s, "threshold", c.secagg_threshold);
  c.clip_range = s.number("clip_range", c.clip_range, {1e-12, 1e12});
  c.quant_bits = u32(s, "quant_bits", c.quant_bits, 0, 32);
  c.loss_cap = s.number("loss_cap", c.loss_cap, {0.0, 1e6});
  c.secagg_threads = static_cast<int>(s.integer("threads", c.secagg_threads, {0, 1024}));
  c.secagg_prg = s.string("prg", "chacha20", {"chacha20", "aes256ctr"}) == "aes256ctr" ? privacy::PrgKind::kAes256Ctr
                                                                                        : privacy::PrgKind::kChaCha20;
  c.secagg_mode = s.string("mode", "semi-honest", {"semi-honest", "malicious"}) == "malicious"
                      ? aggregation::SecAggMode::kMalicious
                      : aggregation::SecAggMode::kSemiHonest;
  c.min_survivors = u32(t, "min_survivors", c.min_survivors);

  const auto dp = t.table("dp");
  c.dp.mode = dp_mode(dp.string("mode", "none", {"none", "central", "distributed"}));
  c.dp.clip_norm = dp.number("clip_norm", c.dp.clip_norm, {1e-12, 1e12});
  c.dp.noise_multiplier = dp.number("noise_multiplier", c.dp.noise_multiplier, {0.0, 1e6});
  c.dp.delta = dp.number("delta", c.dp.delta, {1e-300, 0.999});
  return c;
}

CoordinatorRuntimeConfig read_coordinator_config(const fs::path& file) {
  const auto doc = config::Document::parse_file(file);
  const auto root = doc.root();
  const fs::path base = file.parent_path();
  CoordinatorRuntimeConfig c;
  const auto co = root.table("coordinator");
  c.bind = co.string("bind", c.bind);
  c.key_file = config::resolve_path(base, co.string("key", ""));
  c.allow_list = config::resolve_path(base, co.string("allow_list", ""));
  c.insecure = co.boolean("insecure", false);
  c.state_dir = config::resolve_path(base, co.string("state_dir", "coordinator-state"));
  c.initial_adapter = config::resolve_path(base, co.string("initial_adapter", ""));
  c.finish_linger_ms = u32(co, "finish_linger_ms", c.finish_linger_ms);
  c.endpoint_file = config::resolve_path(base, co.string("endpoint_file", ""));
  c.federation = read_federation_config(root.table("federation"));
  // Read here, not in read_federation_config: a scenario sets personalization
  // in its [training] table, per level.
  const auto personalization = root.table("federation").string("personalization", "none", {"none", "shared-a"});
  c.shared_a = personalization == "shared-a";
  read_rank_aggregation(root.table("federation"), c);
  check_scaffold(root.table("federation"), c);
  // The roster is a file next to the config, so it is read here (the
  // simulator's scenarios have no roster: its nodes are in-process).
  const fs::path roster = config::resolve_path(base, root.table("federation").table("secagg").string("roster", ""));
  if (!roster.empty()) c.federation.secagg_roster = protocol::load_roster(roster);
  c.limits = protocol::read_limits(root.table("limits"));
  c.queue_per_peer = static_cast<int>(root.table("limits").integer("queue_per_peer", c.queue_per_peer, {4, 100000}));
  const auto ad = root.table("adapter");
  c.adapter_init.model = ad.string("model", c.adapter_init.model);
  c.adapter_init.rank = static_cast<int>(ad.integer("rank", c.adapter_init.rank, {1, 4096}));
  c.adapter_init.alpha = ad.number("alpha", c.adapter_init.alpha, {1e-6, 1e6});
  c.adapter_init.targets = ad.strings("targets", c.adapter_init.targets);
  const auto http = root.table("http");
  c.http.listen = http.string("listen", "");
  c.http.api_keys = config::resolve_path(base, http.string("api_keys", ""));
  c.http.url_file = config::resolve_path(base, http.string("url_file", ""));
  if (c.http.listen.empty() && !c.http.api_keys.empty())
    throw Error(ErrorKind::kInvalidInput, file.string() + ": [http] api_keys is set but listen is not; set "
                                          "http.listen (e.g. \"127.0.0.1:9464\") to serve metrics and the dashboard");
  if (!c.http.listen.empty()) protocol::parse_host_port(c.http.listen, file.string() + ": http.listen");
  c.adapter_init.seed = static_cast<std::uint64_t>(ad.integer("seed", 0, {0, std::numeric_limits<std::int64_t>::max()}));
  if (c.adapter_init.model != "tiny") c.adapter_init.model = config::resolve_path(base, c.adapter_init.model).string();
  doc.reject_unknown_keys();
  return c;
}

}  // namespace fedge::coordinator
