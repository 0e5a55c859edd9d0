// The autograd forward pass used for LoRA training: ATen ops over [B, T]
// batches, base weights frozen (they never require grad), gradients flow into
// the active adapter's A and B.
//
// Memory and speed matter here (the 135M model at batch 4 x 256 held ~3.9 GB
// with the plain graph), so two pieces are hand-written autograd Functions:
// RoPE (saves only its cos/sin tables, its backward is the inverse rotation)
// and an optional per-layer checkpoint (saves only the layer's input and
// recomputes the layer in backward).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "fedge/common/error.h"
#include "fedge/inference/frozen_bf16.h"
#include "kernels_causal_attention.h"
#include "kernels_frozen_bf16.h"
#include "model_impl.h"

namespace fedge::inference {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// f16 and quantized weights: held packed, widened only for the product.
bool packed(const at::Tensor& w) {
  return w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16;
}

// RMS norm with a frozen weight, keeping only x and 1/rms for backward
// (the plain graph keeps the normalised x too, and takes more passes).
struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double eps) {
    at::Tensor rstd = at::rsqrt(x.pow(2).mean(-1, true).add_(eps));
    ctx->save_for_backward({x, rstd});
    ctx->saved_data["w"] = w;
    return (x * rstd).mul_(w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &rstd = saved[1];
    at::Tensor n = x * rstd;
    at::Tensor dn = grads[0] * ctx->saved_data["w"].toTensor();
    at::Tensor dx = (dn - n * (dn * n).mean(-1, true)).mul_(rstd);
    return {dx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  if (!w.requires_grad()) return RmsNorm::apply(x, w, eps);
  return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

// out = rotate(x) by (cos, sign * sin) on the two halves of the last axis:
// out1 = x1 c - s x2, out2 = x2 c + s x1. sign -1 is the inverse rotation.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double sign) {
  const auto half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor o1 = out.narrow(-1, 0, half), o2 = out.narrow(-1, half, half);
  at::mul_out(o1, x1, cos);
  o1.addcmul_(x2, sin, -sign);
  at::mul_out(o2, x2, cos);
  o2.addcmul_(x1, sin, sign);
  return out;
}

// Rotary embedding on x [B, T, heads, head_dim] with half tables [B, T, 1, head_dim/2];
// saves nothing but the tables.
struct Rope : torch::autograd::Function<Rope> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rotate(x, cos, sin, 1.0);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor g = rotate(grads[0], ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), -1.0);
    return {g, at::Tensor(), at::Tensor()};
  }
};

// y = x W^T for a frozen W: backward needs only W, so unlike
// at::linear's graph this keeps no reference to the activation x.
struct FrozenLinear : torch::autograd::Function<FrozenLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->saved_data["w"] = w;
    return at::linear(x, w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {at::matmul(grads[0], ctx->saved_data["w"].toTensor()), at::Tensor()};
  }
};

// y = x W^T for a frozen packed W (f16, Q8_0, Q4_0: QLoRA's base): W is
// widened to f32 for the forward product and again for backward's, so the
// graph holds the packed matrix only, never an f32 copy per layer.
struct FrozenPackedLinear : torch::autograd::Function<FrozenPackedLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->saved_data["w"] = w;
    return at::linear(x, weight_to_f32(w));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {at::matmul(grads[0], weight_to_f32(ctx->saved_data["w"].toTensor())), at::Tensor()};
  }
};

// Rows of the token embedding for `tokens` [B, T] -> [B, T, hidden]; a packed
// table is widened row by row (it is frozen: no gradient).
at::Tensor embedding_rows(const at::Tensor& table, const at::Tensor& tokens) {
  if (!packed(table)) return at::embedding(weight_to_f32(table), tokens);
  const int64_t hidden = in_features(table);
  at::Tensor ids = tokens.flatten().contiguous();
  at::Tensor out = at::empty({ids.numel(), hidden}, at::kFloat);
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) weight_row_to_f32(table, id[i], out.data_ptr<float>() + i * hidden);
  auto shape = tokens.sizes().vec();
  shape.push_back(hidden);
  return out.view(shape);
}

// silu(g) * u, keeping only g and u (silu is recomputed in backward).
struct SwiGlu : torch::autograd::Function<SwiGlu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& u) {
    ctx->save_for_backward({g, u});
    return at::silu(g).mul_(u);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1], &dy = grads[0];
    at::Tensor du = at::silu(g).mul_(dy);
    at::Tensor dg = at::silu_backward(dy * u, g);
    return {dg, du};
  }
};

at::Tensor rope_plain(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * at::cat({cos, cos}, -1) + rotated * at::cat({sin, sin}, -1);
}

at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const LoraAdapter* ad,
                   int layer, LoraTarget t, double dropout, bool training) {
  const bool frozen = !w.requires_grad() && !(bias.defined() && bias.requires_grad());
  at::Tensor y;
  if (frozen) {
    // bf16 operands when the caller asked for them (FrozenBaseBf16), for a
    // packed base too (widened to bf16 for each product only).
    if (FrozenBaseBf16::active()) y = frozen_linear_bf16(x, w);
    else y = packed(w) ? FrozenPackedLinear::apply(x, w) : FrozenLinear::apply(x, weight_to_f32(w));
    if (bias.defined()) y = y + bias;
  } else {
    y = at::linear(x, weight_to_f32(w), bias.defined() ? bias : at::Tensor());
  }
  if (ad && ad->a(layer, t).defined()) {
    at::Tensor xin = dropout > 0 && training ? at::dropout(x, dropout, true) : x;
    y = y + at::linear(at::linear(xin, ad->a(layer, t)), ad->b(layer, t)) * ad->scale();
  }
  return y;
}

// What every layer of one forward_train call shares.
struct Pass : torch::CustomClassHolder {
  const Model::Impl* impl = nullptr;
  const LoraAdapter* ad = nullptr;
  int64_t B = 0, T = 0;
  double dropout = 0.0;
  bool training = false;
  bool frozen_bf16 = false;  // FrozenBaseBf16 at forward time (a checkpoint recomputes the same way)
  at::Tensor cos, sin;  // [B, T, 1, head_dim/2]
  at::Tensor bias;      // additive attention mask [B * kv_heads, group * T, T]
};

at::Tensor layer_forward(const Pass& s, int l, const at::Tensor& x) {
  const ModelConfig& c = s.impl->config;
  const LayerWeights& W = s.impl->layers[l];
  const int64_t B = s.B, T = s.T, nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, g = nh / nkv;
  const LoraAdapter* ad = s.ad;
  at::Tensor xn = rms_norm(x, W.attn_norm, c.rms_norm_eps);
  at::Tensor q = project(xn, W.wq, W.bq, ad, l, LoraTarget::kQ, s.dropout, s.training).view({B, T, nh, hd});
  at::Tensor k = project(xn, W.wk, W.bk, ad, l, LoraTarget::kK, s.dropout, s.training).view({B, T, nkv, hd});
  at::Tensor v = project(xn, W.wv, W.bv, ad, l, LoraTarget::kV, s.dropout, s.training).view({B, T, nkv, hd});
  // Frozen base: the memory-lean hand-written Functions (also without grad, so
  // a checkpointed layer recomputes exactly what its forward computed);
  // trainable base (pretraining, and tests' reference): the plain autograd
  // formulas.
  const bool lean = !W.wq.requires_grad();
  q = lean ? Rope::apply(q, s.cos, s.sin) : rope_plain(q, s.cos, s.sin);
  k = lean ? Rope::apply(k, s.cos, s.sin) : rope_plain(k, s.cos, s.sin);
  // Grouped-query attention without repeating K and V: the `g` query heads
  // that share a KV head are stacked along the query axis.
  at::Tensor q3 = q.transpose(1, 2).reshape({B * nkv, g * T, hd});
  at::Tensor k3 = k.transpose(1, 2).reshape({B * nkv, T, hd});
  at::Tensor v3 = v.transpose(1, 2).reshape({B * nkv, T, hd});
  const double scale = 1.0 / std::sqrt(double(hd));
  // Frozen base: only the unmasked (causal) part of the scores is computed.
  at::Tensor o3 = lean ? causal_attention(q3, k3, v3, s.bias, g, scale)
                       : at::bmm(at::softmax(at::baddbmm(s.bias, q3, k3.transpose(1, 2), 1.0, scale), -1), v3);
  at::Tensor att = o3.view({B, nh, T, hd}).transpose(1, 2).reshape({B, T, nh * hd});
  at::Tensor h = x + project(att, W.wo, {}, ad, l, LoraTarget::kO, s.dropout, s.training);
  xn = rms_norm(h, W.mlp_norm, c.rms_norm_eps);
  at::Tensor gate = project(xn, W.wgate, {}, ad, l, LoraTarget::kGate, s.dropout, s.training);
  at::Tensor up = project(xn, W.wup, {}, ad, l, LoraTarget::kUp, s.dropout, s.training);
  return h + project(lean ? SwiGlu::apply(gate, up) : at::silu(gate) * up, W.wdown, {}, ad, l, LoraTarget::kDown, s.dropout, s.training);
}

// Tensors of layer `l` that get gradients: the adapter's A/B and, in
// full-parameter training, the base weights.
std::vector<at::Tensor> layer_params(const Pass& s, int l) {
  std::vector<at::Tensor> out;
  const LayerWeights& W = s.impl->layers[l];
  for (const at::Tensor* t : {&W.attn_norm, &W.mlp_norm, &W.wq, &W.wk, &W.wv, &W.wo, &W.wgate, &W.wup, &W.wdown,
                              &W.bq, &W.bk, &W.bv}) {
    if (t->defined() && t->requires_grad()) out.push_back(*t);
  }
  if (s.ad) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      for (const at::Tensor* m : {&s.ad->a(l, LoraTarget(t)), &s.ad->b(l, LoraTarget(t))}) {
        if (m->defined() && m->requires_grad()) out.push_back(*m);
      }
    }
  }
  return out;
}

// Gradient checkpoint of one layer: forward without a graph, keeping only the
// input (and the RNG state, so dropout masks repeat); backward re-runs the
// layer with a graph and differentiates it.
struct LayerCheckpoint : torch::autograd::Function<LayerCheckpoint> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            const c10::intrusive_ptr<Pass>& pass, int64_t layer) {
    ctx->save_for_backward({x});
    ctx->saved_data["pass"] = c10::IValue::make_capsule(pass);
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["n"] = static_cast<int64_t>(params.size());
    if (pass->dropout > 0 && pass->training) ctx->saved_data["rng"] = at::detail::getDefaultCPUGenerator().get_state();
    return layer_forward(*pass, static_cast<int>(layer), x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto pass = c10::static_intrusive_pointer_cast<Pass>(ctx->saved_data["pass"].toCapsule());
    const int layer = static_cast<int>(ctx->saved_data["layer"].toInt());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    std::vector<at::Tensor> inputs{x};
    for (auto& p : layer_params(*pass, layer)) inputs.push_back(p);
    if (static_cast<int64_t>(inputs.size()) - 1 != ctx->saved_data["n"].toInt())
      throw Error(ErrorKind::kRuntime, "gradient checkpoint: layer parameters changed between forward and backward");
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      FrozenBaseBf16 precision(pass->frozen_bf16);
      auto gen = at::detail::getDefaultCPUGenerator();
      at::Tensor now;
      if (ctx->saved_data.count("rng")) {
        now = gen.get_state();
        gen.set_state(ctx->saved_data["rng"].toTensor());
      }
      y = layer_forward(*pass, layer, x);
      if (now.defined()) gen.set_state(now);
    }
    variable_list out = torch::autograd::grad({y}, inputs, {grads[0]}, false, false, true);
    out.push_back(at::Tensor());  // pass
    out.push_back(at::Tensor());  // layer
    return out;
  }
};

}  // namespace

at::Tensor Model::forward_train_hidden(const at::Tensor& tokens_in, const at::Tensor& attention_mask, bool training,
                                       int checkpoint_layers) {
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
  auto pass = c10::make_intrusive<Pass>();
  pass->impl = impl_.get();
  pass->ad = impl_->active_adapter();
  pass->dropout = pass->ad ? pass->ad->config().dropout : 0.0;
  pass->training = training;
  pass->frozen_bf16 = FrozenBaseBf16::active();
  pass->B = B;
  pass->T = T;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, g = nh / nkv;

  at::Tensor pos = (mask.cumsum(1) - 1).clamp_min(0);  // per-row positions (left padding)
  pass->cos = impl_->rope_cos_t.index_select(0, pos.flatten()).view({B, T, 1, hd / 2});
  pass->sin = impl_->rope_sin_t.index_select(0, pos.flatten()).view({B, T, 1, hd / 2});
  // Additive mask, built once for all layers: causal and key-not-padding;
  // finite so fully padded query rows stay NaN-free (their outputs are ignored).
  at::Tensor allowed = at::ones({T, T}, at::kBool).tril().view({1, 1, T, T}) &
                       mask.to(at::kBool).view({B, 1, 1, T});
  at::Tensor bias = at::zeros({B, 1, T, T}, at::kFloat).masked_fill(allowed.logical_not(), -1e9);
  pass->bias = bias.view({B, 1, 1, T, T}).expand({B, nkv, g, T, T}).reshape({B * nkv, g * T, T});

  at::Tensor x = embedding_rows(impl_->embed, tokens);
  const int checkpointed = at::GradMode::is_enabled() ? checkpoint_layers : 0;
  for (int l = 0; l < c.num_layers; ++l) {
    if (l < checkpointed) {
      auto params = layer_params(*pass, l);
      x = LayerCheckpoint::apply(x, at::TensorList(params), pass, static_cast<int64_t>(l));
    } else {
      x = layer_forward(*pass, l, x);
    }
  }
  return rms_norm(x, impl_->norm, c.rms_norm_eps);
}

at::Tensor Model::forward_train(const at::Tensor& tokens, const at::Tensor& attention_mask, bool training) {
  at::Tensor hidden = forward_train_hidden(tokens, attention_mask, training);
  if (packed(impl_->head)) return FrozenPackedLinear::apply(hidden, impl_->head);
  return at::linear(hidden, weight_to_f32(impl_->head));
}

}  // namespace fedge::inference
