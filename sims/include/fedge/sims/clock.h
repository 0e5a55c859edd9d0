// The simulator's notion of time, devices and networks. Real training and
// inference run on this machine; what they would cost on the simulated device
// is derived from counted FLOPs (not measured wall time, so a run is
// reproducible bit for bit), and what a message costs from its real encoded
// size and the link's bandwidth, latency and loss.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::sims {

struct DeviceProfile {
  std::string name;
  double flops = 1e11;         // sustained FLOP/s on small-batch transformer work
  double memory_bytes = 8e9;
  double power_w = 10.0;       // draw while computing
  // The LoRA rank a node of this profile trains at (levels 4-6), at most the
  // scenario's [model] lora_rank; 0 = that rank ([[device_profiles]] lora_rank;
  // docs/SIMULATOR.md, "Heterogeneous ranks").
  int lora_rank = 0;
};

struct NetworkProfile {
  std::string name;
  double up_bps = 20e6;        // bits per second, node -> far end
  double down_bps = 100e6;     // bits per second, far end -> node
  double latency_s = 0.04;     // one way
  double loss = 0.0;           // packet loss in [0, 1): resent bytes cost time
  double dropout = 0.0;        // probability that a node is unreachable for a round
};

// Presets: raspberry-pi, jetson, edge-server, cloud-gpu (and "host", this
// machine's own order of magnitude). Error(kInvalidInput) names the known ones.
DeviceProfile device_preset(std::string_view name);
std::vector<std::string> device_preset_names();
// Presets: lan, edge-lan, wan, cellular, satellite.
NetworkProfile network_preset(std::string_view name);
std::vector<std::string> network_preset_names();

// Seconds the device needs for `flops` floating-point operations.
double compute_seconds(const DeviceProfile& device, double flops);
// Joules drawn while computing for `seconds`.
double energy_joules(const DeviceProfile& device, double seconds);
// One-way transfer time of `bytes`: latency + bits / bandwidth, the bandwidth
// term stretched by 1 / (1 - loss) for resent packets.
double transfer_seconds(const NetworkProfile& net, std::uint64_t bytes, bool upload);

// FLOP counts of the usual transformer approximations (Kaplan et al. 2020):
// 2 N per token forward, 6 N per token for a training step.
double forward_flops(std::int64_t parameters, std::int64_t tokens);
double train_flops(std::int64_t parameters, std::int64_t tokens);

// Simulated time in seconds; only moves forward.
class VirtualClock {
 public:
  double now() const { return now_; }
  // Moves to `t` when it lies ahead (events may finish out of order).
  void advance_to(double t);
  void advance(double seconds);  // Error(kInvalidInput) for a negative step

 private:
  double now_ = 0.0;
};

// An interval of simulated serving time in which the site's uplink is down:
// the cloud and the edge server are unreachable, the node itself still works.
struct OutageWindow {
  double start_s = 0.0;
  double duration_s = 0.0;
  bool contains(double t) const { return duration_s > 0 && t >= start_s && t < start_s + duration_s; }
};

}  // namespace fedge::sims
