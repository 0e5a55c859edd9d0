// The node process: I/O around RoundClient. The round logic lives in the
// client; this file owns the socket, the training worker and the files.
#include "fedge/node/runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>
#include <variant>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/clock.h"
#include "fedge/common/machine.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/federation/size_caps.h"
#include "fedge/node/lora_ranks.h"
#include "fedge/node/memory_budget.h"
#include "fedge/node/scaffold.h"
#include "fedge/node/shared_a.h"
#include "fedge/protocol/keys.h"
#include "fedge/protocol/layout.h"
#include "fedge/protocol/transport.h"

namespace fedge::node {
namespace {

namespace fs = std::filesystem;

struct TrainJob {
  std::uint64_t ticket = 0;
  LocalTrainRequest request;
  std::shared_ptr<const ParamVector> global;
  std::shared_ptr<const ParamVector> gradient_offset;  // SCAFFOLD's c - c_i; null: none
};
struct EvalJob {
  std::uint64_t version = 0;
  std::shared_ptr<const ParamVector> global;
};
struct PersonalJob {
  std::uint64_t version = 0;
  std::shared_ptr<const ParamVector> global;
  PersonalizationOptions options;
};
using Job = std::variant<TrainJob, EvalJob, PersonalJob>;

struct TrainDone {
  std::uint64_t ticket = 0;
  std::uint64_t round = 0;
  LocalTrainResult result;
  std::shared_ptr<const ParamVector> start;  // the adapter the training started from
};
struct TrainFailed {
  std::uint64_t ticket = 0;
  std::string reason;
};
struct EvalDone {
  std::uint64_t version = 0;
  training::EvalResult result;
};
struct PersonalDone {
  std::uint64_t version = 0;
  std::shared_ptr<const ParamVector> params;  // null: it failed (logged)
  double train_loss = 0;
};
using JobResult = std::variant<TrainDone, TrainFailed, EvalDone, PersonalDone>;

// One thread that trains and evaluates on the node's training model, so the
// network loop keeps heartbeating meanwhile.
class Worker {
 public:
  // `personal`: ditto's adapter so far (null: none yet); the worker carries
  // it from one personalization to the next.
  Worker(LocalTrainer& trainer, std::shared_ptr<const ParamVector> personal)
      : trainer_(trainer), personal_(std::move(personal)), thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mu_);
      quit_ = true;
      cancel_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // A round's training goes ahead of queued personalization: the round has
  // a deadline, the local slot's refresh does not. A personalization for a
  // newer global replaces one still queued for an older one.
  void submit(Job job) {
    {
      std::lock_guard lock(mu_);
      const auto personal = [](const Job& j) { return std::holds_alternative<PersonalJob>(j); };
      auto at = jobs_.end();
      if (std::holds_alternative<TrainJob>(job)) {
        cancel_ = false;
        at = std::find_if(jobs_.begin(), jobs_.end(), personal);
      } else if (personal(job)) {
        std::erase_if(jobs_, personal);
        at = jobs_.end();
      }
      jobs_.insert(at, std::move(job));
    }
    cv_.notify_all();
  }
  // Abandons the running training job (and queued ones) as soon as it checks.
  void cancel_training() {
    std::lock_guard lock(mu_);
    cancel_ = true;
    std::erase_if(jobs_, [](const Job& j) { return std::holds_alternative<TrainJob>(j); });
  }
  std::vector<JobResult> take_results() {
    std::lock_guard lock(mu_);
    std::vector<JobResult> out(std::make_move_iterator(results_.begin()), std::make_move_iterator(results_.end()));
    results_.clear();
    return out;
  }
  bool busy() {
    std::lock_guard lock(mu_);
    return running_ || !jobs_.empty();
  }

 private:
  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return quit_ || !jobs_.empty(); });
        if (quit_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
        running_ = true;
      }
      JobResult result = std::visit([this](auto& j) { return run(j); }, job);
      std::lock_guard lock(mu_);
      running_ = false;
      results_.push_back(std::move(result));
    }
  }

  JobResult run(TrainJob& job) {
    try {
      auto stop = [this] {
        std::lock_guard lock(mu_);
        return cancel_;
      };
      return TrainDone{job.ticket, job.request.round,
                       trainer_.train(*job.global, job.request, stop, job.gradient_offset.get()), job.global};
    } catch (const std::exception& e) {
      return TrainFailed{job.ticket, e.what()};
    }
  }

  JobResult run(PersonalJob& job) {
    try {
      auto quitting = [this] {
        std::lock_guard lock(mu_);
        return quit_;
      };
      double loss = 0;
      // Ditto continues from the adapter the last personalization made, not
      // the one the runtime had when it queued this job.
      personal_ = std::make_shared<const ParamVector>(
          trainer_.personalize(*job.global, personal_.get(), job.version, job.options, loss, quitting));
      return PersonalDone{job.version, personal_, loss};
    } catch (const std::exception& e) {
      spdlog::warn("personalizing global v{}: {}", job.version, e.what());
      return PersonalDone{job.version, nullptr, 0};
    }
  }

  JobResult run(EvalJob& job) {
    try {
      return EvalDone{job.version, trainer_.evaluate(*job.global)};
    } catch (const std::exception& e) {
      spdlog::warn("evaluating global v{}: {}", job.version, e.what());
      return EvalDone{job.version, {}};
    }
  }

  LocalTrainer& trainer_;
  std::shared_ptr<const ParamVector> personal_;  // worker thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<JobResult> results_;
  bool quit_ = false, cancel_ = false, running_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

// The node's one base (serving shares it), checked against the memory
// budget before anything else is allocated.
inference::LoadedModel load_base(const NodeRuntimeConfig& config) {
  inference::LoadOptions options;
  options.weights = config.model_weights;
  auto loaded = inference::load_model_spec(config.model, options);
  const NodeMemory memory = estimate_node_memory(loaded.model, config);
  check_memory_budget(memory, config);
  spdlog::info("node memory: {}{}; resident now {:.0f} MB", describe(memory),
               config.memory_mb > 0 ? fmt::format(", within the budget of {:.0f} MB", config.memory_mb) : "",
               rss_megabytes());
  return loaded;
}

training::TokenDataset dataset(const inference::Tokenizer& tokenizer, const training::DataSource& source,
                               int seq_len) {
  const auto records = source.read(tokenizer);
  return training::TokenDataset::build(tokenizer, records, seq_len, /*pack=*/false);
}

}  // namespace

struct NodeRuntime::Impl {
  NodeRuntimeConfig config;
  inference::LoadedModel loaded;
  std::unique_ptr<LocalTrainer> trainer;
  std::optional<SharedALora> shared_a;  // [personalization] kind = "shared-a": this node's B
  ScaffoldControl scaffold;             // SCAFFOLD's c_i, used when the global is [x ; c]
  std::unique_ptr<Worker> worker;
  protocol::Context context;
  std::unique_ptr<protocol::Dealer> dealer;
  std::optional<RoundClient> client;
  protocol::Key32 public_key{};

  std::shared_ptr<const ParamVector> global;
  std::uint64_t global_version = 0;
  std::optional<std::uint64_t> first_version;
  std::function<void(const ParamVector&, std::uint64_t)> installed_callback;
  std::function<void(const ParamVector&, std::uint64_t)> local_callback;
  mutable std::mutex stats_mutex;
  NodeStats stats;                   // guarded by stats_mutex
  std::uint32_t training_steps = 0;  // of the training running now
  std::uint32_t training_rank = 0;   // HetLoRA: the LoRA rank of the training running now (0: the global's)

  template <typename F>
  void update_stats(F&& change) {
    std::lock_guard lock(stats_mutex);
    change(stats);
  }

  explicit Impl(NodeRuntimeConfig c)
      : config(std::move(c)), loaded(load_base(config)), scaffold(config.state_dir / "scaffold_control.safetensors") {
    if (config.name.empty()) config.name = "node-" + std::to_string(config.node_id);
    auto train = dataset(loaded.tokenizer, config.train_data, config.seq_len);
    std::optional<training::TokenDataset> eval;
    if (!config.eval_path.empty()) {
      training::DataSource source = config.train_data;
      source.path = config.eval_path;
      eval = dataset(loaded.tokenizer, source, config.seq_len);
    }
    trainer = std::make_unique<LocalTrainer>(loaded.model, std::move(train), std::move(eval), config.trainer);
    fs::create_directories(config.state_dir);
    if (config.personalization.shares_a_only()) shared_a.emplace(loaded.model.config(), config.trainer.lora_alpha);
    auto personal = load_personal();
    connect();
    NodeIdentity identity;
    identity.node_id = config.node_id;
    identity.name = config.name;
    identity.public_key = public_key;
    identity.capabilities.device_profile = config.device_profile;
    identity.capabilities.num_examples = trainer->num_examples();
    identity.capabilities.model_name = config.model;
    identity.capabilities.threads = static_cast<std::uint32_t>(config.threads);
    client.emplace(identity, client_config());
    worker = std::make_unique<Worker>(*trainer, std::move(personal));
  }

  ~Impl() { worker.reset(); }  // joins before the trainer and model go

  NodeClientConfig client_config() const {
    NodeClientConfig c;
    c.require_malicious = config.require_malicious;
    if (!config.signing_key_file.empty()) {
      // RoundClient checks that the roster lists this node with this key.
      c.signing_seed = protocol::load_signing_seed(config.signing_key_file);
      c.roster = protocol::load_roster(config.roster_file);
      spdlog::info("secure aggregation: Ed25519 identity loaded, roster of {} nodes{}", c.roster.size(),
                   c.require_malicious ? ", malicious mode required" : "");
    }
    return c;
  }

  void connect() {
    protocol::SocketOptions options;
    options.limits = config.limits;
    std::optional<protocol::CurveClient> curve;
    if (!config.insecure) {
      if (config.key_file.empty() || config.coordinator_public_key.empty()) {
        throw Error(ErrorKind::kInvalidInput,
                    "node: set node.key and coordinator.public_key (CurveZMQ), or node.insecure = true for a "
                    "plain-TCP test setup");
      }
      auto keys = protocol::load_key_pair(config.key_file);
      public_key = protocol::z85_to_key(keys.public_z85, config.key_file.string());
      curve = protocol::CurveClient{std::move(keys), protocol::load_public_key(config.coordinator_public_key)};
    }
    dealer = std::make_unique<protocol::Dealer>(context, config.coordinator, options, std::move(curve));
    spdlog::info("node {} ('{}') connecting to {} with {} training examples", config.node_id, config.name,
                 config.coordinator, trainer->num_examples());
  }

  // ---- actions ----
  void send(const protocol::Envelope& env) {
    if (!config.debug_exit_before.empty() &&
        config.debug_exit_before == std::string(protocol::body_name(env.body)) + "@" + std::to_string(env.round)) {
      spdlog::warn("fault injection: exiting instead of sending {} of round {}", protocol::body_name(env.body),
                   env.round);
      spdlog::default_logger()->flush();
      std::_Exit(99);
    }
    try {
      dealer->send(protocol::encode(env));
    } catch (const Error& e) {
      spdlog::warn("sending {} to the coordinator failed: {}", protocol::body_name(env.body), e.what());
    }
  }

  void apply(NodeActions actions) {
    for (const auto& note : actions.notes) spdlog::info("{}", note);
    if (actions.update_in_sum) scaffold.on_update_in_sum();
    if (actions.install) install(std::move(*actions.install));
    if (actions.cancel_training) worker->cancel_training();
    if (actions.train) start_training(*actions.train);
    for (const auto& env : actions.send) send(env);
  }

  void install(InstallGlobal install) {
    auto params = std::make_shared<ParamVector>(protocol::to_param_layout(install.layout), std::move(install.params));
    // What the node saves, serves and evaluates: the global itself, or under
    // shared-a (a global of A matrices) the global as a whole adapter, and the
    // node's own adapter. A global this node cannot use stops it here, before
    // anything changes, with the setting to fix.
    std::shared_ptr<const ParamVector> served = params, evaluated = params, own;
    if (is_scaffold_layout(params->layout())) {
      // SCAFFOLD's [x ; c]: the node saves, serves and evaluates x.
      if (shared_a || config.personalization.enabled() || config.lora_rank > 0)
        throw Error(ErrorKind::kInvalidInput,
                    "the coordinator runs strategy = \"scaffold\", which this node's [personalization] or [train] "
                    "lora_rank does not combine with (not built); remove them from this node's config");
      served = evaluated = std::make_shared<const ParamVector>(scaffold_adapter(*params));
    } else if (shared_a) {
      own = std::make_shared<const ParamVector>(shared_a->node_adapter(*params));
      served = std::make_shared<const ParamVector>(shared_a->global_adapter(*params));
      evaluated = own;
    } else if (is_lora_a_only(params->layout())) {
      throw Error(ErrorKind::kInvalidInput,
                  "the coordinator federates LoRA A matrices only ([federation] personalization = \"shared-a\"), "
                  "but this node's [personalization] kind is \"" + config.personalization.kind +
                      "\": set kind = \"shared-a\" in this node's config");
    }
    scaffold.on_global_installed();  // the last round's c_i+, if its update was summed
    global = params;
    global_version = install.version;
    if (!first_version) first_version = install.version;
    update_stats([&](NodeStats& st) {
      st.has_global = true;
      st.global_version = install.version;
      ++st.global_installs;
    });
    save_global(*served, install.version);
    spdlog::info("installed global adapter v{}{}", install.version, shared_a ? " (A matrices, shared-a)" : "");
    if (installed_callback) installed_callback(*served, install.version);
    if (config.evaluate_global && trainer->has_eval()) worker->submit(EvalJob{install.version, evaluated});
    if (config.personalization.trains_personal())
      worker->submit(PersonalJob{install.version, params, config.personalization});
    if (own) publish_personal(*own, install.version);
  }

  // The node's own adapter: saved to state_dir/personal, counted, and served
  // in the local slot.
  void publish_personal(const ParamVector& own, std::uint64_t version) {
    save_adapter(own, version, "personal");
    update_stats([&](NodeStats& st) { st.personal_version = version; });
    if (local_callback) local_callback(own, version);
  }

  // Saves the adapter as a PEFT directory state_dir/NAME (written aside, then
  // renamed) with the global version it came from.
  void save_adapter(const ParamVector& params, std::uint64_t version, const std::string& name) {
    const auto adapter = adapter_from_params(params, loaded.model.config(), config.trainer.lora_alpha);
    const fs::path tmp = config.state_dir / (name + ".tmp");
    fs::remove_all(tmp);
    adapter.save(tmp);
    std::ofstream(tmp / "fedge_version.txt") << version << "\n";
    fs::remove_all(config.state_dir / name);
    fs::rename(tmp, config.state_dir / name);
  }

  // The latest global as a PEFT directory (written aside, then renamed), so the
  // site can serve it with any PEFT tool and a restarted node starts from it.
  void save_global(const ParamVector& params, std::uint64_t version) { save_adapter(params, version, "global"); }

  void start_training(const TrainCommand& command) {
    if (!global || global_version != command.global_version || global->size() != command.update_length) {
      apply(client->on_training_failed(unix_ms(), "global v" + std::to_string(command.global_version) +
                                                     " is not installed on this node"));
      return;
    }
    const LocalTrainRequest request = local_train_request(command);
    const protocol::RoundPlan* plan = client->current_plan();
    try {
      training_rank = hetlora_training_rank(*global, config.lora_rank, plan != nullptr && plan->secure);
    } catch (const Error& e) {
      spdlog::error("round {}: {}", command.round, e.what());
      apply(client->on_training_failed(unix_ms(), e.what()));
      return;
    }
    spdlog::info("round {}: training {} local steps from global v{}{}", command.round, request.local_steps,
                 command.global_version,
                 training_rank ? fmt::format(" at LoRA rank {} (HetLoRA)", training_rank) : std::string());
    training_steps = request.local_steps;
    // Under shared-a the round starts from the global A with this node's B
    // as it is now (a retried round follows the last training's B); under
    // HetLoRA from the global's first training_rank ranks.
    auto start = global;
    std::shared_ptr<const ParamVector> offset;
    if (is_scaffold_layout(global->layout())) {  // from x, every gradient corrected by c - c_i
      offset = std::make_shared<const ParamVector>(scaffold.gradient_offset(*global));
      start = std::make_shared<const ParamVector>(scaffold_adapter(*global));
    }
    if (shared_a) start = std::make_shared<const ParamVector>(shared_a->node_adapter(*global));
    if (training_rank)
      start = std::make_shared<const ParamVector>(
          global->layout(), keep_rank(lora_layout(global->layout()), global->values(), static_cast<int>(training_rank)));
    worker->submit(TrainJob{command.ticket, request, std::move(start), std::move(offset)});
  }

  void handle(TrainDone& done) {
    // What the node trained (start + update), before the update takes the
    // shape it is sent in.
    ParamVector local(done.start->layout(), done.result.update);
    for (std::size_t i = 0; i < local.size(); ++i) local.values()[i] += done.start->values()[i];
    if (is_scaffold_layout(global->layout())) {
      try {
        done.result.update = scaffold.finish_round(*global, done.result.update, done.result.mean_gradient);
      } catch (const Error& e) {
        TrainFailed failed{done.ticket, e.what()};
        handle(failed);
        return;
      }
    }
    if (shared_a) {
      try {
        done.result.update = shared_a->finish_round(*done.start, done.result.update, global->layout());
      } catch (const Error& e) {
        TrainFailed failed{done.ticket, std::string("shared-a: ") + e.what()};
        handle(failed);
        return;
      }
      // The new B survives a restart; it is served with the next global's A.
      save_adapter(shared_a->node_adapter(*global), global_version, "personal");
    }
    if (training_rank)  // nothing beyond the node's rank, whatever the optimiser did there
      done.result.update = keep_rank(lora_layout(global->layout()), done.result.update, static_cast<int>(training_rank));
    spdlog::info("round {}: local training done, loss {:.4f}, {:.1f} s", done.round, done.result.train_loss,
                 done.result.seconds);
    update_stats([&](NodeStats& st) {
      ++st.rounds_trained;
      st.training_steps += training_steps;
      st.training_seconds += done.result.seconds;
      st.last_train_loss = done.result.train_loss;
    });
    if (config.save_updates) save_update(done);
    if (local_callback && !config.personalization.enabled()) {  // else the local slot serves the personal adapter
      local_callback(local, done.round);
    }
    LocalUpdate update{done.ticket, std::move(done.result.update), done.result.num_examples, done.result.train_loss,
                       training_rank};
    try {
      apply(client->on_update_ready(unix_ms(), std::move(update)));
    } catch (const Error& e) {
      spdlog::warn("round {}: update refused ({}){}; this node drops out of the round", done.round, e.what(),
                   training_rank ? " (a node whose [train] lora_rank is below the global's needs [federation] "
                                   "rank_aggregation = \"hetlora\" on the coordinator)"
                                 : "");
    }
  }

  void save_update(const TrainDone& done) {
    const fs::path dir = config.state_dir / "updates";
    fs::create_directories(dir);
    const ParamVector update(global->layout(), done.result.update);
    update.save(dir / ("round_" + std::to_string(done.round) + ".safetensors"),
                {{"round", std::to_string(done.round)},
                 {"global_version", std::to_string(global_version)},
                 {"num_examples", std::to_string(done.result.num_examples)},
                 {"train_loss", std::to_string(done.result.train_loss)}});
  }

  void handle(TrainFailed& failed) {
    spdlog::warn("local training failed: {}", failed.reason);
    update_stats([](NodeStats& st) { ++st.rounds_failed; });
    apply(client->on_training_failed(unix_ms(), failed.reason));
  }

  void handle(PersonalDone& done) {
    if (!done.params) return;
    save_adapter(*done.params, done.version, "personal");
    spdlog::info("personal adapter ({}) from global v{}: {} steps, train loss {:.4f}", config.personalization.kind,
                 done.version, config.personalization.steps, done.train_loss);
    update_stats([&](NodeStats& st) { st.personal_version = done.version; });
    if (local_callback) local_callback(*done.params, done.version);
  }

  // Ditto's personal adapter survives a restart: the one saved last, if any
  // (returned for the worker). So does shared-a's B (given to shared_a).
  std::shared_ptr<const ParamVector> load_personal() {
    const fs::path dir = config.state_dir / "personal";
    const bool keeps = config.personalization.kind == "ditto" || shared_a;
    if (!keeps || !fs::exists(dir)) return nullptr;
    try {
      auto personal =
          std::make_shared<const ParamVector>(inference::LoraAdapter::load(dir, loaded.model.config()).to_params());
      spdlog::info("personal adapter loaded from {}", dir.string());
      if (shared_a) {
        shared_a->restore(*personal);
        return nullptr;
      }
      return personal;
    } catch (const Error& e) {
      spdlog::warn("personal adapter in {} not used ({}); {} starts again from the next global", dir.string(),
                   e.what(), config.personalization.kind);
      return nullptr;
    }
  }

  void handle(EvalDone& done) {
    if (done.result.tokens == 0) return;
    spdlog::info("global v{}{}: held-out loss {:.4f}, perplexity {:.3f}", done.version,
                 shared_a ? " with this node's B" : "", done.result.loss, done.result.perplexity);
    update_stats([&](NodeStats& st) { st.last_eval_loss = done.result.loss; });
    protocol::Envelope env;
    env.sender = config.node_id;
    env.round = client->current_round();
    env.body = protocol::Metrics{{{"eval_loss", done.result.loss}, {"eval_perplexity", done.result.perplexity}}};
    send(env);
  }

  void receive(const protocol::Bytes& bytes) {
    protocol::Envelope env;
    try {
      protocol::Expectations expect;
      expect.size_caps = federation::node_size_caps(client->current_plan(), global ? global->size() : 0, config.limits);
      env = protocol::decode(bytes, config.limits, expect);
    } catch (const protocol::DecodeError& e) {
      spdlog::warn("refused a message from the coordinator: {}", e.what());
      return;
    }
    apply(client->on_message(unix_ms(), env));
    update_stats([&](NodeStats& st) { st.current_round = client->current_round(); });
  }

  bool done() const {
    return config.exit_after_versions > 0 && first_version &&
           global_version >= *first_version + config.exit_after_versions;
  }
};

NodeRuntime::NodeRuntime(NodeRuntimeConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
NodeRuntime::~NodeRuntime() = default;

void NodeRuntime::on_global_installed(std::function<void(const ParamVector&, std::uint64_t)> callback) {
  impl_->installed_callback = std::move(callback);
}

void NodeRuntime::on_local_trained(std::function<void(const ParamVector&, std::uint64_t)> callback) {
  impl_->local_callback = std::move(callback);
}

const NodeRuntimeConfig& NodeRuntime::config() const { return impl_->config; }

NodeStats NodeRuntime::stats() const {
  std::lock_guard lock(impl_->stats_mutex);
  return impl_->stats;
}
const inference::LoadedModel& NodeRuntime::base() const { return impl_->loaded; }

fs::path NodeRuntime::global_adapter_dir() const {
  return impl_->global ? impl_->config.state_dir / "global" : fs::path();
}

int NodeRuntime::run() {
  Impl& s = *impl_;
  s.apply(s.client->start(unix_ms()));
  while (!stop_.load()) {
    std::int64_t wait = 20;
    if (auto next = s.client->next_tick_ms()) wait = std::clamp<std::int64_t>(*next - unix_ms(), 0, 20);
    if (auto bytes = s.dealer->recv(std::chrono::milliseconds(wait))) s.receive(*bytes);
    for (auto& result : s.worker->take_results()) std::visit([&s](auto& r) { s.handle(r); }, result);
    s.apply(s.client->on_tick(unix_ms()));
    if (s.done() && !s.worker->busy()) {
      spdlog::info("node {}: reached global v{}; exiting", s.config.node_id, s.global_version);
      return 0;
    }
  }
  return 1;
}

}  // namespace fedge::node
