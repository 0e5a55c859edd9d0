// The node's inference service: one model, one tokenizer, two adapter slots
// ("global": the latest federated adapter; "local": this site's own) and a
// single worker thread that decodes requests with the same adapter choice
// together, with continuous batching.
//
// Design (docs/SERVING.md):
//  - Only the worker thread touches the Model. Callers queue a request
//    (bounded queue; full -> ServiceOverloaded) and wait on a future.
//  - Continuous batching: the worker runs a batch ("run") of requests with
//    one adapter choice, up to max_batch rows, one KV cache row each. A
//    request that arrives meanwhile joins at the next step (its prompt is
//    prefilled in a pass of its own, then it decodes in the same pass as the
//    others); a request that finishes leaves at once and its row takes the
//    next one. Each gets the tokens it would get alone, and its answer as
//    soon as it finishes. Fairness: a run may admit later requests past an
//    older one with another adapter choice at most max_batch times; then it
//    takes no one until its rows are done, and the older one runs next.
//  - install_adapter() only stages the new adapter under a mutex; the worker
//    swaps it into the model between runs (a staged adapter stops admissions,
//    so the running rows finish first). So a request keeps the adapter it
//    started with, installs never wait for a request to finish, and a
//    request submitted after install_adapter() returns sees the new adapter.
//  - The node trains on a separate Model instance (the driver's), so the
//    service and the trainer never share weights or KV caches.
//  - Threads: libtorch's at::set_num_threads is process-global; the service
//    never calls it. Its worker takes the count setup_torch() set (threads =
//    0), or ServiceOptions::threads, which caps only the worker thread's
//    OpenMP team (omp_set_num_threads on that thread; fedge's decode kernels
//    size their pool from omp_get_max_threads() of the calling thread).
//  - Split inference (split_inference.h) is used for requests that run on the
//    base model (adapter "none") when a SplitClient is attached; a failed or
//    slow peer makes the request finish locally (fell_back_to_local).
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/param_vector.h"
#include "fedge/serving/requests.h"  // AdapterChoice, AdapterSlot, CompletionRequest
#include "fedge/serving/sampling.h"  // LogprobEntry

namespace fedge::inference {
class Model;
class Tokenizer;
class LoraAdapter;
struct LoraConfig;
struct ModelConfig;
}  // namespace fedge::inference

namespace fedge::serving {

class SplitClient;

// A request field is out of range or refers to something missing; field()
// names it ("max_tokens", "prompt", "adapter", ...) for the HTTP error's param.
class InvalidRequest : public Error {
 public:
  InvalidRequest(std::string field, const std::string& message)
      : Error(ErrorKind::kInvalidInput, field + ": " + message), field_(std::move(field)) {}
  const std::string& field() const noexcept { return field_; }

 private:
  std::string field_;
};

// The request asked for the local adapter, which this service does not expose
// (ServiceOptions::expose_local_adapter is off): HTTP 403.
class AdapterNotExposed : public InvalidRequest {
 public:
  using InvalidRequest::InvalidRequest;
};

// The request queue is full: tell the caller to retry later (HTTP 503).
class ServiceOverloaded : public Error {
 public:
  explicit ServiceOverloaded(std::string message) : Error(ErrorKind::kRuntime, std::move(message)) {}
};

struct CompletionResult {
  std::string text;
  std::vector<std::int32_t> tokens;  // generated ids (stop token excluded)
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::string finish_reason;  // "stop" (end-of-sequence token or stop string) or "length"
  // With request.logprobs >= 0: one entry per token whose text starts before
  // a stop string (all tokens without one), and where its text starts in `text`.
  std::vector<LogprobEntry> logprobs;
  std::vector<std::size_t> text_offsets;
  std::string adapter;        // adapter used: "global", "local" or "none"
  std::uint64_t adapter_version = 0;  // version given to install_adapter (0 for none)
  bool split = false;              // a split peer computed at least one token
  bool fell_back_to_local = false; // the split peer failed; the rest ran locally
  std::string note;                // why it fell back, or other remarks
  double queue_seconds = 0, run_seconds = 0;
};

// /v1/embeddings' answer: one vector per input (hidden_size floats).
struct EmbeddingResult {
  std::vector<std::vector<float>> vectors;
  int prompt_tokens = 0;  // all inputs together
  std::string adapter;    // "global", "local" or "none"
  std::uint64_t adapter_version = 0;
  double run_seconds = 0;
};

// Called on the worker thread for each generated token with the text that
// became complete (may be empty: partial UTF-8). Return false to stop the
// request (finish_reason "stop"). Keep it quick: the next request waits.
using OnToken = std::function<bool(std::int32_t token, std::string_view text)>;

struct ServiceOptions {
  std::string model_name = "base";  // model id in /v1/models ("<name>+global", ...)
  std::size_t max_queue = 64;       // waiting requests beyond this -> ServiceOverloaded
  int max_tokens_limit = 4096;      // largest max_tokens a request may ask for
  int threads = 0;                  // > 0: the worker thread's OpenMP team; 0: setup_torch()'s count
  // Requests with the same adapter choice decoded together, up to this many
  // (1: one at a time). Not with a split client attached.
  int max_batch = 4;
  // true: continuous batching (requests join a running batch at the next
  // step). false: static batching, kept as the benchmark's reference: a run
  // takes only the requests waiting when it starts, and later ones wait for
  // all of its rows to finish.
  bool continuous_batching = true;
  // Tokens one request may hold, prompt and answer together (0: the model's
  // context): bounds each request's KV cache, so a node's memory budget can
  // count on it. Longer prompts are refused, answers end at "length".
  int context = 0;
  // Serve the "local" slot. It holds the site's own adapter, trained on its
  // private data and never clipped or noised, so it is off unless the operator
  // opts in (the node config's serve.expose_local_adapter): requests for it
  // are refused with AdapterNotExposed and the default choice skips it.
  bool expose_local_adapter = false;
};

struct AdapterStatus {
  bool installed = false;
  std::uint64_t version = 0;
};

struct ServiceStats {
  std::uint64_t completed = 0, failed = 0, rejected = 0;  // rejected: queue full
  std::uint64_t split_requests = 0, fallbacks = 0;
  std::uint64_t batches = 0;  // runs in which several requests decoded together
  std::size_t queued = 0;  // waiting now (not counting the running one)
  // Completions only (GET /metrics): tokens in and out, time queued and run
  // (summed over requests), and the decode speed of the last one finished.
  std::uint64_t prompt_tokens = 0, completion_tokens = 0;
  double queue_seconds = 0, run_seconds = 0;
  double last_tokens_per_second = 0;
};

class InferenceService {
 public:
  // Borrows `model` and `tokenizer`: they must outlive the service, and
  // nothing else may use `model` while the service runs (train on another
  // instance). Starts the worker thread.
  InferenceService(inference::Model& model, const inference::Tokenizer& tokenizer, ServiceOptions options = {});
  // Owns them.
  InferenceService(std::unique_ptr<inference::Model> model, std::unique_ptr<inference::Tokenizer> tokenizer,
                   ServiceOptions options = {});
  ~InferenceService();  // stop()
  InferenceService(const InferenceService&) = delete;
  InferenceService& operator=(const InferenceService&) = delete;

  // Queues a request. Throws InvalidRequest for bad options (max_tokens,
  // temperature, top_p, adapter not installed), ServiceOverloaded when the
  // queue is full, Error(kRuntime) after stop(). The future carries the result
  // or the error (e.g. InvalidRequest "prompt" when it does not fit the context).
  // on_token gets token -1 with the last held-back text at the end, if any.
  std::future<CompletionResult> submit(CompletionRequest request, OnToken on_token = {});
  // Several requests at once (the n choices of one HTTP request), queued all
  // or none: ServiceOverloaded when the queue cannot hold them all. All must
  // ask for the same adapter. on_tokens[i] (may be missing or empty) streams
  // requests[i].
  std::vector<std::future<CompletionResult>> submit_all(std::vector<CompletionRequest> requests,
                                                        std::vector<OnToken> on_tokens = {});
  // Embeds each text with `adapter` (as a request would run with it): the
  // mean over its tokens (BOS included) of the last hidden state, after the
  // final norm, L2-normalised. Queued like a request; runs alone. The future
  // fails with InvalidRequest "input" for a text longer than the context.
  std::future<EmbeddingResult> embed(std::vector<std::string> inputs, AdapterChoice adapter = AdapterChoice::kDefault);
  // submit() and wait.
  CompletionResult complete(CompletionRequest request, OnToken on_token = {});

  // Stages an adapter for `slot` (see the design note above). Throws
  // Error(kInvalidInput) if it was made for a model of another shape.
  void install_adapter(AdapterSlot slot, inference::LoraAdapter adapter, std::uint64_t version);
  // The same from a flat parameter vector (as aggregation produces it) and the
  // adapter's LoRA config; the layout must equal the adapter's layout().
  void install_adapter(AdapterSlot slot, const ParamVector& params, const inference::LoraConfig& config,
                       std::uint64_t version);
  void remove_adapter(AdapterSlot slot);
  AdapterStatus adapter_status(AdapterSlot slot) const;

  // Attaches (or with nullptr detaches) a split-inference client; applied
  // between requests like an adapter. The client must use this service's model.
  void set_split_client(std::unique_ptr<SplitClient> client);
  bool has_split_client() const;

  // Chat messages in the model's chat template (the tokenizer's, read from
  // tokenizer_config.json or GGUF; fedge's own format when it has none), the
  // one training renders chat records with, ending with the generation
  // prompt. A template that raises (e.g. roles that do not alternate) is
  // Error(kInvalidInput) with its message; a template fedge cannot parse is
  // Error(kRuntime) naming its line and column (logged once at start).
  std::string render_chat(const std::vector<training::ChatMessage>& messages) const;

  const std::string& model_name() const;
  const ServiceOptions& options() const;
  const inference::ModelConfig& model_config() const;
  const inference::Tokenizer& tokenizer() const;
  ServiceStats stats() const;

  // Refuses new requests, fails queued ones with Error(kRuntime) and waits
  // for the running one. Idempotent.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::serving
