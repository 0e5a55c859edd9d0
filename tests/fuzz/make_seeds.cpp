// Writes the seed corpora of the byte-format fuzz targets into
// tests/fuzz/corpus/<target>/ (the text seeds, TOML, JSON, JSONL and CSV, are
// written by hand or copied from the project's own files). Run after a wire or file
// format change, then commit the files:
//   build-fuzz/bin/make_seeds tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../protocol/samples.h"
#include "fedge/common/gguf.h"
#include "fedge/common/safetensors.h"
#include "fedge/federation/wire.h"
#include "fedge/sims/host_wire.h"

namespace fs = std::filesystem;
using namespace fedge;
namespace agg = fedge::aggregation;
namespace wire = fedge::federation::wire;

namespace {

void write(const fs::path& file, const std::byte* data, std::size_t size) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void write_envelope(const fs::path& dir, const std::string& name, protocol::Body body, std::uint32_t sender,
                    std::uint64_t round = 3) {
  protocol::Envelope env;
  env.round = round;
  env.attempt = round ? 1 : 0;
  env.sender = sender;
  env.body = std::move(body);
  const auto bytes = protocol::encode(env);
  write(dir / (name + ".bin"), reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
}

privacy::Key32 key(std::uint8_t fill) {
  privacy::Key32 k{};
  k.fill(fill);
  return k;
}

// One sample of every message type, and the secure-aggregation messages as
// wire writes them with valid sizes (so the fuzzer starts past the field checks).
void protocol_seeds(const fs::path& dir) {
  const auto samples = protocol::test::all_samples();
  for (const auto& s : samples) write_envelope(dir, protocol::body_name(s.body), s.body, s.sender, s.round);
  const std::vector<std::uint8_t> box(agg::share_box_bytes(), 7);
  write_envelope(dir, "wire-advertiseKeys", wire::to_wire(agg::AdvertiseKeys{3, 2, key(1), key(2)}), 12);
  write_envelope(dir, "wire-keysBroadcast", wire::to_wire(agg::KeysBroadcast{3, 2, {{1, key(3), key(4)}}}), 0);
  write_envelope(dir, "wire-shareKeys", wire::to_wire(agg::ShareKeys{3, 2, {{2, 1, box}, {2, 3, box}}}), 12);
  write_envelope(dir, "wire-sharesDelivery", wire::to_wire(agg::SharesDelivery{3, 2, {{1, 2, box}}}), 0);
  write_envelope(dir, "wire-maskedInput", wire::to_wire(agg::MaskedInput{3, 2, {1, 2, 3, 4, 5, 6}}), 12);
  write_envelope(dir, "wire-unmaskRequest", wire::to_wire(agg::UnmaskRequest{3, {1, 2}, {}}, 3), 0);
  agg::UnmaskResponse ur{3, 2, {}, {}};
  ur.self_mask_shares.push_back({1, privacy::Share{2, {1, 2, 3, 4}}});
  ur.key_shares.push_back({3, privacy::Share{2, {5, 6, 7, 8}}});
  write_envelope(dir, "wire-unmaskResponse", wire::to_wire(ur), 12);
  privacy::Signature sig{};
  sig.fill(5);
  write_envelope(dir, "wire-consistencyCheck", wire::to_wire(agg::ConsistencyCheck{3, {1, 2, 3}}), 0);
  write_envelope(dir, "wire-survivorSignature", wire::to_wire(agg::SurvivorSignature{3, 2, sig}), 12);
  write_envelope(dir, "wire-unmaskRequest-signed", wire::to_wire(agg::UnmaskRequest{3, {1, 2}, {{3, 1, sig}}}, 3), 0);
  protocol::RoundPlan plan = protocol::test::sample_plan();
  plan.secagg = wire::to_wire(wire::SecureSettings{{4, 3, 3, 1002, key(9), privacy::PrgKind::kChaCha20}, 16, 0.5, 12});
  write_envelope(dir, "wire-roundPlan", plan, 0);
}

void safetensors_seeds(const fs::path& dir) {
  const std::vector<float> a{1.0f, -2.5f, 3.25f, 0.0f, 7.0f, 8.5f};
  const std::vector<std::uint16_t> b{0x3f80, 0xc000, 0x4040};  // bf16 1, -2, 3
  const std::vector<TensorView> tensors{
      {"a.lora_A.weight", DType::kF32, {2, 3}, std::as_bytes(std::span(a))},
      {"b.weight", DType::kBF16, {3}, std::as_bytes(std::span(b))}};
  const auto bytes = serialize_safetensors(tensors, {{"format", "pt"}});
  write(dir / "two-tensors.safetensors", bytes.data(), bytes.size());
}

void gguf_seeds(const fs::path& dir) {
  const std::vector<float> a{1.0f, -2.5f, 3.25f, 0.0f};
  std::vector<std::byte> q8(34, std::byte{1});  // one Q8_0 block: f16 scale + 32 int8
  auto array = std::make_shared<GgufArray>(GgufArray{GgufType::kString, {std::string("a"), std::string("b")}});
  const std::vector<std::pair<std::string, GgufValue>> metadata{
      {"general.architecture", std::string("llama")}, {"llama.block_count", std::uint32_t{1}},
      {"tokenizer.ggml.tokens", array}};
  const std::vector<GgufTensorView> tensors{{"token_embd.weight", {2, 2}, GgmlType::kF32, std::as_bytes(std::span(a))},
                                            {"blk.0.attn_q.weight", {32, 1}, GgmlType::kQ8_0, q8}};
  const auto bytes = gguf_bytes(metadata, tensors);
  write(dir / "llama-f32-q8.gguf", bytes.data(), bytes.size());
}

void write_host_message(const fs::path& dir, const sims::HostMessage& message) {
  const auto bytes = sims::encode_host_message(message);
  write(dir / (std::string(sims::host_message_name(message)) + ".bin"), reinterpret_cast<const std::byte*>(bytes.data()),
        bytes.size());
}

// One message of every kind, as a run sends them: deliveries carry real
// protocol envelopes, rows have serving columns and an accuracy.
void host_wire_seeds(const fs::path& dir) {
  const auto samples = protocol::test::all_samples();
  auto envelope = [&](std::size_t i) { return protocol::encode(samples.at(i)); };
  sims::MetricsRow row;
  row.level = 4;
  row.round = 2;
  row.node = 1;
  row.perplexity = 12.5;
  row.accuracy = 0.75;
  row.bytes_up = 4096;
  row.sim_time_s = 30;
  row.serving = true;
  row.ttft_p50_ms = 80;
  row.ttft_p95_ms = 120;
  row.outage_requests = 4;
  row.outage_served = 3;
  write_host_message(dir, sims::HostHello{"host-a"});
  write_host_message(dir, sims::HostAssign{"[scenario]\nname = \"seed\"\nnodes = 4\n", "seed.toml", {4, 5, 6}, 0, 2, 1});
  write_host_message(dir, sims::HostReady{"00ff", "a1b2"});
  write_host_message(dir, sims::StartLevel{5});
  write_host_message(dir, sims::WindowOrder{4, 1500, {{1000, 0, 0, envelope(0)}, {1200, 1, 1, envelope(1)}},
                                            {{1, 900, {0, 1}, {0.5f, -1.25f, 2.0f}, true, false}}, false});
  write_host_message(dir, sims::WindowReport{4, {{1400, 1, 0, envelope(2)}}, 1800, {row}});
  write_host_message(dir, sims::Shutdown{"done"});
  write_host_message(dir, sims::HostError{"host-a: out of memory"});
  write_host_message(dir, sims::Ping{});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  protocol_seeds(root / "protocol");
  safetensors_seeds(root / "safetensors");
  gguf_seeds(root / "gguf");
  host_wire_seeds(root / "host_wire");
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
