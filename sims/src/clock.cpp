#include "fedge/sims/clock.h"

#include <string>

#include "fedge/common/error.h"

namespace fedge::sims {
namespace {

// Sustained rates on small-batch LLM work, not datasheet peaks: a Pi 5's four
// A76 cores, a Jetson Orin class module, a 2-socket edge server, one data-centre GPU.
const std::vector<DeviceProfile>& devices() {
  static const std::vector<DeviceProfile> list = {
      {"raspberry-pi", 10e9, 8e9, 7.0},
      {"jetson", 200e9, 16e9, 20.0},
      {"edge-server", 2e12, 256e9, 400.0},
      {"cloud-gpu", 50e12, 80e9, 700.0},
      {"host", 150e9, 16e9, 60.0},  // the 2-core VM fedge is developed on
  };
  return list;
}

const std::vector<NetworkProfile>& networks() {
  static const std::vector<NetworkProfile> list = {
      {"lan", 1e9, 1e9, 0.0005, 0.0, 0.0},
      {"edge-lan", 200e6, 200e6, 0.003, 0.0, 0.0},
      {"wan", 20e6, 100e6, 0.04, 0.001, 0.0},
      {"cellular", 5e6, 30e6, 0.06, 0.01, 0.05},
      {"satellite", 2e6, 10e6, 0.3, 0.02, 0.1},
  };
  return list;
}

template <class T>
std::string names_of(const std::vector<T>& list) {
  std::string out;
  for (const auto& p : list) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

}  // namespace

DeviceProfile device_preset(std::string_view name) {
  for (const auto& p : devices()) {
    if (p.name == name) return p;
  }
  throw Error(ErrorKind::kInvalidInput,
              "unknown device profile '" + std::string(name) + "' (known: " + names_of(devices()) + ")");
}

std::vector<std::string> device_preset_names() {
  std::vector<std::string> out;
  for (const auto& p : devices()) out.push_back(p.name);
  return out;
}

NetworkProfile network_preset(std::string_view name) {
  for (const auto& p : networks()) {
    if (p.name == name) return p;
  }
  throw Error(ErrorKind::kInvalidInput,
              "unknown network profile '" + std::string(name) + "' (known: " + names_of(networks()) + ")");
}

std::vector<std::string> network_preset_names() {
  std::vector<std::string> out;
  for (const auto& p : networks()) out.push_back(p.name);
  return out;
}

double compute_seconds(const DeviceProfile& device, double flops) { return flops / device.flops; }

double energy_joules(const DeviceProfile& device, double seconds) { return device.power_w * seconds; }

double transfer_seconds(const NetworkProfile& net, std::uint64_t bytes, bool upload) {
  double bps = upload ? net.up_bps : net.down_bps;
  return net.latency_s + static_cast<double>(bytes) * 8.0 / bps / (1.0 - net.loss);
}

double forward_flops(std::int64_t parameters, std::int64_t tokens) {
  return 2.0 * static_cast<double>(parameters) * static_cast<double>(tokens);
}

double train_flops(std::int64_t parameters, std::int64_t tokens) {
  return 6.0 * static_cast<double>(parameters) * static_cast<double>(tokens);
}

void VirtualClock::advance_to(double t) {
  if (t > now_) now_ = t;
}

void VirtualClock::advance(double seconds) {
  if (seconds < 0) throw Error(ErrorKind::kInvalidInput, "virtual clock: negative step " + std::to_string(seconds));
  now_ += seconds;
}

}  // namespace fedge::sims
