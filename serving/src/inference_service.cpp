#include "fedge/serving/inference_service.h"

#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "fedge/inference/chat_template.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/split_inference.h"
#include "fedge/training/records.h"

namespace fedge::serving {

using inference::KVCache;
using inference::LoraAdapter;
using inference::TokenId;
using clock_type = std::chrono::steady_clock;

namespace {

AdapterNotExposed local_not_exposed() {
  return AdapterNotExposed("adapter",
                           "this node does not serve its local adapter (trained on the site's private data, never "
                           "clipped or noised); the operator can set serve.expose_local_adapter = true in the node "
                           "config to serve it. Ask for 'global' or 'none'");
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

struct Job {
  CompletionRequest request;
  OnToken on_token;
  std::promise<CompletionResult> promise;
  clock_type::time_point queued = clock_type::now();
  std::uint64_t id = 0;
};

// A change to one adapter slot, staged by install/remove and applied by the worker.
struct StagedAdapter {
  std::optional<LoraAdapter> adapter;  // empty: remove
  std::uint64_t version = 0;
};

void check_shape(const inference::ModelConfig& model, const inference::ModelConfig& adapter, AdapterSlot slot) {
  if (adapter.hidden_size != model.hidden_size || adapter.num_layers != model.num_layers ||
      adapter.q_dim() != model.q_dim() || adapter.kv_dim() != model.kv_dim() ||
      adapter.intermediate_size != model.intermediate_size)
    throw Error(ErrorKind::kInvalidInput, std::string("adapter for slot '") + adapter_slot_name(slot) +
                                              "' was made for a model of another shape (hidden " +
                                              std::to_string(adapter.hidden_size) + ", " +
                                              std::to_string(adapter.num_layers) + " layers); the served model has hidden " +
                                              std::to_string(model.hidden_size) + ", " +
                                              std::to_string(model.num_layers) + " layers");
}

}  // namespace

struct InferenceService::Impl {
  std::unique_ptr<inference::Model> owned_model;
  std::unique_ptr<inference::Tokenizer> owned_tokenizer;
  inference::Model* model = nullptr;
  const inference::Tokenizer* tokenizer = nullptr;
  ServiceOptions options;
  std::optional<inference::ChatTemplate> chat;  // the model's chat template, parsed once
  std::string chat_error;                      // why there is none

  void load_chat_template() {
    try {
      chat.emplace(inference::ChatTemplate::for_tokenizer(*tokenizer));
    } catch (const Error& e) {
      chat_error = e.what();
      spdlog::error("serving: the model's chat template cannot be used, chat requests will fail: {}", chat_error);
    }
  }

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::unique_ptr<Job>> queue;
  bool stopping = false;
  std::array<std::optional<StagedAdapter>, 2> staged;          // guarded by mutex
  std::array<AdapterStatus, 2> visible;                        // what callers see; guarded
  std::optional<std::unique_ptr<SplitClient>> staged_split;    // guarded
  bool split_visible = false;                                  // guarded
  ServiceStats stats;                                          // guarded
  std::uint64_t next_id = 1;                                   // guarded

  // Worker-only state.
  std::array<AdapterStatus, 2> applied;
  std::unique_ptr<SplitClient> split;
  std::thread worker;

  void start() { worker = std::thread([this] { loop(); }); }
  void loop();
  void apply(std::array<std::optional<StagedAdapter>, 2> changes,
             std::optional<std::unique_ptr<SplitClient>> split_change);
  void execute(Job& job);
  void take_batch(std::vector<std::unique_ptr<Job>>& jobs);
  void execute_batch(std::vector<std::unique_ptr<Job>>& jobs);
  void finish(Job& job, CompletionResult result, clock_type::time_point started);
  void fail(Job& job, std::exception_ptr error);
  CompletionResult generate(Job& job);
  std::string resolve(AdapterChoice choice, std::uint64_t& version) const;
};

void InferenceService::Impl::loop() {
  // This thread's OpenMP team: the process's setting, or options.threads.
  inference::setup_torch_thread(options.threads);
  for (;;) {
    std::vector<std::unique_ptr<Job>> jobs;
    std::array<std::optional<StagedAdapter>, 2> changes;
    std::optional<std::unique_ptr<SplitClient>> split_change;
    {
      std::unique_lock lock(mutex);
      wake.wait(lock, [&] {
        return stopping || !queue.empty() || staged[0] || staged[1] || staged_split.has_value();
      });
      changes.swap(staged);
      split_change.swap(staged_split);
      if (queue.empty() && stopping) return;
      take_batch(jobs);
    }
    apply(std::move(changes), std::move(split_change));
    if (jobs.size() == 1) execute(*jobs[0]);
    else if (!jobs.empty()) execute_batch(jobs);
  }
}

// The first waiting job plus, up to max_batch, later ones that ask for the
// same adapter (so one model state serves them all). Split requests go alone.
void InferenceService::Impl::take_batch(std::vector<std::unique_ptr<Job>>& jobs) {
  if (queue.empty()) return;
  jobs.push_back(std::move(queue.front()));
  queue.pop_front();
  const bool may_batch = options.max_batch > 1 && !split_visible && !staged_split.has_value() && !split;
  if (!may_batch) return;
  const AdapterChoice choice = jobs[0]->request.adapter;
  for (auto it = queue.begin(); it != queue.end() && int(jobs.size()) < options.max_batch;) {
    if ((*it)->request.adapter == choice) {
      jobs.push_back(std::move(*it));
      it = queue.erase(it);
    } else {
      ++it;
    }
  }
}

void InferenceService::Impl::apply(std::array<std::optional<StagedAdapter>, 2> changes,
                                   std::optional<std::unique_ptr<SplitClient>> split_change) {
  for (int s = 0; s < 2; ++s) {
    if (!changes[s]) continue;
    const std::string name = adapter_slot_name(AdapterSlot(s));
    if (applied[s].installed) model->remove_adapter(name);
    applied[s] = {};
    if (changes[s]->adapter) {
      model->add_adapter(name, std::move(*changes[s]->adapter));
      applied[s] = {true, changes[s]->version};
      spdlog::info("serving: adapter '{}' version {} installed", name, changes[s]->version);
    }
  }
  if (split_change) split = std::move(*split_change);
}

std::string InferenceService::Impl::resolve(AdapterChoice choice, std::uint64_t& version) const {
  auto use = [&](AdapterSlot slot) -> std::string {
    const AdapterStatus& s = applied[int(slot)];
    if (!s.installed)
      throw InvalidRequest("adapter", std::string("adapter '") + adapter_slot_name(slot) +
                                          "' is not installed on this node; ask for another or 'none'");
    version = s.version;
    return adapter_slot_name(slot);
  };
  version = 0;
  switch (choice) {
    case AdapterChoice::kGlobal: return use(AdapterSlot::kGlobal);
    case AdapterChoice::kLocal:
      if (!options.expose_local_adapter) throw local_not_exposed();
      return use(AdapterSlot::kLocal);
    case AdapterChoice::kNone: return "";
    case AdapterChoice::kDefault:
      if (applied[0].installed) return use(AdapterSlot::kGlobal);
      if (applied[1].installed && options.expose_local_adapter) return use(AdapterSlot::kLocal);
      return "";
  }
  return "";
}

void InferenceService::Impl::finish(Job& job, CompletionResult result, clock_type::time_point started) {
  result.queue_seconds = std::chrono::duration<double>(started - job.queued).count();
  result.run_seconds = seconds_since(started);
  {
    std::lock_guard lock(mutex);
    ++stats.completed;
    if (result.split || result.fell_back_to_local) ++stats.split_requests;
    if (result.fell_back_to_local) ++stats.fallbacks;
  }
  job.promise.set_value(std::move(result));
}

void InferenceService::Impl::fail(Job& job, std::exception_ptr error) {
  {
    std::lock_guard lock(mutex);
    ++stats.failed;
  }
  job.promise.set_exception(std::move(error));
}

void InferenceService::Impl::execute(Job& job) {
  const auto started = clock_type::now();
  try {
    CompletionResult result = generate(job);
    finish(job, std::move(result), started);
  } catch (...) {
    fail(job, std::current_exception());
  }
}

namespace {

// One request's state inside a batch.
struct Row {
  Row(Job& j, const inference::Tokenizer& tokenizer) : job(&j), decoder(tokenizer) {}
  Job* job;
  CompletionResult result;
  std::vector<TokenId> history;
  int max_new = 0;
  inference::SamplingOptions sampling;
  std::mt19937_64 rng;
  inference::StreamingDecoder decoder;
  bool done = false;
};

}  // namespace

// Several requests decoded together: prompts padded on the left, one forward
// pass per step for all rows (as inference::generate batches), each row with
// its own sampling options and random stream, so every row gets the tokens it
// would get alone. A row's answer goes out as soon as that row finishes.
// Tokens a request may hold (prompt + answer): the model's context, or less
// where ServiceOptions::context caps it (a smaller KV cache).
static int serving_context(const inference::ModelConfig& c, const ServiceOptions& options) {
  return options.context > 0 ? std::min(options.context, c.context_length()) : c.context_length();
}

void InferenceService::Impl::execute_batch(std::vector<std::unique_ptr<Job>>& jobs) {
  const auto started = clock_type::now();
  const inference::ModelConfig& c = model->config();
  const int context = serving_context(c, options);
  std::vector<std::unique_ptr<Row>> rows;
  std::string adapter;
  std::uint64_t version = 0;
  try {
    adapter = resolve(jobs[0]->request.adapter, version);  // the same choice for every job here
  } catch (...) {
    for (auto& j : jobs) fail(*j, std::current_exception());
    return;
  }
  for (auto& j : jobs) {
    try {
      auto row = std::make_unique<Row>(*j, *tokenizer);
      row->history = tokenizer->encode(j->request.prompt, true);
      const int len = int(row->history.size());
      if (len == 0) throw InvalidRequest("prompt", "the prompt encodes to no tokens");
      if (len + 1 > context)
        throw InvalidRequest("prompt", "the prompt's " + std::to_string(len) +
                                           " tokens leave no room in the serving context of " +
                                           std::to_string(context) + " tokens; shorten it");
      row->max_new = std::min(j->request.max_tokens, context - len);
      row->sampling.max_tokens = j->request.max_tokens;
      row->sampling.temperature = j->request.temperature;
      row->sampling.top_p = j->request.top_p;
      row->rng.seed(j->request.seed);
      row->result.prompt_tokens = len;
      row->result.adapter = adapter.empty() ? "none" : adapter;
      row->result.adapter_version = version;
      rows.push_back(std::move(row));
    } catch (...) {
      fail(*j, std::current_exception());
    }
  }
  if (rows.empty()) return;
  {
    std::lock_guard lock(mutex);
    ++stats.batches;
  }
  try {
    model->set_active_adapter(adapter);
    std::set<TokenId> stops(c.eos_token_ids.begin(), c.eos_token_ids.end());
    for (TokenId e : tokenizer->eos_ids()) stops.insert(e);
    const int B = int(rows.size());
    int longest = 0, most_new = 0;
    for (auto& r : rows) {
      longest = std::max(longest, int(r->history.size()));
      most_new = std::max(most_new, r->max_new);
    }
    KVCache cache = model->make_cache(B, longest + most_new);
    std::vector<TokenId> tokens(std::size_t(B) * longest, 0);
    std::vector<std::uint8_t> mask(tokens.size(), 0);
    for (int b = 0; b < B; ++b) {
      const auto& h = rows[b]->history;
      const std::size_t pad = std::size_t(longest) - h.size();
      std::copy(h.begin(), h.end(), tokens.begin() + std::size_t(b) * longest + pad);
      std::fill_n(mask.begin() + std::size_t(b) * longest + pad, h.size(), 1);
    }
    std::vector<float> logits = model->forward(tokens, mask, B, longest, cache);
    std::vector<TokenId> next(B, 0);
    std::vector<std::uint8_t> step_mask(B, 0);
    const int V = c.vocab_size;
    int live = B;
    auto close = [&](Row& r, const char* reason) {
      r.done = true;
      --live;
      r.result.finish_reason = reason;
      const std::string rest = r.decoder.flush();
      if (!rest.empty()) {
        r.result.text += rest;
        if (r.job->on_token) r.job->on_token(-1, rest);
      }
      r.result.completion_tokens = int(r.result.tokens.size());
      finish(*r.job, std::move(r.result), started);
    };
    while (live > 0) {
      for (int b = 0; b < B; ++b) {
        step_mask[b] = 0;
        Row& r = *rows[b];
        if (r.done) continue;
        std::vector<float> row_logits(logits.begin() + std::size_t(b) * V, logits.begin() + std::size_t(b + 1) * V);
        const TokenId id = inference::sample_token(std::move(row_logits), r.history, r.sampling, r.rng);
        if (stops.count(id)) { close(r, "stop"); continue; }
        r.result.tokens.push_back(id);
        r.history.push_back(id);
        const std::string piece = r.decoder.push(id);
        r.result.text += piece;
        if (r.job->on_token && !r.job->on_token(id, piece)) { close(r, "stop"); continue; }
        if (int(r.result.tokens.size()) >= r.max_new) { close(r, "length"); continue; }
        next[b] = id;
        step_mask[b] = 1;
      }
      if (live == 0) break;
      logits = model->forward(next, step_mask, B, 1, cache);
    }
  } catch (...) {
    for (auto& r : rows)
      if (!r->done) fail(*r->job, std::current_exception());
  }
}

CompletionResult InferenceService::Impl::generate(Job& job) {
  const CompletionRequest& req = job.request;
  const inference::ModelConfig& c = model->config();
  CompletionResult r;
  std::vector<TokenId> history = tokenizer->encode(req.prompt, /*add_bos=*/true);
  if (history.empty()) throw InvalidRequest("prompt", "the prompt encodes to no tokens");
  const int prompt_len = int(history.size());
  const int context = serving_context(c, options);
  if (prompt_len + 1 > context)
    throw InvalidRequest("prompt", "the prompt's " + std::to_string(prompt_len) +
                                       " tokens leave no room in the serving context of " + std::to_string(context) +
                                       " tokens; shorten it");
  r.prompt_tokens = prompt_len;
  const int max_new = std::min(req.max_tokens, context - prompt_len);
  const std::string adapter = resolve(req.adapter, r.adapter_version);
  model->set_active_adapter(adapter);
  r.adapter = adapter.empty() ? "none" : adapter;

  inference::SamplingOptions sampling;
  sampling.max_tokens = req.max_tokens;
  sampling.temperature = req.temperature;
  sampling.top_p = req.top_p;
  sampling.seed = req.seed;
  std::mt19937_64 rng(req.seed);
  std::set<TokenId> stops(c.eos_token_ids.begin(), c.eos_token_ids.end());
  for (TokenId e : tokenizer->eos_ids()) stops.insert(e);

  const int capacity = prompt_len + max_new;
  std::optional<KVCache> cache;
  std::vector<float> logits;
  auto run_local_from_history = [&] {
    cache.emplace(model->make_cache(1, capacity));
    logits = model->forward(history, {}, 1, int(history.size()), *cache);
  };
  bool splitting = false;
  auto fall_back = [&](const SplitFailure& e) {
    spdlog::warn("serving: split peer failed ({}); finishing request {} locally", e.what(), job.id);
    split->end();
    splitting = false;
    r.fell_back_to_local = true;
    r.note = std::string("split peer failed: ") + e.what() + "; recomputed from the prompt locally";
    run_local_from_history();
  };
  if (split && adapter.empty()) {
    if (split->peer_available()) {
      splitting = true;
      try {
        split->begin(job.id, capacity);
        logits = split->step(history);
        r.split = true;
      } catch (const SplitFailure& e) {
        fall_back(e);
      }
    } else {
      r.fell_back_to_local = true;
      r.note = "split peer benched after a recent failure; ran locally";
    }
  } else if (split) {
    r.note = "split inference serves the base model only; ran locally with adapter '" + adapter + "'";
  }
  if (!splitting && !cache) run_local_from_history();

  inference::StreamingDecoder decoder(*tokenizer);
  for (;;) {
    const TokenId id = inference::sample_token(std::move(logits), history, sampling, rng);
    if (stops.count(id)) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(id);
    history.push_back(id);
    const std::string piece = decoder.push(id);
    r.text += piece;
    if (job.on_token && !job.on_token(id, piece)) {
      r.finish_reason = "stop";
      break;
    }
    if (int(r.tokens.size()) >= max_new) {
      r.finish_reason = "length";
      break;
    }
    if (splitting) {
      try {
        logits = split->step(std::span<const TokenId>(&id, 1));
      } catch (const SplitFailure& e) {
        fall_back(e);
      }
    } else {
      logits = model->forward(std::span<const TokenId>(&id, 1), {}, 1, 1, *cache);
    }
  }
  if (splitting) split->end();
  const std::string rest = decoder.flush();
  if (!rest.empty()) {
    r.text += rest;
    if (job.on_token) job.on_token(-1, rest);
  }
  r.completion_tokens = int(r.tokens.size());
  return r;
}

// ---------------- public API ----------------

InferenceService::InferenceService(inference::Model& model, const inference::Tokenizer& tokenizer,
                                   ServiceOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->model = &model;
  impl_->tokenizer = &tokenizer;
  impl_->options = std::move(options);
  impl_->load_chat_template();
  impl_->start();
}

InferenceService::InferenceService(std::unique_ptr<inference::Model> model,
                                   std::unique_ptr<inference::Tokenizer> tokenizer, ServiceOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (!model || !tokenizer) throw Error(ErrorKind::kInvalidInput, "InferenceService needs a model and a tokenizer");
  impl_->owned_model = std::move(model);
  impl_->owned_tokenizer = std::move(tokenizer);
  impl_->model = impl_->owned_model.get();
  impl_->tokenizer = impl_->owned_tokenizer.get();
  impl_->options = std::move(options);
  impl_->load_chat_template();
  impl_->start();
}

InferenceService::~InferenceService() { stop(); }

void InferenceService::stop() {
  std::deque<std::unique_ptr<Job>> dropped;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    dropped.swap(impl_->queue);
  }
  impl_->wake.notify_all();
  for (auto& job : dropped)
    job->promise.set_exception(std::make_exception_ptr(Error(ErrorKind::kRuntime, "inference service stopped")));
  if (impl_->worker.joinable()) impl_->worker.join();
}

std::future<CompletionResult> InferenceService::submit(CompletionRequest request, OnToken on_token) {
  const ServiceOptions& o = impl_->options;
  if (request.max_tokens < 1 || request.max_tokens > o.max_tokens_limit)
    throw InvalidRequest("max_tokens", std::to_string(request.max_tokens) + " is outside 1.." +
                                           std::to_string(o.max_tokens_limit));
  if (!std::isfinite(request.temperature) || request.temperature < 0 || request.temperature > 100)
    throw InvalidRequest("temperature", "must be a number in 0..100");
  if (!std::isfinite(request.top_p) || !(request.top_p > 0 && request.top_p <= 1))
    throw InvalidRequest("top_p", "must be a number in (0, 1]");
  auto job = std::make_unique<Job>();
  job->request = std::move(request);
  job->on_token = std::move(on_token);
  auto future = job->promise.get_future();
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) throw Error(ErrorKind::kRuntime, "inference service is stopped");
    const AdapterChoice a = job->request.adapter;
    // Refused before the installed check, so a caller cannot learn whether
    // the site has a local adapter.
    if (a == AdapterChoice::kLocal && !o.expose_local_adapter) throw local_not_exposed();
    if ((a == AdapterChoice::kGlobal || a == AdapterChoice::kLocal) &&
        !impl_->visible[a == AdapterChoice::kGlobal ? 0 : 1].installed)
      throw InvalidRequest("adapter", std::string("adapter '") + adapter_choice_name(a) +
                                          "' is not installed on this node; ask for another or 'none'");
    if (impl_->queue.size() >= o.max_queue) {
      ++impl_->stats.rejected;
      throw ServiceOverloaded("the inference queue is full (" + std::to_string(o.max_queue) +
                              " requests waiting); retry later");
    }
    job->id = impl_->next_id++;
    impl_->queue.push_back(std::move(job));
  }
  impl_->wake.notify_one();
  return future;
}

CompletionResult InferenceService::complete(CompletionRequest request, OnToken on_token) {
  return submit(std::move(request), std::move(on_token)).get();
}

void InferenceService::install_adapter(AdapterSlot slot, inference::LoraAdapter adapter, std::uint64_t version) {
  check_shape(impl_->model->config(), adapter.model_config(), slot);
  // A deep copy: the caller (a trainer) may keep updating its tensors in place.
  StagedAdapter staged{adapter.clone(), version};
  {
    std::lock_guard lock(impl_->mutex);
    impl_->staged[int(slot)] = std::move(staged);
    impl_->visible[int(slot)] = {true, version};
  }
  impl_->wake.notify_one();
}

void InferenceService::install_adapter(AdapterSlot slot, const ParamVector& params,
                                       const inference::LoraConfig& config, std::uint64_t version) {
  config.validate(std::string("LoRA config for adapter slot '") + adapter_slot_name(slot) + "'");
  auto adapter = LoraAdapter::create(impl_->model->config(), config, 0);
  adapter.from_params(params.remapped(adapter.layout()));  // by tensor name: any layout order
  install_adapter(slot, std::move(adapter), version);
}

void InferenceService::remove_adapter(AdapterSlot slot) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->staged[int(slot)] = StagedAdapter{};
    impl_->visible[int(slot)] = {};
  }
  impl_->wake.notify_one();
}

AdapterStatus InferenceService::adapter_status(AdapterSlot slot) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->visible[int(slot)];
}

void InferenceService::set_split_client(std::unique_ptr<SplitClient> client) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->split_visible = client != nullptr;
    impl_->staged_split = std::move(client);
  }
  impl_->wake.notify_one();
}

bool InferenceService::has_split_client() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->split_visible;
}

std::string InferenceService::render_chat(const std::vector<training::ChatMessage>& messages) const {
  if (!impl_->chat) throw Error(ErrorKind::kRuntime, "the model's chat template cannot be used: " + impl_->chat_error);
  return impl_->chat->render(messages, /*add_generation_prompt=*/true);
}

const std::string& InferenceService::model_name() const { return impl_->options.model_name; }
const ServiceOptions& InferenceService::options() const { return impl_->options; }
const inference::ModelConfig& InferenceService::model_config() const { return impl_->model->config(); }
const inference::Tokenizer& InferenceService::tokenizer() const { return *impl_->tokenizer; }

ServiceStats InferenceService::stats() const {
  std::lock_guard lock(impl_->mutex);
  ServiceStats s = impl_->stats;
  s.queued = impl_->queue.size();
  return s;
}

}  // namespace fedge::serving
