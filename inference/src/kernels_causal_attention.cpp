#include "kernels_causal_attention.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace fedge::inference {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Query rows per block: small enough that the skipped triangle is most of the
// masked half, large enough that each product stays an efficient GEMM.
constexpr int64_t kBlock = 64;

// Rows [r0, r0 + n) of every stacked head of x [N, g*T, d], as [N, g*n, d].
at::Tensor rows(const at::Tensor& x, int64_t g, int64_t r0, int64_t n) {
  const int64_t N = x.size(0), T = x.size(1) / g, d = x.size(2);
  return x.view({N, g, T, d}).narrow(2, r0, n).reshape({N, g * n, d});
}

// Writes block [N, g*n, d] back to rows [r0, r0 + n) of x [N, g*T, d].
void put_rows(at::Tensor& x, const at::Tensor& block, int64_t g, int64_t r0, int64_t n) {
  const int64_t N = x.size(0), T = x.size(1) / g, d = x.size(2);
  x.view({N, g, T, d}).narrow(2, r0, n).copy_(block.view({N, g, n, d}));
}

struct CausalAttention : torch::autograd::Function<CausalAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& bias, int64_t g, double scale) {
    const int64_t T = k.size(1);
    at::Tensor out = at::empty_like(q, at::MemoryFormat::Contiguous);
    std::vector<at::Tensor> saved{q, k, v};
    for (int64_t r0 = 0; r0 < T; r0 += kBlock) {
      const int64_t n = std::min(kBlock, T - r0), keys = r0 + n;
      at::Tensor b = rows(bias, g, r0, n).narrow(2, 0, keys);
      at::Tensor p = at::softmax(at::baddbmm(b, rows(q, g, r0, n), k.narrow(1, 0, keys).transpose(1, 2), 1.0, scale), -1);
      put_rows(out, at::bmm(p, v.narrow(1, 0, keys)), g, r0, n);
      saved.push_back(p);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["g"] = g;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const int64_t g = ctx->saved_data["g"].toInt(), T = k.size(1);
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool want_q = ctx->needs_input_grad(0), want_k = ctx->needs_input_grad(1), want_v = ctx->needs_input_grad(2);
    at::Tensor dout = grads[0].contiguous();
    at::Tensor dq = want_q ? at::empty_like(q, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor dk = want_k ? at::zeros_like(k, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor dv = want_v ? at::zeros_like(v, at::MemoryFormat::Contiguous) : at::Tensor();
    std::size_t block = 3;
    for (int64_t r0 = 0; r0 < T; r0 += kBlock, ++block) {
      const int64_t n = std::min(kBlock, T - r0), keys = r0 + n;
      const at::Tensor& p = saved[block];
      at::Tensor dob = rows(dout, g, r0, n);
      if (want_v) dv.narrow(1, 0, keys).add_(at::bmm(p.transpose(1, 2), dob));
      if (!want_q && !want_k) continue;
      // d scores = p * (dp - rowsum(dp * p)), dp = dout v^T
      at::Tensor ds = at::_softmax_backward_data(at::bmm(dob, v.narrow(1, 0, keys).transpose(1, 2)), p, -1, at::kFloat);
      if (want_q) put_rows(dq, at::bmm(ds, k.narrow(1, 0, keys)).mul_(scale), g, r0, n);
      if (want_k) dk.narrow(1, 0, keys).add_(at::bmm(ds.transpose(1, 2), rows(q, g, r0, n)), scale);
    }
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                            int64_t g, double scale) {
  return CausalAttention::apply(q, k, v, bias, g, scale);
}

}  // namespace fedge::inference
