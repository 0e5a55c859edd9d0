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
#include <unordered_map>

#include "fedge/inference/chat_template.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/sampling.h"
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
  // An /v1/embeddings job instead (runs alone): the texts, and its answer.
  std::optional<std::vector<std::string>> embed_inputs;
  std::promise<EmbeddingResult> embed_promise;
  clock_type::time_point queued = clock_type::now();
  std::uint64_t id = 0;
};

// A change to one adapter slot, staged by install/remove and applied by the worker.
struct StagedAdapter {
  std::optional<LoraAdapter> adapter;  // empty: remove
  std::uint64_t version = 0;
};

// Tokens a request may hold (prompt + answer): the model's context, or less
// where ServiceOptions::context caps it (a smaller KV cache).
int serving_context(const inference::ModelConfig& c, const ServiceOptions& options) {
  return options.context > 0 ? std::min(options.context, c.context_length()) : c.context_length();
}

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

namespace {

std::set<TokenId> end_tokens(const inference::ModelConfig& c, const inference::Tokenizer& tokenizer) {
  std::set<TokenId> stops(c.eos_token_ids.begin(), c.eos_token_ids.end());
  for (TokenId e : tokenizer.eos_ids()) stops.insert(e);
  return stops;
}

// One answer as it is generated: the request's sampling (with the penalties
// and min_p applied to the logits first), its random stream, the decoded text
// cut at stop strings, and log-probabilities. generate() and execute_batch()
// run every token through it, so a request gets the same answer either way.
class Decoding {
 public:
  Decoding(const CompletionRequest& request, const inference::Tokenizer& tokenizer, std::set<TokenId> end)
      : request_(request), decoder_(tokenizer), stop_(request.stop), end_(std::move(end)), rng_(request.seed) {
    sampling_.max_tokens = request.max_tokens;
    sampling_.temperature = request.temperature;
    sampling_.top_p = request.top_p;
    sampling_.top_k = request.top_k;
    sampling_.seed = request.seed;
  }

  // The next token from one row of logits. Log-probabilities come from the
  // logits as the model gave them, before penalties, min_p and temperature.
  TokenId pick(std::vector<float> logits, const std::vector<TokenId>& history) {
    std::vector<float> raw;
    if (request_.logprobs >= 0) raw = logits;
    apply_penalties(logits, counts_, request_.presence_penalty, request_.frequency_penalty);
    apply_min_p(logits, request_.min_p);
    const TokenId id = inference::sample_token(std::move(logits), history, sampling_, rng_);
    if (request_.logprobs >= 0) pending_ = logprobs_of(raw, id, request_.logprobs);
    return id;
  }

  // Takes the picked token; the finish reason when the answer ends with it,
  // else nullptr. on_token gets the text that may be shown now.
  const char* accept(TokenId id, const OnToken& on_token, int max_new, CompletionResult& r) {
    if (end_.count(id)) return "stop";
    r.tokens.push_back(id);
    ++counts_[id];
    if (pending_) {
      r.logprobs.push_back(std::move(*pending_));
      r.text_offsets.push_back(decoded_);
      pending_.reset();
    }
    const std::string piece = decoder_.push(id);
    decoded_ += piece.size();
    const std::string shown = stop_.push(piece);
    r.text += shown;
    if (on_token && !on_token(id, shown)) return "stop";
    if (stop_.stopped()) return "stop";
    if (int(r.tokens.size()) >= max_new) return "length";
    return nullptr;
  }

  // The text still held back (partial UTF-8, a tail that might have become a
  // stop string) goes out; after a stop string, log-probabilities keep only
  // the tokens whose text starts before it.
  void close(const OnToken& on_token, CompletionResult& r) {
    if (!stop_.stopped()) {
      std::string rest = stop_.push(decoder_.flush());
      if (!stop_.stopped()) rest += stop_.finish();
      if (!rest.empty()) {
        r.text += rest;
        if (on_token) on_token(-1, rest);
      }
    }
    if (stop_.stopped()) {
      std::size_t keep = 0;
      while (keep < r.text_offsets.size() && r.text_offsets[keep] < stop_.released()) ++keep;
      r.logprobs.resize(keep);
      r.text_offsets.resize(keep);
    }
    r.completion_tokens = int(r.tokens.size());
  }

 private:
  const CompletionRequest& request_;
  inference::SamplingOptions sampling_;
  inference::StreamingDecoder decoder_;
  StopFilter stop_;
  std::set<TokenId> end_;
  std::unordered_map<std::int32_t, int> counts_;  // generated tokens, for the penalties
  std::optional<LogprobEntry> pending_;
  std::size_t decoded_ = 0;  // bytes the decoder gave out so far
  std::mt19937_64 rng_;
};

// One request's state inside a run.
struct Row {
  Row(std::unique_ptr<Job> j, const inference::Tokenizer& tokenizer, std::set<TokenId> end)
      : job(std::move(j)), decoding(job->request, tokenizer, std::move(end)) {}
  std::unique_ptr<Job> job;
  Decoding decoding;
  CompletionResult result;
  std::vector<TokenId> history;  // prompt and answer so far
  std::vector<TokenId> feed;     // the next pass's input: the prompt, then the last token
  int max_new = 0;
  int slot = 0;                  // KV cache row
  clock_type::time_point started = clock_type::now();
};

}  // namespace

namespace {

// The continuous batch now decoding: requests with one adapter choice, one
// KV cache row each (up to max_batch). A request joins at the next step and
// leaves as soon as it finishes, its row free for the next one.
struct Run {
  bool active = false;
  AdapterChoice choice = AdapterChoice::kDefault;
  std::string adapter;  // resolved slot name, "" for none
  std::uint64_t version = 0;
  std::vector<std::unique_ptr<Row>> rows;  // index = KV cache row; null = free
  std::optional<KVCache> cache;
  int passed_over = 0;   // admissions that went past an older request of another choice
  bool counted = false;  // in stats.batches already
  int live() const;
};
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
  void execute_embedding(Job& job);
  std::vector<float> embedding(const std::string& input, int& tokens);
  void enqueue(std::vector<std::unique_ptr<Job>> jobs);
  // Continuous batching (see Run below).
  std::unique_ptr<Job> start_run(std::vector<std::unique_ptr<Job>>& joining);
  void admit_waiting(std::vector<std::unique_ptr<Job>>& joining);
  void join(std::vector<std::unique_ptr<Job>> joining);
  void step();
  void decode_pass(const std::vector<Row*>& rows);
  void close_row(Row& row, const char* reason);
  void end_run(std::exception_ptr error);
  Run run;  // worker-only
  void finish(Job& job, CompletionResult result, clock_type::time_point started);
  void fail(Job& job, std::exception_ptr error);
  CompletionResult generate(Job& job);
  std::string resolve(AdapterChoice choice, std::uint64_t& version) const;
};

void InferenceService::Impl::loop() {
  // This thread's OpenMP team: the process's setting, or options.threads.
  inference::setup_torch_thread(options.threads);
  for (;;) {
    std::vector<std::unique_ptr<Job>> joining;
    std::unique_ptr<Job> alone;  // an embedding, or a request for the split path
    std::array<std::optional<StagedAdapter>, 2> changes;
    std::optional<std::unique_ptr<SplitClient>> split_change;
    {
      std::unique_lock lock(mutex);
      if (run.active) {
        admit_waiting(joining);  // no wait: the run goes on
      } else {
        wake.wait(lock, [&] {
          return stopping || !queue.empty() || staged[0] || staged[1] || staged_split.has_value();
        });
        // Between runs: the only place adapters and the split client change.
        changes.swap(staged);
        split_change.swap(staged_split);
        if (queue.empty() && stopping) return;
        alone = start_run(joining);
      }
    }
    if (!run.active) apply(std::move(changes), std::move(split_change));
    if (alone && alone->embed_inputs) execute_embedding(*alone);
    else if (alone) execute(*alone);
    if (!joining.empty()) join(std::move(joining));
    if (run.active) step();
  }
}

// Called with the lock held and no run active. An embedding, or any request
// while a split client is attached, runs alone (returned); otherwise the
// oldest request starts a run with its adapter choice, and later ones with
// the same choice join it.
std::unique_ptr<Job> InferenceService::Impl::start_run(std::vector<std::unique_ptr<Job>>& joining) {
  if (queue.empty()) return nullptr;
  if (queue.front()->embed_inputs || split_visible || split) {
    auto job = std::move(queue.front());
    queue.pop_front();
    return job;
  }
  run.choice = queue.front()->request.adapter;
  admit_waiting(joining);
  return nullptr;
}

// Called with the lock held: moves waiting requests with the run's adapter
// choice into `joining`, oldest first, while rows are free. Fairness: a run
// may go past an older waiting request of another choice (or an embedding)
// at most max_batch times; after that it takes no one, finishes its rows,
// and the next run starts with that request. A staged adapter or split
// client also stops admissions, so it applies as soon as the rows finish and
// a request submitted after install_adapter() returns sees it.
void InferenceService::Impl::admit_waiting(std::vector<std::unique_ptr<Job>>& joining) {
  if (staged[0] || staged[1] || staged_split.has_value() || split_visible) return;
  if (run.active && !options.continuous_batching) return;  // static batching: no one joins a running batch
  const int slots = std::max(options.max_batch, 1);
  int free = slots - run.live();
  bool passed = false;
  for (auto it = queue.begin(); it != queue.end() && free > 0;) {
    const Job& job = **it;
    if (job.embed_inputs || job.request.adapter != run.choice) {
      passed = true;
      ++it;
      continue;
    }
    if (passed) {
      if (run.passed_over >= slots) break;
      ++run.passed_over;
    }
    joining.push_back(std::move(*it));
    it = queue.erase(it);
    --free;
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
    stats.prompt_tokens += static_cast<std::uint64_t>(std::max(0, result.prompt_tokens));
    stats.completion_tokens += static_cast<std::uint64_t>(std::max(0, result.completion_tokens));
    stats.queue_seconds += result.queue_seconds;
    stats.run_seconds += result.run_seconds;
    if (result.run_seconds > 0) stats.last_tokens_per_second = result.completion_tokens / result.run_seconds;
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

// The mean over the input's tokens (BOS included) of the last hidden state
// (after the final norm, as Hugging Face's last_hidden_state), L2-normalised.
std::vector<float> InferenceService::Impl::embedding(const std::string& input, int& tokens) {
  const inference::ModelConfig& c = model->config();
  const std::vector<TokenId> ids = tokenizer->encode(input, /*add_bos=*/true);
  const int T = int(ids.size()), H = c.hidden_size;
  const int context = serving_context(c, options);
  if (T == 0) throw InvalidRequest("input", "an input encodes to no tokens");
  if (T > context)
    throw InvalidRequest("input", "an input of " + std::to_string(T) + " tokens is longer than the serving context of " +
                                      std::to_string(context) + " tokens; shorten it");
  tokens += T;
  KVCache cache = model->make_cache(1, T);
  std::vector<float> hidden = model->embed(ids);
  model->forward_layers(hidden, {}, 1, T, 0, c.num_layers, cache);
  const at::Tensor norm = model->final_norm().to(at::kFloat).contiguous();
  const float* w = norm.data_ptr<float>();
  std::vector<double> sum(std::size_t(H), 0.0);
  for (int t = 0; t < T; ++t) {
    const float* x = hidden.data() + std::size_t(t) * H;
    double ms = 0;
    for (int h = 0; h < H; ++h) ms += double(x[h]) * x[h];
    const double scale = 1.0 / std::sqrt(ms / H + c.rms_norm_eps);
    for (int h = 0; h < H; ++h) sum[std::size_t(h)] += x[h] * scale * w[h];
  }
  double length = 0;
  for (double v : sum) length += (v / T) * (v / T);
  length = std::sqrt(length);
  std::vector<float> out(static_cast<std::size_t>(H));
  for (int h = 0; h < H; ++h) out[std::size_t(h)] = float(length > 0 ? sum[std::size_t(h)] / T / length : 0.0);
  return out;
}

void InferenceService::Impl::execute_embedding(Job& job) {
  const auto started = clock_type::now();
  try {
    EmbeddingResult r;
    const std::string adapter = resolve(job.request.adapter, r.adapter_version);
    model->set_active_adapter(adapter);
    r.adapter = adapter.empty() ? "none" : adapter;
    for (const auto& input : *job.embed_inputs) r.vectors.push_back(embedding(input, r.prompt_tokens));
    {
      std::lock_guard lock(mutex);
      ++stats.completed;
    }
    r.run_seconds = seconds_since(started);
    job.embed_promise.set_value(std::move(r));
  } catch (...) {
    {
      std::lock_guard lock(mutex);
      ++stats.failed;
    }
    job.embed_promise.set_exception(std::current_exception());
  }
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


int Run::live() const {
  int n = 0;
  for (const auto& r : rows) n += r != nullptr;
  return n;
}

// Requests decoded together (continuous batching): every row has its own KV
// cache row, position, sampling options and random stream, so each gets the
// tokens it would get alone. Each pass is one Model::forward_rows (ragged, no
// padding): rows that joined since the last pass prefill their prompts while
// the others decode one token each. A row's answer goes out as soon as that
// row finishes, and its cache row is free for the next request.

// New requests take free rows of the run (starting it: the adapter resolves
// and is activated). A request that cannot run (prompt too long, adapter
// gone) fails alone; the others go on.
void InferenceService::Impl::join(std::vector<std::unique_ptr<Job>> joining) {
  const inference::ModelConfig& c = model->config();
  const int context = serving_context(c, options);
  if (!run.active) {
    try {
      run.adapter = resolve(run.choice, run.version);
      model->set_active_adapter(run.adapter);
    } catch (...) {
      for (auto& j : joining) fail(*j, std::current_exception());
      run = Run{};
      return;
    }
    run.active = true;
  }
  for (auto& j : joining) {
    try {
      std::vector<TokenId> prompt = tokenizer->encode(j->request.prompt, true);
      const int len = int(prompt.size());
      if (len == 0) throw InvalidRequest("prompt", "the prompt encodes to no tokens");
      if (len + 1 > context)
        throw InvalidRequest("prompt", "the prompt's " + std::to_string(len) +
                                           " tokens leave no room in the serving context of " +
                                           std::to_string(context) + " tokens; shorten it");
      const int max_new = std::min(j->request.max_tokens, context - len);
      int slot = 0;
      while (slot < int(run.rows.size()) && run.rows[std::size_t(slot)]) ++slot;
      if (!run.cache) run.cache.emplace(model->make_cache(slot + 1, len + max_new));
      else run.cache->grow(slot + 1, len + max_new);
      run.cache->reset_row(slot);
      auto row = std::make_unique<Row>(std::move(j), *tokenizer, end_tokens(c, *tokenizer));
      row->history = std::move(prompt);
      row->feed = row->history;
      row->max_new = max_new;
      row->slot = slot;
      row->result.prompt_tokens = len;
      row->result.adapter = run.adapter.empty() ? "none" : run.adapter;
      row->result.adapter_version = run.version;
      if (slot == int(run.rows.size())) run.rows.push_back(std::move(row));
      else run.rows[std::size_t(slot)] = std::move(row);
    } catch (...) {
      if (j) fail(*j, std::current_exception());  // still ours: nothing after the Row's creation throws
    }
  }
  if (run.live() == 0) run = Run{};
}

// One pass over every row: the rows that just joined prefill their prompts
// while the others decode their next token, so a request joining costs the
// running rows no pass of their own (the weights are read once for both).
void InferenceService::Impl::step() {
  std::vector<Row*> rows;
  for (auto& r : run.rows)
    if (r) rows.push_back(r.get());
  if (rows.size() > 1 && !run.counted) {
    run.counted = true;
    std::lock_guard lock(mutex);
    ++stats.batches;
  }
  try {
    decode_pass(rows);
  } catch (...) {
    end_run(std::current_exception());
    return;
  }
  if (run.live() == 0) end_run(nullptr);
}

void InferenceService::Impl::decode_pass(const std::vector<Row*>& rows) {
  std::vector<inference::RowTokens> input;
  for (Row* r : rows) input.push_back({r->slot, r->feed});
  const std::vector<float> logits = model->forward_rows(input, *run.cache);
  const std::size_t V = std::size_t(model->config().vocab_size);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    Row& r = *rows[i];
    std::vector<float> row_logits(logits.begin() + i * V, logits.begin() + (i + 1) * V);
    const TokenId id = r.decoding.pick(std::move(row_logits), r.history);
    if (const char* reason = r.decoding.accept(id, r.job->on_token, r.max_new, r.result)) {
      close_row(r, reason);
      continue;
    }
    r.history.push_back(id);
    r.feed.assign(1, id);
  }
}

// The row's answer goes out and its cache row is free at once.
void InferenceService::Impl::close_row(Row& row, const char* reason) {
  row.result.finish_reason = reason;
  row.decoding.close(row.job->on_token, row.result);
  finish(*row.job, std::move(row.result), row.started);
  run.rows[std::size_t(row.slot)].reset();
}

// The run is over (all rows done, or a pass failed: its rows fail with the error).
void InferenceService::Impl::end_run(std::exception_ptr error) {
  if (error)
    for (auto& r : run.rows)
      if (r) fail(*r->job, error);
  run = Run{};
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

  Decoding decoding(req, *tokenizer, end_tokens(c, *tokenizer));

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

  for (;;) {
    const TokenId id = decoding.pick(std::move(logits), history);
    if (const char* reason = decoding.accept(id, job.on_token, max_new, r)) {
      r.finish_reason = reason;
      break;
    }
    history.push_back(id);
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
  decoding.close(job.on_token, r);
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
  for (auto& job : dropped) {
    auto error = std::make_exception_ptr(Error(ErrorKind::kRuntime, "inference service stopped"));
    if (job->embed_inputs) job->embed_promise.set_exception(error);
    else job->promise.set_exception(error);
  }
  if (impl_->worker.joinable()) impl_->worker.join();
}

namespace {

void check_request(const CompletionRequest& request, const ServiceOptions& o) {
  if (request.max_tokens < 1 || request.max_tokens > o.max_tokens_limit)
    throw InvalidRequest("max_tokens", std::to_string(request.max_tokens) + " is outside 1.." +
                                           std::to_string(o.max_tokens_limit));
  if (!std::isfinite(request.temperature) || request.temperature < 0 || request.temperature > 100)
    throw InvalidRequest("temperature", "must be a number in 0..100");
  if (!std::isfinite(request.top_p) || !(request.top_p > 0 && request.top_p <= 1))
    throw InvalidRequest("top_p", "must be a number in (0, 1]");
  if (request.top_k < 0) throw InvalidRequest("top_k", "must be >= 0 (0: off)");
  if (!(request.min_p >= 0 && request.min_p <= 1)) throw InvalidRequest("min_p", "must be a number in 0..1");
  if (!(std::abs(request.presence_penalty) <= 2)) throw InvalidRequest("presence_penalty", "must be in -2..2");
  if (!(std::abs(request.frequency_penalty) <= 2)) throw InvalidRequest("frequency_penalty", "must be in -2..2");
  if (request.logprobs > kMaxTopLogprobs)
    throw InvalidRequest("logprobs", "at most " + std::to_string(kMaxTopLogprobs) + " alternatives per token");
  if (request.stop.size() > std::size_t(kMaxStopStrings))
    throw InvalidRequest("stop", "at most " + std::to_string(kMaxStopStrings) + " stop strings");
  for (const auto& s : request.stop)
    if (s.empty() || s.size() > kMaxStopBytes)
      throw InvalidRequest("stop", "each stop string must have 1.." + std::to_string(kMaxStopBytes) + " bytes");
}

}  // namespace

// Queues all the jobs or none: a full queue refuses the whole request.
void InferenceService::Impl::enqueue(std::vector<std::unique_ptr<Job>> jobs) {
  {
    std::lock_guard lock(mutex);
    if (stopping) throw Error(ErrorKind::kRuntime, "inference service is stopped");
    const AdapterChoice a = jobs.front()->request.adapter;
    // Refused before the installed check, so a caller cannot learn whether
    // the site has a local adapter.
    if (a == AdapterChoice::kLocal && !options.expose_local_adapter) throw local_not_exposed();
    if ((a == AdapterChoice::kGlobal || a == AdapterChoice::kLocal) &&
        !visible[a == AdapterChoice::kGlobal ? 0 : 1].installed)
      throw InvalidRequest("adapter", std::string("adapter '") + adapter_choice_name(a) +
                                          "' is not installed on this node; ask for another or 'none'");
    if (queue.size() + jobs.size() > options.max_queue) {
      ++stats.rejected;
      throw ServiceOverloaded("the inference queue is full (" + std::to_string(queue.size()) + " of " +
                              std::to_string(options.max_queue) + " requests waiting); retry later");
    }
    for (auto& job : jobs) {
      job->id = next_id++;
      queue.push_back(std::move(job));
    }
  }
  wake.notify_one();
}

std::future<CompletionResult> InferenceService::submit(CompletionRequest request, OnToken on_token) {
  std::vector<OnToken> callbacks;
  callbacks.push_back(std::move(on_token));
  return std::move(submit_all({std::move(request)}, std::move(callbacks)).front());
}

std::vector<std::future<CompletionResult>> InferenceService::submit_all(std::vector<CompletionRequest> requests,
                                                                        std::vector<OnToken> on_tokens) {
  if (requests.empty()) throw InvalidRequest("n", "no request to run");
  on_tokens.resize(requests.size());
  std::vector<std::unique_ptr<Job>> jobs;
  std::vector<std::future<CompletionResult>> futures;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    check_request(requests[i], impl_->options);
    if (requests[i].adapter != requests[0].adapter)
      throw InvalidRequest("adapter", "the choices of one request must use one adapter");
    auto job = std::make_unique<Job>();
    job->request = std::move(requests[i]);
    job->on_token = std::move(on_tokens[i]);
    futures.push_back(job->promise.get_future());
    jobs.push_back(std::move(job));
  }
  impl_->enqueue(std::move(jobs));
  return futures;
}

std::future<EmbeddingResult> InferenceService::embed(std::vector<std::string> inputs, AdapterChoice adapter) {
  if (inputs.empty()) throw InvalidRequest("input", "no text to embed");
  auto job = std::make_unique<Job>();
  job->request.adapter = adapter;
  job->embed_inputs = std::move(inputs);
  auto future = job->embed_promise.get_future();
  std::vector<std::unique_ptr<Job>> jobs;
  jobs.push_back(std::move(job));
  impl_->enqueue(std::move(jobs));
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
