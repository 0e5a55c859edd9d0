// `fedge quantize` on a saved tiny model, then `fedge generate` from the GGUF
// file: greedy output equals generating from the folder with --dtype q8_0 (the
// same blocks, so the same bits), and a file that is not a model is refused.
// ATen (through glog) defines CHECK too; Catch must come after it.
#include "fedge/inference/generate.h"

#include <catch2/catch.hpp>

#include <fstream>

#include "e2e/process.h"
#include "fedge/common/gguf.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Runs the binary to completion; returns its exit status and output.
std::pair<int, std::string> run(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv{FEDGE_BINARY, "--threads", "1", "--log-level", "warn"};
  argv.insert(argv.end(), args.begin(), args.end());
  fedge::testing::Process p(argv, log);
  const auto rc = p.wait_for_exit(180s);
  return {rc.value_or(-1), p.log_text()};
}

// The continuation `fedge generate` printed (stdout comes before its speed line).
std::string continuation(const std::string& log) { return log.substr(0, log.rfind("prefill:")); }

}  // namespace

TEST_CASE("fedge quantize writes a GGUF file that fedge generate reads to the folder's q8_0 output", "[long]") {
  fedge::testing::TempDir dir;
  const fs::path model = dir.path / "tiny-model";
  const auto tok = fedge::inference::Tokenizer::byte_level_tiny();
  fedge::inference::save_model_dir(fedge::inference::Model::random(fedge::inference::ModelConfig::tiny(), 21), model,
                                   &tok);
  const fs::path gguf = dir.path / "tiny-q8_0.gguf";
  auto [rc, log] = run({"quantize", "--model", model.string(), "--out", gguf.string(), "--type", "q8_0", "--compare",
                        "Well A-12 reported"},
                       dir.path / "quantize.log");
  INFO(log);
  REQUIRE(rc == 0);
  // --compare loads the file back: Q8_0 moves a random tiny model's logits by a few per cent at most, and not 0.
  const auto at = log.find("logits relative L2 vs ");
  REQUIRE(at != std::string::npos);
  const double l2 = std::stod(log.substr(log.find(": ", at) + 2));
  CHECK(l2 > 0.0);
  CHECK(l2 < 0.03);
  const fedge::GgufFile file = fedge::GgufFile::open(gguf);
  CHECK(file.metadata_string("general.name") == "tiny-model");
  CHECK(file.metadata_uint("general.file_type") == 7);  // MOSTLY_Q8_0
  CHECK(file.at("blk.0.attn_q.weight").type == fedge::GgmlType::kQ8_0);

  const std::vector<std::string> prompt{"--prompt", "Hello", "--max-tokens", "24", "--temperature", "0"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.begin(), "generate");
    a.insert(a.end(), prompt.begin(), prompt.end());
    return a;
  };
  auto [rc_dir, out_dir] = run(with({"--model", model.string(), "--dtype", "q8_0"}), dir.path / "dir.log");
  auto [rc_gguf, out_gguf] = run(with({"--model", gguf.string()}), dir.path / "gguf.log");
  INFO(out_dir << "\n---\n" << out_gguf);
  REQUIRE(rc_dir == 0);
  REQUIRE(rc_gguf == 0);
  CHECK(continuation(out_gguf) == continuation(out_dir));
  CHECK(continuation(out_gguf).size() > 1);

  // Quantizing is deterministic.
  const fs::path again = dir.path / "again.gguf";
  REQUIRE(run({"quantize", "--model", model.string(), "--out", again.string(), "--type", "q8_0"}, dir.path / "q2.log").first == 0);
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  CHECK(bytes(gguf) == bytes(again));

  // A GGUF file whose header lies is refused with the field named.
  std::string broken = bytes(gguf);
  broken.resize(broken.size() - 100);
  std::ofstream(dir.path / "cut.gguf", std::ios::binary) << broken;
  auto [rc_cut, out_cut] = run(with({"--model", (dir.path / "cut.gguf").string()}), dir.path / "cut.log");
  CHECK(rc_cut != 0);
  CHECK_THAT(out_cut, Catch::Contains("run past the end of the file"));
}
