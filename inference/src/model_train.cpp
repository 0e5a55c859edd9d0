// The autograd forward pass used for LoRA training: ATen ops over [B, T]
// batches, base weights frozen (they never require grad), gradients flow into
// the active adapter's A and B.
#include <ATen/ATen.h>

#include <cmath>

#include "fedge/common/error.h"
#include "model_impl.h"

namespace fedge::inference {
namespace {

at::Tensor as_f32(const at::Tensor& w) { return w.scalar_type() == at::kFloat ? w : w.to(at::kFloat); }

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

at::Tensor rotate_half(const at::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const LoraAdapter* ad,
                   int layer, LoraTarget t, double dropout, bool training) {
  at::Tensor y = at::linear(x, as_f32(w), bias.defined() ? bias : at::Tensor());
  if (ad && ad->a(layer, t).defined()) {
    at::Tensor xin = dropout > 0 && training ? at::dropout(x, dropout, true) : x;
    y = y + at::linear(at::linear(xin, ad->a(layer, t)), ad->b(layer, t)) * ad->scale();
  }
  return y;
}

}  // namespace

at::Tensor Model::forward_train(const at::Tensor& tokens_in, const at::Tensor& attention_mask, bool training) {
  const ModelConfig& c = impl_->config;
  if (tokens_in.dim() != 2)
    throw Error(ErrorKind::kInvalidInput, "forward_train: tokens must be [batch, steps]");
  const int64_t B = tokens_in.size(0), T = tokens_in.size(1);
  if (T > c.context_length())
    throw Error(ErrorKind::kInvalidInput, "forward_train: " + std::to_string(T) +
                                              " steps exceed the model's context of " +
                                              std::to_string(c.context_length()));
  at::Tensor tokens = tokens_in.to(at::kLong);
  if (tokens.numel() > 0 && (tokens.min().item<int64_t>() < 0 || tokens.max().item<int64_t>() >= c.vocab_size))
    throw Error(ErrorKind::kInvalidInput, "forward_train: token id outside the vocabulary");
  at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kLong) : at::ones({B, T}, at::kLong);
  if (mask.sizes() != tokens.sizes())
    throw Error(ErrorKind::kInvalidInput, "forward_train: attention_mask must match tokens' shape");
  const LoraAdapter* ad = impl_->active_adapter();
  const double dropout = ad ? ad->config().dropout : 0.0;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;

  at::Tensor pos = (mask.cumsum(1) - 1).clamp_min(0);  // per-row positions (left padding)
  at::Tensor cos = impl_->rope_cos_t.index_select(0, pos.flatten()).view({B, 1, T, hd / 2});
  at::Tensor sin = impl_->rope_sin_t.index_select(0, pos.flatten()).view({B, 1, T, hd / 2});
  cos = at::cat({cos, cos}, -1);
  sin = at::cat({sin, sin}, -1);
  // Additive mask: causal and key-not-padding; finite so fully padded query
  // rows stay NaN-free (their outputs are ignored).
  at::Tensor allowed = at::ones({T, T}, at::kBool).tril().view({1, 1, T, T}) &
                       mask.to(at::kBool).view({B, 1, 1, T});
  at::Tensor bias = at::zeros({B, 1, T, T}, at::kFloat).masked_fill(allowed.logical_not(), -1e9);

  at::Tensor x = at::embedding(as_f32(impl_->embed), tokens);
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& W = impl_->layers[l];
    at::Tensor xn = rms_norm(x, W.attn_norm, c.rms_norm_eps);
    at::Tensor q = project(xn, W.wq, W.bq, ad, l, LoraTarget::kQ, dropout, training).view({B, T, nh, hd}).transpose(1, 2);
    at::Tensor k = project(xn, W.wk, W.bk, ad, l, LoraTarget::kK, dropout, training).view({B, T, nkv, hd}).transpose(1, 2);
    at::Tensor v = project(xn, W.wv, W.bv, ad, l, LoraTarget::kV, dropout, training).view({B, T, nkv, hd}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    if (nh != nkv) {
      k = k.repeat_interleave(nh / nkv, 1);
      v = v.repeat_interleave(nh / nkv, 1);
    }
    at::Tensor p = at::softmax(at::matmul(q, k.transpose(-1, -2)) * scale + bias, -1);
    at::Tensor att = at::matmul(p, v).transpose(1, 2).reshape({B, T, nh * hd});
    x = x + project(att, W.wo, {}, ad, l, LoraTarget::kO, dropout, training);
    xn = rms_norm(x, W.mlp_norm, c.rms_norm_eps);
    at::Tensor g = project(xn, W.wgate, {}, ad, l, LoraTarget::kGate, dropout, training);
    at::Tensor u = project(xn, W.wup, {}, ad, l, LoraTarget::kUp, dropout, training);
    x = x + project(at::silu(g) * u, W.wdown, {}, ad, l, LoraTarget::kDown, dropout, training);
  }
  x = rms_norm(x, impl_->norm, c.rms_norm_eps);
  return at::linear(x, as_f32(impl_->head));
}

}  // namespace fedge::inference
