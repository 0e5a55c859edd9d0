// Buffered asynchronous aggregation, FedBuff (Nguyen et al. 2022, "Federated
// Learning with Buffered Asynchronous Aggregation"), as pure math on flat
// vectors: the server keeps a buffer of K updates, each computed by a node from
// the global version v_i it last received while the server is at version t,
// and when K are buffered it takes one server step and moves to version t + 1.
//
//   staleness      s_i = t - v_i                     (t: the version the buffer is
//                                                      sealed at, see FedBuffBuffer)
//   weight         w(s) = (1 + s)^(-a)               a = exponent, 0.5 by default:
//                                                      the paper's 1 / sqrt(1 + s)
//   buffer sum     S = sum_i w(s_i) n_i u_i,  W = sum_i w(s_i) n_i
//   server step    global_{t+1} = global_t + eta_g * S / W
//
// n_i is node i's example weight (its example count, or under secure
// aggregation federation::node_weight's capped share of it) and u_i its update
// (local minus the global it trained from). Updates with s_i > max_staleness
// are dropped, never buffered. Under secure aggregation each node multiplies
// its own update by w(s_i) n_i before masking and the weight W travels in the
// masked vector, so the server only learns S and W (docs/FEDERATION.md,
// "Asynchronous rounds (FedBuff)"; federation::weighted_vector's
// staleness_weight). See docs/SIMULATOR.md for the simulated comparison.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fedge::aggregation {

struct StalenessPolicy {
  double exponent = 0.5;              // a in w(s) = (1 + s)^-a; 0 = no discount
  std::uint64_t max_staleness = 10;   // updates staler than this are dropped
};

// Throws Error(kInvalidInput) for a negative or non-finite exponent.
void validate(const StalenessPolicy& policy);

// (1 + s)^-exponent, in (0, 1]. Throws like validate().
double staleness_weight(std::uint64_t staleness, double exponent = 0.5);

// The server step: global + server_lr * weighted_sum / total_weight, in double
// then rounded to float once. Throws Error(kInvalidInput) for length
// mismatches, total_weight <= 0 or a non-finite / non-positive server_lr.
std::vector<float> fedbuff_step(std::span<const float> global, std::span<const double> weighted_sum,
                                double total_weight, double server_lr);
// The same from a decoded secure sum (federation::DecodedSum's float sum).
std::vector<float> fedbuff_step(std::span<const float> global, std::span<const float> weighted_sum,
                                double total_weight, double server_lr);

// One buffer of the plain (not secure) path. Not thread-safe.
class FedBuffBuffer {
 public:
  // Throws Error(kInvalidInput) for capacity 0, update_length 0 or a bad policy.
  FedBuffBuffer(std::size_t capacity, std::size_t update_length, StalenessPolicy policy);

  // Buffers an update trained from `base_version` while the server is at
  // `server_version`. Returns false (and buffers nothing) when it is staler
  // than max_staleness. Throws Error(kInvalidInput) for a wrong length, a
  // non-finite value, num_examples <= 0, a full buffer, or base_version >
  // server_version (a version the server never published).
  bool add(std::span<const float> update, double num_examples, std::uint64_t base_version,
           std::uint64_t server_version);
  bool full() const { return count_ == capacity_; }
  std::size_t size() const { return count_; }
  std::size_t capacity() const { return capacity_; }

  struct Sum {
    std::vector<double> weighted_sum;  // S = sum_i w(s_i) n_i u_i
    double total_weight = 0;           // W = sum_i w(s_i) n_i
    std::size_t updates = 0;
  };
  // The buffer's sums; empties it. Throws Error(kInvalidInput) when empty.
  Sum take();

 private:
  std::size_t capacity_;
  StalenessPolicy policy_;
  std::size_t count_ = 0;
  std::vector<double> sum_;
  double weight_ = 0;
};

}  // namespace fedge::aggregation
