// The inference engine: raw loops over the model's tensors, BLAS for
// multi-token products, fused kernels for decoding. No autograd, no per-op
// tensor allocation on the decode path.
#include <ATen/ATen.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>

#include "fedge/common/error.h"
#include "fedge/inference/quant.h"
#include "kernels.h"
#include "model_impl.h"

namespace fedge::inference {

// ---------------- LayerWeights ----------------
at::Tensor& LayerWeights::proj(LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ: return wq;
    case LoraTarget::kK: return wk;
    case LoraTarget::kV: return wv;
    case LoraTarget::kO: return wo;
    case LoraTarget::kGate: return wgate;
    case LoraTarget::kUp: return wup;
    default: return wdown;
  }
}
const at::Tensor& LayerWeights::proj(LoraTarget t) const {
  return const_cast<LayerWeights*>(this)->proj(t);
}

// ---------------- KVCache ----------------
KVCache::KVCache(const ModelConfig& c, int layer_begin, int layer_end, int batch, int capacity)
    : layer_begin_(layer_begin), layer_end_(layer_end), batch_(batch), capacity_(capacity),
      max_capacity_(c.context_length()), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  if (layer_begin < 0 || layer_end > c.num_layers || layer_begin > layer_end)
    throw Error(ErrorKind::kInvalidInput, "KV cache layer range [" + std::to_string(layer_begin) + ", " +
                                              std::to_string(layer_end) + ") is outside the model's " +
                                              std::to_string(c.num_layers) + " layers");
  if (batch <= 0 || capacity <= 0)
    throw Error(ErrorKind::kInvalidInput, "KV cache needs a positive batch and capacity");
  if (capacity > max_capacity_)
    throw Error(ErrorKind::kInvalidInput,
                "KV cache capacity " + std::to_string(capacity) + " exceeds the model's context of " +
                    std::to_string(max_capacity_) + " positions");
  const std::size_t n = std::size_t(layer_end - layer_begin) * batch * kv_heads_ * capacity * head_dim_;
  k_.assign(n, 0.f);
  v_.assign(n, 0.f);
  next_pos_.assign(batch, 0);
}

int KVCache::length() const {
  int longest = 0;
  for (int p : next_pos_) longest = std::max(longest, p);
  return longest;
}

void KVCache::reset() { std::fill(next_pos_.begin(), next_pos_.end(), 0); }

void KVCache::reset_row(int row) { next_pos_.at(std::size_t(row)) = 0; }

void KVCache::grow(int batch, int capacity) {
  batch = std::max(batch, batch_);
  capacity = std::max(capacity, capacity_);
  if (batch == batch_ && capacity == capacity_) return;
  if (capacity > max_capacity_)
    throw Error(ErrorKind::kInvalidInput,
                "KV cache capacity " + std::to_string(capacity) + " exceeds the model's context of " +
                    std::to_string(max_capacity_) + " positions");
  const int layers = layer_end_ - layer_begin_;
  const std::size_t n = std::size_t(layers) * batch * kv_heads_ * capacity * head_dim_;
  std::vector<float> k(n, 0.f), v(n, 0.f);
  // Each (layer, row, head) block keeps its used slots at the same place.
  for (int l = 0; l < layers; ++l)
    for (int b = 0; b < batch_; ++b)
      for (int h = 0; h < kv_heads_; ++h) {
        const std::size_t from = ((std::size_t(l) * batch_ + b) * kv_heads_ + h) * capacity_ * head_dim_;
        const std::size_t to = ((std::size_t(l) * batch + b) * kv_heads_ + h) * std::size_t(capacity) * head_dim_;
        const std::size_t used = std::size_t(next_pos_[b]) * head_dim_;
        std::copy_n(k_.begin() + from, used, k.begin() + to);
        std::copy_n(v_.begin() + from, used, v.begin() + to);
      }
  k_.swap(k);
  v_.swap(v);
  next_pos_.resize(batch, 0);
  batch_ = batch;
  capacity_ = capacity;
}

float* KVCache::keys(int layer, int row, int kv_head) {
  std::size_t idx = ((std::size_t(layer - layer_begin_) * batch_ + row) * kv_heads_ + kv_head) * capacity_;
  return k_.data() + idx * head_dim_;
}
float* KVCache::values(int layer, int row, int kv_head) {
  std::size_t idx = ((std::size_t(layer - layer_begin_) * batch_ + row) * kv_heads_ + kv_head) * capacity_;
  return v_.data() + idx * head_dim_;
}

std::vector<int> KVCache::append(std::span<const std::uint8_t> mask, int steps) {
  std::vector<int> rows(std::size_t(batch_) * steps);
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = mask.empty() || mask[i] != 0 ? int(i / steps) : -1;
  return append_rows(rows);
}

std::vector<int> KVCache::append_rows(std::span<const int> rows) {
  std::vector<int> wanted(next_pos_);
  for (int b : rows) {
    if (b < -1 || b >= batch_)
      throw Error(ErrorKind::kInvalidInput, "KV cache row " + std::to_string(b) + " is outside the cache's " +
                                                std::to_string(batch_) + " rows");
    if (b >= 0 && ++wanted[b] > capacity_)
      throw Error(ErrorKind::kInvalidInput, "sequence of " + std::to_string(wanted[b]) +
                                                " tokens exceeds the KV cache capacity of " +
                                                std::to_string(capacity_) + " (the model's context)");
  }
  std::vector<int> positions(rows.size(), -1);
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i] >= 0) positions[i] = next_pos_[rows[i]]++;
  return positions;
}

// ---------------- Model basics ----------------
Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->config; }
WeightType Model::weight_type() const { return impl_->wtype; }
LayerWeights& Model::layer(int i) { return impl_->layers.at(i); }
const LayerWeights& Model::layer(int i) const { return impl_->layers.at(i); }
const at::Tensor& Model::embed_tokens() const { return impl_->embed; }
const at::Tensor& Model::final_norm() const { return impl_->norm; }
const at::Tensor& Model::lm_head() const { return impl_->head; }

std::size_t Model::weight_bytes() const {
  std::size_t total = impl_->norm.nbytes() + impl_->head.nbytes();
  for (const auto& l : impl_->layers)
    for (const at::Tensor* t : {&l.attn_norm, &l.mlp_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.wgate,
                                &l.wup, &l.wdown, &l.bq, &l.bk, &l.bv})
      if (t->defined()) total += t->nbytes();
  return total;
}

bool Model::Impl::is_mapped(const at::Tensor& t) const {
  if (!t.defined() || t.nbytes() == 0) return false;
  const auto* p = static_cast<const std::byte*>(t.data_ptr());
  for (const auto& [begin, size] : mapped)
    if (p >= begin && p < begin + size) return true;
  return false;
}

bool Model::Impl::owns(const at::Tensor& t, long handles) const {
  // A tensor another Model holds has more handles to its TensorImpl than
  // this Model's own, or another TensorImpl on its storage.
  return !is_mapped(t) && t.use_count() <= std::size_t(handles) && t.storage().use_count() == 1;
}

std::vector<at::Tensor*> Model::Impl::weight_slots() {
  std::vector<at::Tensor*> slots = {&embed, &norm, &head};
  for (auto& l : layers)
    for (at::Tensor* t : {&l.attn_norm, &l.mlp_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.wgate, &l.wup, &l.wdown, &l.bq,
                          &l.bk, &l.bv})
      if (t->defined()) slots.push_back(t);
  return slots;
}

Model::WeightMemory Model::weight_memory() const {
  WeightMemory m;
  std::set<const void*> seen;  // tied embeddings: one tensor, two slots
  for (const at::Tensor* t : impl_->weight_slots()) {
    if (!t->defined() || !seen.insert(t->data_ptr()).second) continue;
    m.bytes += t->nbytes();
    if (impl_->is_mapped(*t)) m.mapped_bytes += t->nbytes();
  }
  return m;
}

Model Model::share() const {
  if (!impl_->merged.empty())
    throw Error(ErrorKind::kInvalidInput, "adapter '" + impl_->merged +
                                              "' is merged into the weights; unmerge it before sharing the base");
  auto impl = std::make_unique<Impl>();
  impl->config = impl_->config;
  impl->wtype = impl_->wtype;
  impl->embed = impl_->embed;
  impl->norm = impl_->norm;
  impl->head = impl_->head;
  impl->layers = impl_->layers;  // tensor handles: the storage is shared
  impl->rope_cos = impl_->rope_cos;
  impl->rope_sin = impl_->rope_sin;
  impl->rope_cos_t = impl_->rope_cos_t;
  impl->rope_sin_t = impl_->rope_sin_t;
  impl->mapped = impl_->mapped;
  return Model(std::move(impl));
}

// The base's distinct tensors with the number of handles this Model holds
// to each (the tied embedding is also the head).
std::vector<std::pair<at::Tensor*, long>> Model::Impl::distinct_weights() {
  const bool tied = head.is_same(embed);
  std::vector<std::pair<at::Tensor*, long>> out;
  for (at::Tensor* t : weight_slots()) {
    if (tied && t == &head) continue;
    out.emplace_back(t, tied && t == &embed ? 2 : 1);
  }
  return out;
}

bool Model::weights_read_only() const {
  for (auto [t, handles] : impl_->distinct_weights())
    if (!impl_->owns(*t, handles)) return true;
  return false;
}

void Model::own_weights() {
  const bool tied = impl_->head.is_same(impl_->embed);
  for (auto [t, handles] : impl_->distinct_weights())
    if (!impl_->owns(*t, handles)) *t = t->clone();
  if (tied) impl_->head = impl_->embed;
  impl_->mapped.clear();
}

void Model::Impl::build_rope() {
  const int half = config.head_dim / 2;
  const int n = config.context_length();
  const auto inv = rope_inv_freq(config);
  rope_cos.resize(std::size_t(n) * half);
  rope_sin.resize(std::size_t(n) * half);
  for (int p = 0; p < n; ++p)
    for (int i = 0; i < half; ++i) {
      const double a = double(p) * inv[i];
      rope_cos[std::size_t(p) * half + i] = float(std::cos(a));
      rope_sin[std::size_t(p) * half + i] = float(std::sin(a));
    }
  rope_cos_t = at::from_blob(rope_cos.data(), {n, half}, at::kFloat).clone();
  rope_sin_t = at::from_blob(rope_sin.data(), {n, half}, at::kFloat).clone();
}

const LoraAdapter* Model::Impl::active_adapter() const {
  if (active.empty()) return nullptr;
  return &adapters.at(active);
}

KVCache Model::make_cache(int batch, int capacity, int layer_begin, int layer_end) const {
  if (layer_end < 0) layer_end = impl_->config.num_layers;
  return KVCache(impl_->config, layer_begin, layer_end, batch, capacity);
}

// ---------------- engine ----------------
namespace {

// Whether a product should go to BLAS: prompts (many rows). Up to 15 rows
// stay on the weight-streaming kernels, which read each weight once for all
// rows: a continuous batch's decode pass (max_batch rows, often 8) is
// memory-bound, and at 8 rows the kernels beat at::mm under load
// (docs/PERFORMANCE.md, "Continuous batching"). FEDGE_BLAS_ROWS overrides
// the threshold (benchmarking).
bool use_blas(int rows) {
  static const int threshold = [] {
    const char* v = std::getenv("FEDGE_BLAS_ROWS");
    return v ? std::atoi(v) : 16;
  }();
  return rows >= threshold;
}

void add_bias(const at::Tensor& bias, int rows, int out, float* y) {
  if (!bias.defined()) return;
  const float* b = bias.data_ptr<float>();
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < out; ++j) y[std::size_t(r) * out + j] += b[j];
}

// y [rows, out] = x [rows, in] W^T (+ bias).
void linear(const at::Tensor& w, const at::Tensor& bias, const float* x, int rows, float* y) {
  const int out = int(w.size(0)), in = int(in_features(w));
  switch (w.scalar_type()) {
    case at::kFloat:
      if (use_blas(rows)) {
        // Prompts: a real matrix product, where BLAS wins.
        auto xt = at::from_blob(const_cast<float*>(x), {rows, in}, at::kFloat);
        auto yt = at::from_blob(y, {rows, out}, at::kFloat);
        at::mm_out(yt, xt, w.t());
      } else {
        kernels::matvec_f32(w.data_ptr<float>(), x, y, rows, in, out);
      }
      break;
    case at::kBFloat16:
      kernels::matvec_bf16(reinterpret_cast<const std::uint16_t*>(w.data_ptr<at::BFloat16>()), x, y, rows, in, out);
      break;
    case at::kHalf:
      kernels::matvec_f16(reinterpret_cast<const std::uint16_t*>(w.data_ptr<at::Half>()), x, y, rows, in, out);
      break;
    default: linear_packed(w, x, rows, y);  // quantized blocks
  }
  add_bias(bias, rows, out, y);
}

// Several projections of the same input: one parallel region for the batch-1
// kernels, separate BLAS products for prompts.
struct Proj {
  const at::Tensor& w;
  const at::Tensor& bias;
  float* y;
};
void linear_group(std::initializer_list<Proj> projs, const float* x, int rows) {
  const at::Tensor& w0 = projs.begin()->w;
  const WeightType type = weight_type_of(w0);
  bool same_type = true;  // a file may mix types
  for (const Proj& p : projs) same_type = same_type && weight_type_of(p.w) == type;
  const int in = int(in_features(w0));
  if (same_type && is_quantized(type)) {
    std::vector<quant::MatmulJob> jobs;
    for (const Proj& p : projs) jobs.push_back({p.w.data_ptr(), p.y, int(p.w.size(0))});
    quant::matmul_group(quant_type_of(type), jobs.data(), int(jobs.size()), x, rows, in);
  } else if (same_type && !(type == WeightType::kF32 && use_blas(rows))) {
    std::vector<kernels::MatvecJob> jobs;
    const kernels::Dtype dtype = type == WeightType::kF32    ? kernels::Dtype::kF32
                                 : type == WeightType::kBF16 ? kernels::Dtype::kBF16
                                                             : kernels::Dtype::kF16;
    for (const Proj& p : projs) jobs.emplace_back(p.w.data_ptr(), dtype, p.y, int(p.w.size(0)));
    kernels::matvec_group(jobs.data(), int(jobs.size()), x, rows, in);
  } else {
    for (const Proj& p : projs) linear(p.w, p.bias, x, rows, p.y);
    return;
  }
  for (const Proj& p : projs) add_bias(p.bias, rows, int(p.w.size(0)), p.y);
}

// Adds scale * (x A^T) B^T to y, the unmerged LoRA path.
void add_lora(const LoraAdapter* ad, int layer, LoraTarget t, const float* x, int rows, float* y) {
  if (!ad || !ad->a(layer, t).defined()) return;
  const at::Tensor& A = ad->a(layer, t);
  const at::Tensor& B = ad->b(layer, t);
  const int r = int(A.size(0)), in = int(A.size(1)), out = int(B.size(0));
  std::vector<float> mid(std::size_t(rows) * r), delta(std::size_t(rows) * out);
  kernels::matvec_f32(A.data_ptr<float>(), x, mid.data(), rows, in, r);
  kernels::matvec_f32(B.data_ptr<float>(), mid.data(), delta.data(), rows, r, out);
  const float s = float(ad->scale());
  for (std::size_t i = 0; i < delta.size(); ++i) y[i] += s * delta[i];
}

void rmsnorm(const float* x, const float* w, float* y, int rows, int n, double eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + std::size_t(r) * n;
    float* yr = y + std::size_t(r) * n;
    const float ss = kernels::dot(xr, xr, n);
    const float inv = 1.0f / std::sqrt(ss / n + float(eps));
    for (int i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void rope(float* x, int heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = x + std::size_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

// One (token, head) of attention over its row's slots up to its own position.
struct AttentionJob {
  KVCache* cache;
  int layer, nh, group, hd, qd;
  float scale;
  const int* rows;       // each token's cache row (-1: padding)
  const int* positions;  // each token's position = its slot
  const float* q;
  float* att;
};

void attention_task(const void* p, int task) {
  const AttentionJob& j = *static_cast<const AttentionJob*>(p);
  thread_local std::vector<float> sc;
  const int r = task / j.nh, h = task % j.nh, b = j.rows[r], slot = j.positions[r], hd = j.hd;
  float* out = j.att + std::size_t(r) * j.qd + h * hd;
  if (b < 0) {  // padding: output unused
    std::fill_n(out, hd, 0.f);
    return;
  }
  if (int(sc.size()) < slot + 1) sc.resize(slot + 1);
  kernels::attend(j.q + std::size_t(r) * j.qd + h * hd, j.cache->keys(j.layer, b, h / j.group),
                  j.cache->values(j.layer, b, h / j.group), slot, hd, j.scale, sc.data(), out);
}

}  // namespace

std::vector<float> Model::embed(std::span<const TokenId> tokens) const {
  const int h = impl_->config.hidden_size, vocab = impl_->config.vocab_size;
  std::vector<float> out(tokens.size() * h);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const TokenId id = tokens[i];
    if (id < 0 || id >= vocab)
      throw Error(ErrorKind::kInvalidInput, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                                std::to_string(vocab));
    weight_row_to_f32(impl_->embed, id, out.data() + i * h);
  }
  return out;
}

void Model::forward_layers(std::span<float> hidden, std::span<const std::uint8_t> mask, int batch,
                           int steps, int begin, int end, KVCache& cache) {
  const int rows = batch * steps;
  if (begin != cache.layer_begin() || end != cache.layer_end() || batch != cache.batch())
    throw Error(ErrorKind::kInvalidInput, "KV cache covers layers [" + std::to_string(cache.layer_begin()) +
                                              ", " + std::to_string(cache.layer_end()) + ") for batch " +
                                              std::to_string(cache.batch()) + ", not the requested run");
  if (hidden.size() != std::size_t(rows) * impl_->config.hidden_size)
    throw Error(ErrorKind::kInvalidInput, "hidden states have " + std::to_string(hidden.size()) +
                                              " values, expected batch*steps*hidden = " +
                                              std::to_string(std::size_t(rows) * impl_->config.hidden_size));
  if (!mask.empty() && mask.size() != std::size_t(rows))
    throw Error(ErrorKind::kInvalidInput, "attention mask size does not match batch*steps");
  std::vector<int> row_of(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) row_of[std::size_t(r)] = mask.empty() || mask[std::size_t(r)] ? r / steps : -1;
  const std::vector<int> pos = cache.append_rows(row_of);
  run_layers(hidden, row_of, pos, begin, end, cache);
}

void Model::run_layers(std::span<float> hidden, std::span<const int> row_of, std::span<const int> pos, int begin,
                       int end, KVCache& cache) {
  const ModelConfig& c = impl_->config;
  const int rows = int(row_of.size()), H = c.hidden_size, hd = c.head_dim, half = hd / 2;
  const int nh = c.num_heads, nkv = c.num_kv_heads, qd = c.q_dim(), kvd = c.kv_dim(), I = c.intermediate_size;
  int longest = 0;  // attention work grows with the positions attended to
  for (int p : pos) longest = std::max(longest, p + 1);
  const LoraAdapter* ad = impl_->active_adapter();
  std::vector<float> xn(std::size_t(rows) * H), q(std::size_t(rows) * qd), k(std::size_t(rows) * kvd),
      v(std::size_t(rows) * kvd), att(std::size_t(rows) * qd), o(std::size_t(rows) * H),
      g(std::size_t(rows) * I), u(std::size_t(rows) * I);
  float* x = hidden.data();
  const float scale = 1.0f / std::sqrt(float(hd));
  const int group = nh / nkv;
  for (int l = begin; l < end; ++l) {
    const LayerWeights& W = impl_->layers[l];
    rmsnorm(x, W.attn_norm.data_ptr<float>(), xn.data(), rows, H, c.rms_norm_eps);
    linear_group({{W.wq, W.bq, q.data()}, {W.wk, W.bk, k.data()}, {W.wv, W.bv, v.data()}}, xn.data(), rows);
    add_lora(ad, l, LoraTarget::kQ, xn.data(), rows, q.data());
    add_lora(ad, l, LoraTarget::kK, xn.data(), rows, k.data());
    add_lora(ad, l, LoraTarget::kV, xn.data(), rows, v.data());
    for (int r = 0; r < rows; ++r) {
      const int b = row_of[r], p = std::max(pos[r], 0);  // padding: any position, never stored
      const float* cs = impl_->rope_cos.data() + std::size_t(p) * half;
      const float* sn = impl_->rope_sin.data() + std::size_t(p) * half;
      rope(q.data() + std::size_t(r) * qd, nh, hd, cs, sn);
      rope(k.data() + std::size_t(r) * kvd, nkv, hd, cs, sn);
      if (b < 0) continue;
      for (int kh = 0; kh < nkv; ++kh) {
        std::copy_n(k.data() + std::size_t(r) * kvd + kh * hd, hd, cache.keys(l, b, kh) + std::size_t(p) * hd);
        std::copy_n(v.data() + std::size_t(r) * kvd + kh * hd, hd, cache.values(l, b, kh) + std::size_t(p) * hd);
      }
    }
    AttentionJob job{&cache, l, nh, group, hd, qd, scale, row_of.data(), pos.data(), q.data(), att.data()};
    // Split over heads once there are ~1 us of work a thread: a job on the
    // decode pool costs ~1 us at 2 threads on the 2-core VM, and
    // a head over 64 positions takes ~1.3 us here.
    kernels::parallel_for(rows * nh, attention_task, &job, rows * nh * longest > 512);
    linear(W.wo, {}, att.data(), rows, o.data());
    add_lora(ad, l, LoraTarget::kO, att.data(), rows, o.data());
    for (std::size_t i = 0; i < o.size(); ++i) x[i] += o[i];
    rmsnorm(x, W.mlp_norm.data_ptr<float>(), xn.data(), rows, H, c.rms_norm_eps);
    const at::Tensor none;
    linear_group({{W.wgate, none, g.data()}, {W.wup, none, u.data()}}, xn.data(), rows);
    add_lora(ad, l, LoraTarget::kGate, xn.data(), rows, g.data());
    add_lora(ad, l, LoraTarget::kUp, xn.data(), rows, u.data());
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    linear(W.wdown, {}, g.data(), rows, o.data());
    add_lora(ad, l, LoraTarget::kDown, g.data(), rows, o.data());
    for (std::size_t i = 0; i < o.size(); ++i) x[i] += o[i];
  }
}

std::vector<float> Model::logits(std::span<const float> hidden, int rows) {
  const int H = impl_->config.hidden_size, V = impl_->config.vocab_size;
  if (hidden.size() != std::size_t(rows) * H)
    throw Error(ErrorKind::kInvalidInput, "hidden states size does not match rows*hidden_size");
  std::vector<float> xn(hidden.size()), out(std::size_t(rows) * V);
  rmsnorm(hidden.data(), impl_->norm.data_ptr<float>(), xn.data(), rows, H, impl_->config.rms_norm_eps);
  linear(impl_->head, {}, xn.data(), rows, out.data());
  return out;
}

std::vector<float> Model::forward(std::span<const TokenId> tokens, std::span<const std::uint8_t> mask,
                                  int batch, int steps, KVCache& cache, bool all_logits) {
  if (tokens.size() != std::size_t(batch) * steps || steps <= 0)
    throw Error(ErrorKind::kInvalidInput, "forward: tokens must hold batch*steps ids");
  // Padding slots may carry any id; feed id 0 there so lookups stay in range.
  std::vector<TokenId> ids(tokens.begin(), tokens.end());
  if (!mask.empty())
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (!mask[i]) ids[i] = 0;
  std::vector<float> hidden = embed(ids);
  forward_layers(hidden, mask, batch, steps, 0, impl_->config.num_layers, cache);
  if (all_logits) return logits(hidden, batch * steps);
  const int H = impl_->config.hidden_size;
  std::vector<float> last(std::size_t(batch) * H);
  for (int b = 0; b < batch; ++b) {
    int t = steps - 1;
    if (!mask.empty())
      for (int s = steps - 1; s >= 0; --s)
        if (mask[std::size_t(b) * steps + s]) { t = s; break; }
    std::copy_n(hidden.data() + (std::size_t(b) * steps + t) * H, H, last.data() + std::size_t(b) * H);
  }
  return logits(last, batch);
}

std::vector<float> Model::forward_rows(std::span<const RowTokens> rows, KVCache& cache) {
  const ModelConfig& c = impl_->config;
  if (rows.empty()) throw Error(ErrorKind::kInvalidInput, "forward_rows: no sequence to run");
  if (cache.layer_begin() != 0 || cache.layer_end() != c.num_layers)
    throw Error(ErrorKind::kInvalidInput, "forward_rows needs a KV cache of all the model's layers");
  std::vector<TokenId> ids;
  std::vector<int> row_of;
  std::vector<char> seen(std::size_t(cache.batch()), 0);
  for (const RowTokens& r : rows) {
    if (r.tokens.empty()) throw Error(ErrorKind::kInvalidInput, "forward_rows: a sequence has no new token");
    if (r.row < 0 || r.row >= cache.batch() || seen[std::size_t(r.row)]++)
      throw Error(ErrorKind::kInvalidInput, "forward_rows: row " + std::to_string(r.row) +
                                                " is outside the cache or listed twice");
    ids.insert(ids.end(), r.tokens.begin(), r.tokens.end());
    row_of.insert(row_of.end(), r.tokens.size(), r.row);
  }
  std::vector<float> hidden = embed(ids);
  const std::vector<int> pos = cache.append_rows(row_of);
  run_layers(hidden, row_of, pos, 0, c.num_layers, cache);
  const int H = c.hidden_size;
  std::vector<float> last(rows.size() * std::size_t(H));
  std::size_t end = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    end += rows[i].tokens.size();
    std::copy_n(hidden.data() + (end - 1) * H, H, last.data() + i * H);
  }
  return logits(last, int(rows.size()));
}

// ---------------- LoRA management ----------------
void Model::add_adapter(const std::string& name, LoraAdapter adapter) {
  const ModelConfig& a = adapter.model_config();
  const ModelConfig& m = impl_->config;
  if (a.hidden_size != m.hidden_size || a.num_layers != m.num_layers || a.q_dim() != m.q_dim() ||
      a.kv_dim() != m.kv_dim() || a.intermediate_size != m.intermediate_size)
    throw Error(ErrorKind::kInvalidInput, "adapter '" + name + "' was made for a model of another shape");
  if (name.empty()) throw Error(ErrorKind::kInvalidInput, "adapter name must not be empty");
  if (name == impl_->merged)
    throw Error(ErrorKind::kInvalidInput, "adapter '" + name + "' is merged; unmerge it before replacing it");
  impl_->adapters.insert_or_assign(name, std::move(adapter));
}

void Model::remove_adapter(const std::string& name) {
  if (name == impl_->merged) unmerge_adapter();
  if (!impl_->adapters.erase(name))
    throw Error(ErrorKind::kNotFound, "no adapter named '" + name + "' is loaded");
  if (impl_->active == name) impl_->active.clear();
}

void Model::set_active_adapter(const std::string& name) {
  if (!name.empty() && !impl_->adapters.count(name))
    throw Error(ErrorKind::kNotFound, "no adapter named '" + name + "' is loaded");
  if (!name.empty() && !impl_->merged.empty())
    throw Error(ErrorKind::kInvalidInput, "adapter '" + impl_->merged +
                                              "' is merged into the weights; unmerge it before activating another");
  impl_->active = name;
}

const std::string& Model::active_adapter() const { return impl_->active; }
LoraAdapter* Model::adapter(const std::string& name) {
  auto it = impl_->adapters.find(name);
  return it == impl_->adapters.end() ? nullptr : &it->second;
}
std::vector<std::string> Model::adapter_names() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : impl_->adapters) names.push_back(n);
  return names;
}
const std::string& Model::merged_adapter() const { return impl_->merged; }

namespace {
// Adds sign * scale * B A to each target weight of the adapter. Weights in
// `skip` are left alone (unmerge puts their originals back instead).
void apply_delta(Model::Impl& m, const LoraAdapter& ad, double sign, const std::set<const at::Tensor*>& skip = {}) {
  at::NoGradGuard guard;
  for (int l = 0; l < m.config.num_layers; ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      auto target = LoraTarget(t);
      if (!ad.a(l, target).defined()) continue;
      at::Tensor& w = m.layers[l].proj(target);
      if (skip.count(&w)) continue;
      if (!m.owns(w)) {
        // Copy on write: the file map is read-only and other Models share
        // the original.
        m.pre_merge.emplace_back(&w, w);
        w = w.clone();
      }
      // Accumulate in double so unmerge restores the weights to within rounding.
      auto delta = at::mm(ad.b(l, target).to(at::kDouble), ad.a(l, target).to(at::kDouble)) * (sign * ad.scale());
      w.copy_((w.to(at::kDouble) + delta).to(at::kFloat));
    }
}
}  // namespace

void Model::merge_adapter(const std::string& name) {
  if (impl_->wtype != WeightType::kF32)
    throw Error(ErrorKind::kInvalidInput, std::string("merging an adapter needs f32 weights, and this model's are ") +
                                              weight_type_name(impl_->wtype) + "; load the model in f32");
  if (!impl_->merged.empty())
    throw Error(ErrorKind::kInvalidInput, "adapter '" + impl_->merged + "' is already merged; unmerge it first");
  auto it = impl_->adapters.find(name);
  if (it == impl_->adapters.end()) throw Error(ErrorKind::kNotFound, "no adapter named '" + name + "' is loaded");
  apply_delta(*impl_, it->second, +1.0);
  impl_->merged = name;
  impl_->active.clear();
}

void Model::unmerge_adapter() {
  if (impl_->merged.empty()) return;
  std::set<const at::Tensor*> restored;
  for (auto& [slot, original] : impl_->pre_merge) {
    *slot = original;  // exact, and the private copy is freed
    restored.insert(slot);
  }
  impl_->pre_merge.clear();
  apply_delta(*impl_, impl_->adapters.at(impl_->merged), -1.0, restored);
  impl_->merged.clear();
}

}  // namespace fedge::inference
