#include "fedge/training/trainer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"
#include "fedge/inference/frozen_bf16.h"
#include "fedge/inference/generate.h"

namespace fedge::training {
namespace {

struct LossOptions {
  bool fused_head = true;
  int checkpoint_layers = 0;  // layers recomputed in backward
};

using Clock = std::chrono::steady_clock;

at::Tensor long_tensor(const std::vector<std::int64_t>& values, int rows, int cols) {
  return at::from_blob(const_cast<std::int64_t*>(values.data()), {rows, cols}, at::kLong).clone();
}

at::Tensor byte_tensor(const std::vector<std::uint8_t>& values, int rows, int cols) {
  return at::from_blob(const_cast<std::uint8_t*>(values.data()), {rows, cols}, at::kByte).clone();
}

// Fused LM head + cross-entropy over the rows that have a target: sum over
// rows of w * (logsumexp(h W^T) - (h W^T)[target]), computed `kChunk` rows at a
// time so the [rows, vocab] logits never exist whole. The loss is the graph's
// root, so its gradient is computed in the same pass (softmax - onehot, while
// the chunk's logits are at hand) and backward only scales it: no recompute.
struct FusedHeadLoss : torch::autograd::Function<FusedHeadLoss> {
  static constexpr std::int64_t kChunk = 256;
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& head,
                            const at::Tensor& targets, const at::Tensor& weights, bool want_grad) {
    const std::int64_t rows = hidden.size(0);
    const bool grad_h = want_grad && hidden.requires_grad(), grad_w = want_grad && head.requires_grad();
    at::Tensor d_hidden = grad_h ? at::empty_like(hidden) : at::Tensor();
    at::Tensor d_head = grad_w ? at::zeros_like(head) : at::Tensor();
    at::Tensor total = at::zeros({}, at::kDouble);
    for (std::int64_t start = 0; start < rows; start += kChunk) {
      const std::int64_t n = std::min(kChunk, rows - start);
      at::Tensor h = hidden.narrow(0, start, n);
      at::Tensor t = targets.narrow(0, start, n).unsqueeze(1);
      at::Tensor w = weights.narrow(0, start, n);
      at::Tensor logits = at::mm(h, head.t());
      at::Tensor lse = at::logsumexp(logits, 1);
      total += ((lse - logits.gather(1, t).squeeze(1)) * w).sum().to(at::kDouble);
      if (!grad_h && !grad_w) continue;
      at::Tensor d = logits.sub_(lse.unsqueeze(1)).exp_();  // softmax, in place
      d.scatter_add_(1, t, at::full({n, 1}, -1.0f, d.options()));
      d.mul_(w.unsqueeze(1));
      if (grad_h) {
        at::Tensor slot = d_hidden.narrow(0, start, n);
        at::mm_out(slot, d, head);
      }
      if (grad_w) d_head.addmm_(d.t(), h);
    }
    ctx->saved_data["d_hidden"] = d_hidden;
    ctx->saved_data["d_head"] = d_head;
    return total.to(at::kFloat);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto scaled = [&](const char* key) {
      at::Tensor g = ctx->saved_data[key].toTensor();
      return g.defined() ? g * grads[0] : g;
    };
    return {scaled("d_hidden"), scaled("d_head"), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor head_f32(const inference::Model& model) { return inference::weight_to_f32(model.lm_head()); }

// Sum of token cross-entropies over the batch's target tokens (a scalar
// tensor, differentiable when grad mode is on).
at::Tensor batch_loss_sum(inference::Model& model, const Batch& batch, bool training, const LossOptions& loss) {
  at::Tensor tokens = long_tensor(batch.tokens, batch.rows, batch.cols);
  at::Tensor attention = byte_tensor(batch.attention, batch.rows, batch.cols).to(at::kLong);
  const std::int64_t steps = batch.cols - 1;
  at::Tensor targets = tokens.narrow(1, 1, steps);
  at::Tensor weight = byte_tensor(batch.target, batch.rows, batch.cols).narrow(1, 1, steps).to(at::kFloat);
  if (!loss.fused_head) {
    at::Tensor logits = model.forward_train(tokens, attention, training);
    at::Tensor log_probs = at::log_softmax(logits.narrow(1, 0, steps), -1);
    at::Tensor nll = -log_probs.gather(2, targets.unsqueeze(2)).squeeze(2);
    return (nll * weight).sum();
  }
  at::Tensor hidden = model.forward_train_hidden(tokens, attention, training, loss.checkpoint_layers);
  // Only rows with a target go through the head.
  at::Tensor rows = weight.flatten().nonzero().squeeze(1);
  at::Tensor h = hidden.narrow(1, 0, steps).reshape({-1, hidden.size(2)}).index_select(0, rows);
  at::Tensor head = head_f32(model);
  const bool want_grad = at::GradMode::is_enabled();
  return FusedHeadLoss::apply(h, head, targets.flatten().index_select(0, rows),
                              weight.flatten().index_select(0, rows), want_grad);
}

std::string format_duration(double seconds) {
  auto s = static_cast<long>(seconds);
  std::ostringstream out;
  out << s / 60 << "m" << (s % 60 < 10 ? "0" : "") << s % 60 << "s";
  return out.str();
}

void write_tensors(const std::filesystem::path& path, const std::vector<std::string>& names,
                   const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> contiguous;
  std::vector<TensorView> views;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    contiguous.push_back(tensors[i].detach().to(at::kFloat).contiguous());
    const at::Tensor& t = contiguous.back();
    views.push_back({names[i], DType::kF32, std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end()),
                     std::span<const std::byte>(static_cast<const std::byte*>(t.data_ptr()), t.nbytes())});
  }
  write_safetensors(path, views);
}

void read_tensor_into(const SafetensorsFile& file, const std::string& name, at::Tensor& target) {
  const TensorInfo& info = file.at(name);
  if (info.numel() != target.numel()) {
    throw Error(ErrorKind::kInvalidInput, file.source_name() + ": tensor '" + name + "' has " +
                                              std::to_string(info.numel()) + " values, the trainer expects " +
                                              std::to_string(target.numel()));
  }
  at::NoGradGuard no_grad;
  auto values = file.to_f32(info);
  target.copy_(at::from_blob(values.data(), target.sizes(), at::kFloat));
}


constexpr int kMmapThreshold = 32 << 20;  // glibc's maximum
constexpr int kTrimThreshold = 1 << 30;
constexpr int kTopPad = 64 << 20;
std::mutex retain_mutex;
int retain_count = 0;

}  // namespace

RetainFreedMemory::RetainFreedMemory() {
  std::lock_guard<std::mutex> lock(retain_mutex);
  if (retain_count++ > 0) return;
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
  mallopt(M_TOP_PAD, kTopPad);
}

RetainFreedMemory::~RetainFreedMemory() {
  std::lock_guard<std::mutex> lock(retain_mutex);
  if (--retain_count > 0) return;
  mallopt(M_TRIM_THRESHOLD, 2 * kMmapThreshold);  // what glibc's dynamic threshold ends at
  mallopt(M_TOP_PAD, 0);
  malloc_trim(0);
}

void TrainOptions::validate() const {
  auto bad = [](const std::string& what) { throw Error(ErrorKind::kInvalidInput, "training option " + what); };
  if (steps < 1) bad("steps must be at least 1");
  if (batch_size < 1) bad("batch size must be at least 1");
  if (grad_accum < 1) bad("gradient accumulation must be at least 1");
  if (!(lr > 0) || !std::isfinite(lr)) bad("learning rate must be positive");
  if (weight_decay < 0) bad("weight decay must be >= 0");
  if (beta1 < 0 || beta1 >= 1 || beta2 < 0 || beta2 >= 1) bad("betas must be in [0, 1)");
  if (schedule != "cosine" && schedule != "linear" && schedule != "constant") {
    bad("schedule '" + schedule + "' is not cosine, linear or constant");
  }
  if (warmup_steps < 0 || warmup_steps > steps) bad("warm-up steps must be in [0, steps]");
  if (min_lr_ratio < 0 || min_lr_ratio > 1) bad("min lr ratio must be in [0, 1]");
  if (max_grad_norm < 0) bad("max grad norm must be >= 0");
  if (fedprox_mu < 0) bad("FedProx mu must be >= 0");
}

double learning_rate(const TrainOptions& options, std::int64_t step) {
  if (step < options.warmup_steps) {
    return options.lr * static_cast<double>(step + 1) / static_cast<double>(options.warmup_steps);
  }
  if (options.schedule == "constant") return options.lr;
  double span = static_cast<double>(std::max<std::int64_t>(1, options.steps - options.warmup_steps));
  double progress = std::min(1.0, static_cast<double>(step - options.warmup_steps) / span);
  double shape = options.schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return options.lr * (options.min_lr_ratio + (1.0 - options.min_lr_ratio) * shape);
}

struct Trainer::Impl {
  RetainFreedMemory retain_freed_memory;
  inference::Model* model = nullptr;
  const TokenDataset* data = nullptr;
  TrainOptions options;
  std::string adapter_name;  // empty: full-parameter training
  std::vector<std::string> names;
  std::vector<at::Tensor> params, exp_avg, exp_avg_sq, prox_center;
  // SCAFFOLD: the offset added to each raw gradient, and the raw gradients' sum.
  std::vector<at::Tensor> grad_offset, raw_grad_sum;
  std::int64_t raw_grad_steps = 0;
  std::int64_t step = 0;
  double run_seconds = 0.0;

  void init_state() {
    options.validate();
    if (data->empty()) throw Error(ErrorKind::kInvalidInput, "training data has no sequence with a target token");
    for (auto& p : params) {
      p.requires_grad_(true);
      exp_avg.push_back(at::zeros_like(p).detach());
      exp_avg_sq.push_back(at::zeros_like(p).detach());
    }
  }

  // bf16 frozen-base products: asked for, a frozen base (LoRA), and a CPU
  // where they are fast.
  bool frozen_bf16() const {
    return options.frozen_base_bf16 && !adapter_name.empty() && inference::bf16_matmul_fast();
  }

  LossOptions loss_options() const {
    const int all = model->config().num_layers;
    return {options.fused_head_loss, options.gradient_checkpointing ? all : std::min(options.checkpoint_layers, all)};
  }

  void select() {
    if (!adapter_name.empty()) model->set_active_adapter(adapter_name);
  }

  // `values` (the trained parameters' size, in their order) cut into one
  // tensor per parameter; `what` names it in the error.
  std::vector<at::Tensor> split_like_params(const ParamVector& values, const std::string& what) const {
    std::size_t trained = 0;
    for (const auto& p : params) trained += static_cast<std::size_t>(p.numel());
    if (values.size() != trained) {
      throw Error(ErrorKind::kInvalidInput, what + " has " + std::to_string(values.size()) +
                                                " values, the trained parameters " + std::to_string(trained));
    }
    std::vector<at::Tensor> out;
    std::size_t offset = 0;
    for (const auto& p : params) {
      auto part = values.values().subspan(offset, static_cast<std::size_t>(p.numel()));
      out.push_back(at::from_blob(const_cast<float*>(part.data()), p.sizes(), at::kFloat).clone());
      offset += part.size();
    }
    return out;
  }

  // Adds the raw gradients to their sum, then the offset to the gradients
  // (a parameter without a gradient had a zero raw one).
  void offset_gradients() {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].grad().defined()) {
        raw_grad_sum[i].add_(params[i].grad());
        params[i].mutable_grad().add_(grad_offset[i]);
      } else {
        params[i].mutable_grad() = grad_offset[i].clone();
      }
    }
    ++raw_grad_steps;
  }

  double clip_and_norm() {
    double squared = 0.0;
    for (auto& p : params) {
      if (p.grad().defined()) squared += p.grad().pow(2).sum().item<double>();
    }
    double norm = std::sqrt(squared);
    if (options.max_grad_norm > 0 && norm > options.max_grad_norm) {
      double coefficient = options.max_grad_norm / (norm + 1e-6);
      for (auto& p : params) {
        if (p.grad().defined()) p.mutable_grad().mul_(coefficient);
      }
    }
    return norm;
  }

  void adamw_update(double lr) {
    at::NoGradGuard no_grad;
    const double t = static_cast<double>(step + 1);
    const double correction1 = 1.0 - std::pow(options.beta1, t);
    const double correction2 = 1.0 - std::pow(options.beta2, t);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      const at::Tensor& g = params[i].grad();
      exp_avg[i].mul_(options.beta1).add_(g, 1.0 - options.beta1);
      exp_avg_sq[i].mul_(options.beta2).addcmul_(g, g, 1.0 - options.beta2);
      if (options.weight_decay > 0) params[i].mul_(1.0 - lr * options.weight_decay);
      at::Tensor denom = (exp_avg_sq[i] / correction2).sqrt_().add_(options.eps);
      params[i].addcdiv_(exp_avg[i], denom, -lr / correction1);
    }
  }
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

Trainer Trainer::for_adapter(inference::Model& model, const std::string& adapter_name, const TokenDataset& data,
                             TrainOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->data = &data;
  impl->options = std::move(options);
  impl->adapter_name = adapter_name;
  inference::LoraAdapter* adapter = model.adapter(adapter_name);
  if (adapter == nullptr) throw Error(ErrorKind::kNotFound, "no adapter named '" + adapter_name + "' on the model");
  impl->params = adapter->parameters();
  impl->names = adapter->parameter_names();
  impl->init_state();
  impl->select();
  return Trainer(std::move(impl));
}

Trainer Trainer::full(inference::Model& model, const TokenDataset& data, TrainOptions options) {
  if (!model.active_adapter().empty()) {
    throw Error(ErrorKind::kInvalidInput, "full-parameter training needs no adapter active");
  }
  if (model.weight_type() != inference::WeightType::kF32) {
    throw Error(ErrorKind::kInvalidInput, "full-parameter training needs f32 weights");
  }
  // The optimizer updates the weights in place: a mapped file or a base shared
  // with another Model must be copied first.
  model.own_weights();
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->data = &data;
  impl->options = std::move(options);
  std::set<const void*> seen;  // tied embeddings appear under two names
  for (auto& [name, tensor] : model.named_weights()) {
    if (seen.insert(tensor.data_ptr()).second) {
      impl->names.push_back(name);
      impl->params.push_back(tensor);
    }
  }
  impl->init_state();
  return Trainer(std::move(impl));
}

void Trainer::set_proximal_center(const ParamVector& center) {
  impl_->prox_center = impl_->split_like_params(center, "the FedProx centre");
}

void Trainer::set_gradient_offset(const ParamVector& offset) {
  impl_->grad_offset = impl_->split_like_params(offset, "the gradient offset");
  impl_->raw_grad_sum.clear();
  for (const auto& p : impl_->params) impl_->raw_grad_sum.push_back(at::zeros_like(p).detach());
  impl_->raw_grad_steps = 0;
}

std::vector<float> Trainer::mean_raw_gradient() const {
  const Impl& s = *impl_;
  if (s.grad_offset.empty())
    throw Error(ErrorKind::kInvalidInput, "mean_raw_gradient: no gradient offset was set (set_gradient_offset)");
  if (s.raw_grad_steps == 0) throw Error(ErrorKind::kInvalidInput, "mean_raw_gradient: no step taken yet");
  std::vector<float> out;
  for (const auto& sum : s.raw_grad_sum) {
    const at::Tensor mean = (sum / static_cast<double>(s.raw_grad_steps)).contiguous();
    out.insert(out.end(), mean.data_ptr<float>(), mean.data_ptr<float>() + mean.numel());
  }
  return out;
}

StepStats Trainer::step() {
  Impl& s = *impl_;
  if (done()) throw Error(ErrorKind::kRuntime, "training already finished all its steps");
  s.select();
  auto start = Clock::now();
  std::vector<Batch> batches;
  std::int64_t targets = 0, tokens = 0;
  for (int a = 0; a < s.options.grad_accum; ++a) {
    auto indices = batch_indices(s.data->size(), s.options.batch_size, s.options.seed,
                                 s.step * s.options.grad_accum + a);
    batches.push_back(s.data->batch(indices));
    targets += batches.back().target_count();
    for (auto m : batches.back().attention) tokens += m;
  }
  for (auto& p : s.params) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  double loss_sum = 0.0;
  inference::FrozenBaseBf16 precision(s.frozen_bf16());
  for (const auto& batch : batches) {
    at::Tensor sum = batch_loss_sum(*s.model, batch, /*training=*/true, s.loss_options());
    (sum / static_cast<double>(std::max<std::int64_t>(targets, 1))).backward();
    loss_sum += sum.item<double>();
  }
  if (!s.grad_offset.empty()) s.offset_gradients();
  if (s.options.fedprox_mu > 0 && !s.prox_center.empty()) {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < s.params.size(); ++i) {
      if (s.params[i].grad().defined()) s.params[i].mutable_grad().add_(s.params[i] - s.prox_center[i], s.options.fedprox_mu);
    }
  }
  StepStats stats;
  stats.grad_norm = s.clip_and_norm();
  stats.lr = learning_rate(s.options, s.step);
  s.adamw_update(stats.lr);
  ++s.step;
  stats.step = s.step;
  stats.loss = loss_sum / static_cast<double>(std::max<std::int64_t>(targets, 1));
  stats.tokens = tokens;
  stats.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return stats;
}

std::vector<StepStats> Trainer::run(const std::function<void(const StepStats&)>& on_step) {
  std::vector<StepStats> history;
  std::int64_t tokens = 0;
  double seconds = 0.0;
  while (!done()) {
    StepStats stats = step();
    tokens += stats.tokens;
    seconds += stats.seconds;
    history.push_back(stats);
    if (on_step) on_step(stats);
    const auto& o = impl_->options;
    if (o.log_every > 0 && (stats.step % o.log_every == 0 || done())) {
      double rate = seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0;
      double eta = static_cast<double>(o.steps - stats.step) * seconds / static_cast<double>(history.size());
      spdlog::info("step {}/{}  loss {:.4f}  lr {:.2e}  grad-norm {:.3f}  {:.0f} tok/s  ETA {}", stats.step, o.steps,
                   stats.loss, stats.lr, stats.grad_norm, rate, format_duration(eta));
    }
  }
  return history;
}

std::int64_t Trainer::current_step() const { return impl_->step; }
bool Trainer::done() const { return impl_->step >= impl_->options.steps; }

void Trainer::save_checkpoint(const std::filesystem::path& dir) const {
  const Impl& s = *impl_;
  std::filesystem::create_directories(dir);
  write_tensors(dir / "params.safetensors", s.names, s.params);
  std::vector<std::string> state_names;
  std::vector<at::Tensor> state;
  for (std::size_t i = 0; i < s.names.size(); ++i) {
    state_names.push_back(s.names[i] + ".exp_avg");
    state.push_back(s.exp_avg[i]);
    state_names.push_back(s.names[i] + ".exp_avg_sq");
    state.push_back(s.exp_avg_sq[i]);
  }
  write_tensors(dir / "optimizer.safetensors", state_names, state);
  nlohmann::json meta = {{"step", s.step},         {"steps", s.options.steps}, {"seed", s.options.seed},
                         {"batch_size", s.options.batch_size}, {"grad_accum", s.options.grad_accum},
                         {"lr", s.options.lr},     {"schedule", s.options.schedule}};
  std::ofstream(dir / "trainer_state.json") << meta.dump(2) << "\n";
}

void Trainer::load_checkpoint(const std::filesystem::path& dir) {
  Impl& s = *impl_;
  std::ifstream in(dir / "trainer_state.json");
  if (!in) throw Error(ErrorKind::kNotFound, (dir / "trainer_state.json").string() + ": no trainer checkpoint here");
  nlohmann::json meta = nlohmann::json::parse(in, nullptr, false);
  if (meta.is_discarded() || !meta.contains("step") || !meta["step"].is_number_integer()) {
    throw Error(ErrorKind::kInvalidInput, (dir / "trainer_state.json").string() + ": malformed (needs an integer 'step')");
  }
  std::int64_t step = meta["step"].get<std::int64_t>();
  if (step < 0 || step > s.options.steps) {
    throw Error(ErrorKind::kInvalidInput, (dir / "trainer_state.json").string() + ": step " + std::to_string(step) +
                                              " is outside this run's " + std::to_string(s.options.steps) + " steps");
  }
  auto params = SafetensorsFile::open(dir / "params.safetensors");
  auto optimizer = SafetensorsFile::open(dir / "optimizer.safetensors");
  for (std::size_t i = 0; i < s.names.size(); ++i) {
    read_tensor_into(params, s.names[i], s.params[i]);
    read_tensor_into(optimizer, s.names[i] + ".exp_avg", s.exp_avg[i]);
    read_tensor_into(optimizer, s.names[i] + ".exp_avg_sq", s.exp_avg_sq[i]);
  }
  s.step = step;
}

EvalResult evaluate_loss(inference::Model& model, const TokenDataset& data, int batch_size) {
  at::NoGradGuard no_grad;
  EvalResult result;
  double loss_sum = 0.0;
  std::vector<std::size_t> indices;
  for (std::size_t start = 0; start < data.size(); start += static_cast<std::size_t>(batch_size)) {
    indices.clear();
    for (std::size_t i = start; i < std::min(data.size(), start + static_cast<std::size_t>(batch_size)); ++i) {
      indices.push_back(i);
    }
    Batch batch = data.batch(indices);
    loss_sum += batch_loss_sum(model, batch, /*training=*/false, LossOptions{}).item<double>();
    result.tokens += batch.target_count();
  }
  if (result.tokens == 0) throw Error(ErrorKind::kInvalidInput, "evaluation data has no target token");
  result.loss = loss_sum / static_cast<double>(result.tokens);
  result.perplexity = std::exp(result.loss);
  return result;
}

namespace {
std::string trimmed(std::string_view text) {
  auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  auto end = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(begin, end - begin + 1));
}
}  // namespace

double exact_match_accuracy(inference::Model& model, const inference::Tokenizer& tokenizer,
                            const std::vector<Record>& records, int max_new_tokens) {
  if (records.empty()) throw Error(ErrorKind::kInvalidInput, "no instruction records to score");
  inference::SamplingOptions sampling;
  sampling.max_tokens = max_new_tokens;
  sampling.temperature = 0.0f;
  std::size_t correct = 0;
  constexpr std::size_t kBatch = 16;
  for (std::size_t start = 0; start < records.size(); start += kBatch) {
    std::vector<std::vector<TokenId>> prompts;
    std::size_t end = std::min(records.size(), start + kBatch);
    for (std::size_t i = start; i < end; ++i) prompts.push_back(tokenizer.encode(records[i].prompt, true));
    auto results = inference::generate(model, prompts, sampling, &tokenizer);
    for (std::size_t i = start; i < end; ++i) {
      if (trimmed(results[i - start].text) == trimmed(records[i].completion)) ++correct;
    }
  }
  return static_cast<double>(correct) / static_cast<double>(records.size());
}

}  // namespace fedge::training
