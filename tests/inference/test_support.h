// Shared helpers for the inference tests: random HF checkpoints on disk and a
// plain double-precision reference of the Llama forward pass, written
// independently of the libtorch engine (loops over std::vector<double>).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fedge/common/safetensors.h"

namespace fedge::test {

struct Shape {
  int hidden = 32, inter = 48, layers = 2, heads = 4, kv_heads = 2, vocab = 50, max_pos = 64;
  bool tied = true, bias = false;
  std::string dtype = "F32";  // on-disk dtype
  std::string rope = "default";  // or "llama3"
  double theta = 10000.0;
  int head_dim() const { return hidden / heads; }
};

using Weights = std::map<std::string, std::vector<double>>;

inline std::filesystem::path fresh_dir(const std::string& name) {
  static int counter = 0;
  auto dir = std::filesystem::temp_directory_path() /
             ("fedge_inference_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline nlohmann::json config_json(const Shape& s) {
  nlohmann::json j = {{"architectures", {s.bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                      {"model_type", s.bias ? "qwen2" : "llama"},
                      {"hidden_size", s.hidden},
                      {"intermediate_size", s.inter},
                      {"num_hidden_layers", s.layers},
                      {"num_attention_heads", s.heads},
                      {"num_key_value_heads", s.kv_heads},
                      {"vocab_size", s.vocab},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", s.theta},
                      {"max_position_embeddings", s.max_pos},
                      {"tie_word_embeddings", s.tied},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2}};
  if (s.rope == "llama3")
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  return j;
}

inline std::vector<std::pair<std::string, std::vector<std::int64_t>>> tensor_shapes(const Shape& s) {
  const std::int64_t H = s.hidden, I = s.inter, Q = s.heads * s.head_dim(), KV = s.kv_heads * s.head_dim();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {s.vocab, H}});
  for (int l = 0; l < s.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "post_attention_layernorm.weight", {H}});
    out.push_back({p + "self_attn.q_proj.weight", {Q, H}});
    out.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    out.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    out.push_back({p + "self_attn.o_proj.weight", {H, Q}});
    if (s.bias) {
      out.push_back({p + "self_attn.q_proj.bias", {Q}});
      out.push_back({p + "self_attn.k_proj.bias", {KV}});
      out.push_back({p + "self_attn.v_proj.bias", {KV}});
    }
    out.push_back({p + "mlp.gate_proj.weight", {I, H}});
    out.push_back({p + "mlp.up_proj.weight", {I, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  out.push_back({"model.norm.weight", {H}});
  if (!s.tied) out.push_back({"lm_head.weight", {s.vocab, H}});
  return out;
}

// Writes config.json + model.safetensors (or two shards + index) with random
// weights; returns the values exactly as stored (after f16/bf16 rounding).
inline Weights write_checkpoint(const std::filesystem::path& dir, const Shape& s, std::uint64_t seed,
                                bool sharded = false) {
  std::ofstream(dir / "config.json") << config_json(s).dump(2);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.2);
  Weights w;
  std::vector<std::vector<std::byte>> storage;
  std::vector<TensorView> views;
  const DType dt = parse_dtype(s.dtype);
  for (const auto& [name, shape] : tensor_shapes(s)) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<double> vals(n);
    const bool norm = name.find("norm") != std::string::npos;
    std::vector<std::byte> bytes(n * dtype_size(dt));
    for (std::int64_t i = 0; i < n; ++i) {
      float v = float(norm ? 1.0 + normal(rng) : normal(rng));
      if (dt == DType::kF16) {
        std::uint16_t h = f32_to_f16(v);
        v = f16_to_f32(h);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      } else if (dt == DType::kBF16) {
        std::uint16_t h = f32_to_bf16(v);
        v = bf16_to_f32(h);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      } else {
        std::memcpy(bytes.data() + 4 * i, &v, 4);
      }
      vals[i] = v;
    }
    w[name] = std::move(vals);
    storage.push_back(std::move(bytes));
    views.push_back({name, dt, shape, {}});
  }
  for (std::size_t i = 0; i < views.size(); ++i) views[i].data = storage[i];
  if (!sharded) {
    write_safetensors(dir / "model.safetensors", views);
  } else {
    const std::size_t half = views.size() / 2;
    std::vector<TensorView> a(views.begin(), views.begin() + half), b(views.begin() + half, views.end());
    write_safetensors(dir / "model-00001-of-00002.safetensors", a);
    write_safetensors(dir / "model-00002-of-00002.safetensors", b);
    nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
    for (auto& v : a) index["weight_map"][v.name] = "model-00001-of-00002.safetensors";
    for (auto& v : b) index["weight_map"][v.name] = "model-00002-of-00002.safetensors";
    std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  }
  return w;
}

// Reference: HF LlamaForCausalLM in double for one sequence (no padding).
// lora: optional extra delta per projection name ("model.layers.0.self_attn.q_proj"):
// W_eff = W + delta (delta [out*in] already scaled).
inline std::vector<double> reference_logits(const Weights& w, const Shape& s, const std::vector<int>& tokens,
                                            const std::map<std::string, std::vector<double>>& deltas = {}) {
  const int H = s.hidden, hd = s.head_dim(), nh = s.heads, nkv = s.kv_heads, I = s.inter, T = int(tokens.size());
  const int Q = nh * hd, KV = nkv * hd;
  auto mat = [&](const std::string& name, const std::vector<double>& x, int in, int out, const std::string& proj = {}) {
    const auto& W = w.at(name);
    const std::vector<double>* d = nullptr;
    if (auto it = deltas.find(proj); !proj.empty() && it != deltas.end()) d = &it->second;
    std::vector<double> y(out, 0.0);
    for (int j = 0; j < out; ++j) {
      double acc = 0;
      for (int i = 0; i < in; ++i) acc += (W[j * in + i] + (d ? (*d)[j * in + i] : 0.0)) * x[i];
      y[j] = acc;
    }
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::string& name) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = w.at(name)[i] * x[i] * inv;
    return y;
  };
  // inverse frequencies, with llama3 scaling (factor 8, low 1, high 4, original 16)
  std::vector<double> inv(hd / 2);
  for (int i = 0; i < hd / 2; ++i) {
    double f = std::pow(s.theta, -2.0 * i / hd);
    if (s.rope == "llama3") {
      const double wl = 2 * M_PI / f, low = 16.0 / 1.0, high = 16.0 / 4.0;
      if (wl > low) f = f / 8.0;
      else if (wl >= high) {
        const double sm = (16.0 / wl - 1.0) / (4.0 - 1.0);
        f = (1 - sm) * f / 8.0 + sm * f;
      }
    }
    inv[i] = f;
  }
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double c = std::cos(pos * inv[i]), sn = std::sin(pos * inv[i]);
        double& a = v[h * hd + i];
        double& b = v[h * hd + i + hd / 2];
        const double a0 = a, b0 = b;
        a = a0 * c - b0 * sn;
        b = b0 * c + a0 * sn;
      }
  };
  std::vector<std::vector<double>> x(T, std::vector<double>(H));
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < H; ++i) x[t][i] = w.at("model.embed_tokens.weight")[tokens[t] * H + i];
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      auto xn = norm(x[t], p + "input_layernorm.weight");
      q[t] = mat(p + "self_attn.q_proj.weight", xn, H, Q, p + "self_attn.q_proj");
      k[t] = mat(p + "self_attn.k_proj.weight", xn, H, KV, p + "self_attn.k_proj");
      v[t] = mat(p + "self_attn.v_proj.weight", xn, H, KV, p + "self_attn.v_proj");
      if (s.bias)
        for (int i = 0; i < Q; ++i) q[t][i] += w.at(p + "self_attn.q_proj.bias")[i];
      if (s.bias)
        for (int i = 0; i < KV; ++i) {
          k[t][i] += w.at(p + "self_attn.k_proj.bias")[i];
          v[t][i] += w.at(p + "self_attn.v_proj.bias")[i];
        }
      rope(q[t], nh, t);
      rope(k[t], nkv, t);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> att(Q, 0.0);
      for (int h = 0; h < nh; ++h) {
        const int kh = h / (nh / nkv);
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[j][kh * hd + i];
          sc[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& e : sc) sum += e = std::exp(e - mx);
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += sc[j] / sum * v[j][kh * hd + i];
      }
      auto o = mat(p + "self_attn.o_proj.weight", att, Q, H, p + "self_attn.o_proj");
      for (int i = 0; i < H; ++i) x[t][i] += o[i];
      auto xn = norm(x[t], p + "post_attention_layernorm.weight");
      auto g = mat(p + "mlp.gate_proj.weight", xn, H, I, p + "mlp.gate_proj");
      auto u = mat(p + "mlp.up_proj.weight", xn, H, I, p + "mlp.up_proj");
      for (int i = 0; i < I; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      auto d = mat(p + "mlp.down_proj.weight", g, I, H, p + "mlp.down_proj");
      for (int i = 0; i < H; ++i) x[t][i] += d[i];
    }
  }
  std::vector<double> logits;
  const std::string head = s.tied ? "model.embed_tokens.weight" : "lm_head.weight";
  for (int t = 0; t < T; ++t) {
    auto xn = norm(x[t], "model.norm.weight");
    auto lg = mat(head, xn, H, s.vocab);
    logits.insert(logits.end(), lg.begin(), lg.end());
  }
  return logits;
}

// max |a - b| / max |b|
template <typename A, typename B>
double rel_error(const A& a, const B& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

}  // namespace fedge::test
