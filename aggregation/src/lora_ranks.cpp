#include "fedge/aggregation/lora_ranks.h"

#include <Eigen/Core>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>

#include "fedge/common/error.h"

namespace fedge::aggregation {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorKind::kInvalidInput, what); }

void check_rank(const LoraLayout& layout, int r) {
  if (r < 1 || r > layout.rank)
    bad("LoRA rank " + std::to_string(r) + " is outside [1, " + std::to_string(layout.rank) +
        "] (the federation's maximum rank)");
}

void check_length(std::size_t got, std::size_t want, const char* what) {
  if (got != want) bad(std::string(what) + " has " + std::to_string(got) + " floats, expected " + std::to_string(want));
}

bool contains(std::string_view name, std::string_view part) { return name.find(part) != std::string_view::npos; }

// Copies the first r rank components of every pair between two layouts of
// ranks from_rank and to_rank (r <= both): A's rows and B's columns.
void copy_components(const LoraLayout& layout, std::span<const float> from, int from_rank, std::span<float> to,
                     int to_rank, int r) {
  std::size_t from_at = 0, to_at = 0;  // offsets of the current pair in each flat vector
  for (const auto& p : layout.pairs) {
    const auto fr = static_cast<std::size_t>(from_rank), tr = static_cast<std::size_t>(to_rank);
    const auto rr = static_cast<std::size_t>(r);
    // A: rows 0..r-1 are contiguous.
    std::copy_n(from.begin() + static_cast<std::ptrdiff_t>(from_at), rr * p.in,
                to.begin() + static_cast<std::ptrdiff_t>(to_at));
    const std::size_t from_b = from_at + fr * p.in, to_b = to_at + tr * p.in;
    for (std::size_t o = 0; o < p.out; ++o)
      std::copy_n(from.begin() + static_cast<std::ptrdiff_t>(from_b + o * fr), rr,
                  to.begin() + static_cast<std::ptrdiff_t>(to_b + o * tr));
    from_at = from_b + p.out * fr;
    to_at = to_b + p.out * tr;
  }
}

// The rank index of each flat coordinate in R's layout.
template <class F>
void for_each_rank_index(const LoraLayout& layout, F&& f) {
  const auto R = static_cast<std::size_t>(layout.rank);
  for (const auto& p : layout.pairs) {
    for (std::size_t j = 0; j < R; ++j)
      for (std::size_t i = 0; i < p.in; ++i) f(p.a_offset + j * p.in + i, j);
    for (std::size_t o = 0; o < p.out; ++o)
      for (std::size_t j = 0; j < R; ++j) f(p.b_offset + o * R + j, j);
  }
}

}  // namespace

RankAggregation parse_rank_aggregation(std::string_view name) {
  if (name == "none") return RankAggregation::kNone;
  if (name == "hetlora") return RankAggregation::kHetLora;
  if (name == "flexlora") return RankAggregation::kFlexLora;
  bad("unknown rank aggregation \"" + std::string(name) + "\" (known: \"none\", \"hetlora\", \"flexlora\")");
}

std::string rank_aggregation_name(RankAggregation method) {
  switch (method) {
    case RankAggregation::kHetLora: return "hetlora";
    case RankAggregation::kFlexLora: return "flexlora";
    case RankAggregation::kNone: break;
  }
  return "none";
}

std::size_t LoraLayout::dense_size() const {
  std::size_t n = 0;
  for (const auto& p : pairs) n += p.in * p.out;
  return n;
}

LoraLayout lora_layout(const ParamLayout& layout) {
  LoraLayout out;
  out.size = layout.size();
  const auto& e = layout.entries();
  if (e.empty()) bad("a LoRA adapter layout needs A/B pairs; this one has no tensors");
  if (e.size() % 2 != 0)
    bad("a LoRA adapter layout needs A/B pairs; this one has " + std::to_string(e.size()) + " tensors (the last, '" +
        e.back().name + "', has no partner)");
  for (std::size_t i = 0; i < e.size(); i += 2) {
    const ParamEntry &a = e[i], &b = e[i + 1];
    if (!contains(a.name, "lora_A") || !contains(b.name, "lora_B") || a.shape.size() != 2 || b.shape.size() != 2)
      bad("tensor '" + a.name + "' and its successor '" + b.name + "' are not a LoRA A (r x in) / B (out x r) pair");
    if (a.shape[0] != b.shape[1] || a.shape[0] < 1)
      bad("tensor '" + b.name + "' has rank " + std::to_string(b.shape[1]) + " but its A has " + std::to_string(a.shape[0]));
    if (out.rank == 0) out.rank = static_cast<int>(a.shape[0]);
    if (a.shape[0] != out.rank)
      bad("tensor '" + a.name + "' has rank " + std::to_string(a.shape[0]) + ", the first pair " + std::to_string(out.rank));
    out.pairs.push_back({a.offset, b.offset, static_cast<std::size_t>(a.shape[1]), static_cast<std::size_t>(b.shape[0])});
  }
  return out;
}

ParamLayout layout_at_rank(const ParamLayout& layout, int r) {
  lora_layout(layout);  // checks the A/B pattern
  if (r < 1) bad("LoRA rank " + std::to_string(r) + " must be at least 1");
  ParamLayout out;
  for (std::size_t i = 0; i < layout.entries().size(); ++i) {
    const auto& e = layout.entries()[i];
    std::vector<std::int64_t> shape = e.shape;
    shape[i % 2 == 0 ? 0 : 1] = r;
    out.add(e.name, std::move(shape));
  }
  return out;
}

std::vector<float> truncate_rank(const LoraLayout& layout, std::span<const float> full, int r) {
  check_rank(layout, r);
  check_length(full.size(), layout.size, "the full-rank adapter");
  std::size_t small = 0;
  for (const auto& p : layout.pairs) small += static_cast<std::size_t>(r) * (p.in + p.out);
  std::vector<float> out(small);
  copy_components(layout, full, layout.rank, out, r, r);
  return out;
}

std::vector<float> pad_rank(const LoraLayout& layout, std::span<const float> small, int r) {
  check_rank(layout, r);
  std::size_t want = 0;
  for (const auto& p : layout.pairs) want += static_cast<std::size_t>(r) * (p.in + p.out);
  check_length(small.size(), want, "the small-rank adapter");
  std::vector<float> out(layout.size, 0.0F);
  copy_components(layout, small, r, out, layout.rank, r);
  return out;
}

std::vector<float> keep_rank(const LoraLayout& layout, std::span<const float> full, int r) {
  return pad_rank(layout, truncate_rank(layout, full, r), r);
}

std::vector<double> rank_weight_sums(int max_rank, std::span<const int> ranks, std::span<const double> weights) {
  if (ranks.size() != weights.size()) bad("rank_weight_sums: " + std::to_string(ranks.size()) + " ranks but " +
                                          std::to_string(weights.size()) + " weights");
  std::vector<double> w(static_cast<std::size_t>(std::max(max_rank, 0)), 0.0);
  for (std::size_t k = 0; k < ranks.size(); ++k)
    for (int j = 0; j < std::min(ranks[k], max_rank); ++j) w[static_cast<std::size_t>(j)] += weights[k];
  return w;
}

std::vector<float> rank_indicator(int max_rank, int rank, float value) {
  if (rank < 1 || rank > max_rank)
    bad("LoRA rank " + std::to_string(rank) + " is outside [1, " + std::to_string(max_rank) + "]");
  std::vector<float> out(static_cast<std::size_t>(max_rank), 0.0F);
  std::fill_n(out.begin(), rank, value);
  return out;
}

std::vector<float> rankwise_sum(const LoraLayout& layout, std::span<const float> weighted_sum,
                                std::span<const double> rank_weights, double total) {
  check_length(weighted_sum.size(), layout.size, "the weighted sum");
  check_length(rank_weights.size(), static_cast<std::size_t>(layout.rank), "the rank-wise weights");
  std::vector<float> out(weighted_sum.size(), 0.0F);
  for_each_rank_index(layout, [&](std::size_t i, std::size_t j) {
    // A rank-wise weight at (or, after quantisation or noise, near) zero has
    // no node behind it: that component of the global stays as it is.
    const double w = rank_weights[j];
    out[i] = w > 1e-9 * std::max(total, 1e-30) ? static_cast<float>(weighted_sum[i] * (total / w)) : 0.0F;
  });
  return out;
}

std::vector<float> hetlora_mean(const LoraLayout& layout, std::span<const std::vector<float>> padded_updates,
                                std::span<const int> ranks, std::span<const double> weights) {
  if (padded_updates.empty() || padded_updates.size() != ranks.size() || ranks.size() != weights.size())
    bad("hetlora_mean needs one rank and one weight per update (" + std::to_string(padded_updates.size()) +
        " updates, " + std::to_string(ranks.size()) + " ranks, " + std::to_string(weights.size()) + " weights)");
  std::vector<double> sum(layout.size, 0.0);
  double total = 0;
  for (std::size_t k = 0; k < padded_updates.size(); ++k) {
    check_rank(layout, ranks[k]);
    check_length(padded_updates[k].size(), layout.size, "a padded update");
    if (!(weights[k] > 0)) bad("update " + std::to_string(k) + " has weight " + std::to_string(weights[k]) + " (must be > 0)");
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += weights[k] * padded_updates[k][i];
    total += weights[k];
  }
  const auto w = rank_weight_sums(layout.rank, ranks, weights);
  std::vector<float> mean(layout.size, 0.0F);
  for_each_rank_index(layout, [&](std::size_t i, std::size_t j) {
    mean[i] = w[j] > 0 ? static_cast<float>(sum[i] / w[j]) : 0.0F;
  });
  return mean;
}

std::vector<float> lora_products(const LoraLayout& layout, std::span<const float> adapter, double scaling) {
  check_length(adapter.size(), layout.size, "the adapter");
  std::vector<float> dense(layout.dense_size());
  std::size_t at = 0;
  const auto R = static_cast<Eigen::Index>(layout.rank);
  for (const auto& p : layout.pairs) {
    const auto in = static_cast<Eigen::Index>(p.in), out = static_cast<Eigen::Index>(p.out);
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> A(adapter.data() + p.a_offset, R, in);
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> B(adapter.data() + p.b_offset, out, R);
    MatD prod = scaling * (B.cast<double>() * A.cast<double>());
    Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(dense.data() + at, out, in) =
        prod.cast<float>();
    at += p.in * p.out;
  }
  return dense;
}

std::vector<float> flexlora_factors(const LoraLayout& layout, std::span<const float> dense, int r, double scaling,
                                    std::span<const float> fallback_a) {
  check_rank(layout, r);
  check_length(dense.size(), layout.dense_size(), "the dense product vector");
  check_length(fallback_a.size(), layout.size, "the fallback adapter");
  if (!(scaling > 0) || !std::isfinite(scaling)) bad("LoRA scaling " + std::to_string(scaling) + " must be > 0");
  std::vector<float> out(layout.size, 0.0F);
  const auto R = static_cast<std::size_t>(layout.rank);
  std::size_t at = 0;
  for (const auto& p : layout.pairs) {
    const auto in = static_cast<Eigen::Index>(p.in), rows = static_cast<Eigen::Index>(p.out);
    const Eigen::MatrixXd m =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(dense.data() + at, rows, in)
            .cast<double>() / scaling;
    at += p.in * p.out;
    Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const auto& s = svd.singularValues();
    Eigen::MatrixXd U = svd.matrixU(), V = svd.matrixV();
    const double floor = s.size() > 0 ? 1e-12 * s(0) : 0.0;
    for (std::size_t j = 0; j < static_cast<std::size_t>(r); ++j) {
      const auto jj = static_cast<Eigen::Index>(j);
      const bool kept = jj < s.size() && s(jj) > floor && s(jj) > 0;
      if (!kept) {  // no such direction in the mean: A's row from the fallback, B's column zero
        std::copy_n(fallback_a.begin() + static_cast<std::ptrdiff_t>(p.a_offset + j * p.in), p.in,
                    out.begin() + static_cast<std::ptrdiff_t>(p.a_offset + j * p.in));
        continue;
      }
      Eigen::Index big = 0;
      V.col(jj).cwiseAbs().maxCoeff(&big);
      const double sign = V(big, jj) < 0 ? -1.0 : 1.0;
      const double root = std::sqrt(s(jj));
      for (std::size_t i = 0; i < p.in; ++i)
        out[p.a_offset + j * p.in + i] = static_cast<float>(sign * root * V(static_cast<Eigen::Index>(i), jj));
      for (std::size_t o = 0; o < p.out; ++o)
        out[p.b_offset + o * R + j] = static_cast<float>(sign * root * U(static_cast<Eigen::Index>(o), jj));
    }
  }
  return out;
}

}  // namespace fedge::aggregation
