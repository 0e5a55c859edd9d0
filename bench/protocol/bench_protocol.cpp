// Wire cost of the bulk messages of a round (d = 1M): encode + decode time and
// bytes for MaskedInput and PlainUpdate, and the round trip of a MaskedInput
// over loopback TCP (plain and CurveZMQ), each against a memcpy of the same
// bytes measured in the same run. A MaskedInput travels as an opaque part
// (protocol/messages.h): encode copies it into the envelope and decode copies it
// out in canonical form (the copy that checks its structure), where a
// PlainUpdate's payload is referenced on both sides.
//   bench_protocol [d]   (default d = 1048576)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/protocol/opaque.h"
#include "fedge/protocol/transport.h"

using namespace fedge::protocol;
using Clock = std::chrono::steady_clock;

namespace {

// Best-of-`repeats` seconds of f(), after one warm-up call.
double best_seconds(int repeats, const std::function<void()>& f) {
  f();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

double memcpy_seconds(std::size_t bytes) {
  std::vector<std::uint8_t> a(bytes, 1), b(bytes);
  return best_seconds(20, [&] {
    std::memcpy(b.data(), a.data(), bytes);
    asm volatile("" ::"r"(b.data()) : "memory");
  });
}

void codec_row(const char* name, const Envelope& env, double memcpy_s) {
  Bytes bytes;
  const double enc = best_seconds(20, [&] { bytes = encode(env); });
  bool zero_copy = false;
  Limits limits;
  const double dec = best_seconds(20, [&] { (void)decode(bytes, limits, {}, &zero_copy); });
  // An opaque part (the masked input) is copied out of the message by decode.
  const bool opaque = std::holds_alternative<MaskedInputBody>(env.body);
  std::printf("%-22s %10zu %10.3f %10.4f %10.1f %10.2f %s\n", name, bytes.size(), enc * 1e3, dec * 1e3,
              bytes.size() / enc / 1e9, enc / memcpy_s,
              opaque ? "part copied out" : zero_copy ? "zero-copy decode" : "copied");
}

// Ping-pong: the node sends a MaskedInput, the coordinator decodes it and
// sends the same bytes back, the node decodes them. Returns seconds per round trip.
double round_trip_seconds(bool curve, const Envelope& env, int iterations, bool& all_zero_copy) {
  Context server_ctx, node_ctx;
  std::optional<CurveServer> cs;
  std::optional<CurveClient> cc;
  if (curve) {
    auto server = generate_curve_keypair(), node = generate_curve_keypair();
    cs = CurveServer{server, {node.public_z85}};
    cc = CurveClient{node, server.public_z85};
  }
  Router router(server_ctx, "tcp://127.0.0.1:*", {}, cs);
  Dealer dealer(node_ctx, router.endpoint(), {}, cc);
  const Bytes bytes = encode(env);
  auto once = [&] {
    dealer.send(bytes);
    auto in = router.recv(std::chrono::seconds(10));
    if (!in) throw std::runtime_error("round trip timed out");
    bool zc = false;
    (void)decode(in->payload, {}, {}, &zc);
    all_zero_copy = all_zero_copy && zc;
    router.send(in->peer, in->payload);
    auto back = dealer.recv(std::chrono::seconds(10));
    if (!back) throw std::runtime_error("round trip timed out");
    (void)decode(*back, {}, {}, &zc);
    all_zero_copy = all_zero_copy && zc;
  };
  once();  // connection + handshake
  auto t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) once();
  return std::chrono::duration<double>(Clock::now() - t0).count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t d = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (std::size_t{1} << 20);
  std::printf("bench_protocol: d = %zu (%zu bytes of payload)\n", d, d * 4);
  std::printf("machine: %s; zmq I/O threads: 1 per context\n", fedge::machine_summary().c_str());

  std::vector<std::uint32_t> masked(d);
  for (std::size_t i = 0; i < d; ++i) masked[i] = static_cast<std::uint32_t>(i * 2654435761u);
  std::vector<float> update(d);
  std::iota(update.begin(), update.end(), 0.0f);
  const MaskedInputBody masked_body{make_part<wire::MaskedInput>([&](wire::MaskedInput::Builder b) {
    b.setSender(3);
    b.setMasked({reinterpret_cast<const capnp::byte*>(masked.data()), d * 4});
  })};
  Envelope mi{kProtocolVersion, 1, 5, masked_body};
  Envelope pu{kProtocolVersion, 1, 5, PlainUpdate{100, Payload<float>::borrow(update), 0.5f}};
  // An unaligned view forces the encoder's copying path.
  Envelope pu_unaligned{kProtocolVersion, 1, 5,
                        PlainUpdate{100, Payload<float>::borrow(std::span<const float>(update).subspan(1)), 0.5f}};

  const double mc = memcpy_seconds(d * 4);
  std::printf("\nmemcpy of %zu bytes: %.3f ms (%.1f GB/s) -- the reference\n\n", d * 4, mc * 1e3, d * 4 / mc / 1e9);
  std::printf("%-22s %10s %10s %10s %10s %10s\n", "message", "bytes", "encode ms", "decode ms", "enc GB/s",
              "enc/memcpy");
  codec_row("maskedInput", mi, mc);
  codec_row("plainUpdate", pu, mc);
  codec_row("plainUpdate unaligned", pu_unaligned, mc);

  std::printf("\nround trip over tcp://127.0.0.1 (send, recv+decode, echo, recv+decode), %zu-byte message:\n",
              encode(mi).size());
  std::printf("%-8s %12s %14s %12s  %s\n", "curve", "ms/trip", "MB/s (2 ways)", "x memcpy", "received decode");
  for (bool curve : {false, true}) {
    bool zero_copy = true;
    const double s = round_trip_seconds(curve, mi, curve ? 10 : 30, zero_copy);
    const double mbps = 2.0 * d * 4 / s / 1e6;
    std::printf("%-8s %12.2f %14.0f %12.1f  %s\n", curve ? "yes" : "no", s * 1e3, mbps, s / (2 * mc),
                zero_copy ? "zero-copy" : "copied (unaligned zmq buffer)");
  }
  return 0;
}
