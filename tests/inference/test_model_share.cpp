// One base per process: Model::share (serving and training over the same
// weights), safetensors weights used in place from the file's read-only map,
// and copy on write where a weight must be written (merge_adapter,
// own_weights).
// ATen (through glog) defines CHECK too; Catch must come after it.
#include "model_helpers.h"  // before Catch2
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "test_support.h"

using namespace fedge;
using namespace fedge::inference;
using test::Shape;

namespace {

const std::vector<int> kTokens = {1, 5, 9, 14, 3, 7};

std::vector<float> logits_of(Model& m) {
  KVCache cache = m.make_cache(1, int(kTokens.size()));
  return m.forward(kTokens, {}, 1, int(kTokens.size()), cache, true);
}

LoraAdapter random_adapter(const ModelConfig& c, std::uint64_t seed) {
  return test::random_adapter(c, {"q_proj", "v_proj", "down_proj"}, seed);
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every weight of `a` and `b` is the same memory.
bool same_storage(const Model& a, const Model& b) {
  const auto wa = a.named_weights(), wb = b.named_weights();
  if (wa.size() != wb.size()) return false;
  for (std::size_t i = 0; i < wa.size(); ++i)
    if (wa[i].second.data_ptr() != wb[i].second.data_ptr()) return false;
  return true;
}

}  // namespace

TEST_CASE("share: a second Model over the same weights with its own adapters") {
  setup_torch(2);
  Model base = Model::tiny(4);
  CHECK_FALSE(base.weights_read_only());
  const auto before = logits_of(base);
  {
    Model serving = base.share();
    CHECK(same_storage(base, serving));
    CHECK(base.weights_read_only());
    CHECK(serving.weights_read_only());
    CHECK(serving.weight_memory().bytes == base.weight_memory().bytes);
    CHECK(logits_of(serving) == before);
    // Adapters belong to one Model.
    serving.add_adapter("a", random_adapter(serving.config(), 5));
    serving.set_active_adapter("a");
    CHECK(base.adapter_names().empty());
    CHECK(test::rel_error(logits_of(serving), before) > 1e-4);
    CHECK(logits_of(base) == before);
  }
  // The other user gone, the weights are the base's alone again.
  CHECK_FALSE(base.weights_read_only());
}

TEST_CASE("share: merge_adapter copies the weights it writes and unmerge restores the shared ones") {
  setup_torch(2);
  Model base = Model::tiny(4);
  Model other = base.share();
  const auto before = logits_of(base);
  const void* wq = base.layer(0).wq.data_ptr();
  base.add_adapter("a", random_adapter(base.config(), 6));
  base.set_active_adapter("a");
  const auto unmerged = logits_of(base);
  base.merge_adapter("a");
  CHECK(test::rel_error(logits_of(base), unmerged) < 1e-5);
  CHECK(base.layer(0).wq.data_ptr() != wq);        // copied on write
  CHECK(base.layer(0).wk.data_ptr() == other.layer(0).wk.data_ptr());  // not a target: still shared
  CHECK(logits_of(other) == before);               // the other user never sees the merge
  CHECK_THROWS_WITH(base.share(), Catch::Contains("unmerge it before sharing"));
  base.unmerge_adapter();
  CHECK(base.layer(0).wq.data_ptr() == wq);        // the shared original is back, exactly
  CHECK(same_storage(base, other));
  CHECK(logits_of(base) == before);
}

TEST_CASE("share: serving and training threads use one base at the same time") {
  setup_torch(1);
  Model trainer_model = Model::tiny(4);
  Model serving = trainer_model.share();
  trainer_model.add_adapter("t", random_adapter(trainer_model.config(), 7));
  trainer_model.set_active_adapter("t");
  for (auto& p : trainer_model.adapter("t")->parameters()) p.requires_grad_(true);
  const auto alone = logits_of(serving);
  at::Tensor toks = at::tensor(std::vector<int64_t>(kTokens.begin(), kTokens.end())).view({1, -1});
  std::thread training([&] {
    setup_torch_thread(1);
    for (int i = 0; i < 3; ++i) trainer_model.forward_train(toks, {}, true).sum().backward();
  });
  std::vector<std::vector<float>> served;
  for (int i = 0; i < 5; ++i) served.push_back(logits_of(serving));
  training.join();
  for (const auto& l : served) CHECK(l == alone);
  CHECK(trainer_model.adapter("t")->b(0, LoraTarget::kQ).grad().defined());
}

TEST_CASE("load: tensors already in the held type are used in place from the file's map") {
  setup_torch(2);
  for (std::string dtype : {"F32", "BF16", "F16"}) {
    DYNAMIC_SECTION(dtype) {
      Shape s;
      s.dtype = dtype;
      s.inter = 64;  // whole 32-blocks, so every type holds every matrix as asked
      auto dir = test::fresh_dir("mapped_" + dtype);
      test::write_checkpoint(dir, s, 11);
      LoadOptions held;
      held.weights = dtype == "F32" ? WeightType::kF32 : dtype == "BF16" ? WeightType::kBF16 : WeightType::kF16;
      Model mapped = Model::load(dir, held);
      LoadOptions copied = held;
      copied.map = false;
      Model owned = Model::load(dir, copied);
      // Norms are held in f32: mapped only when the file is f32.
      const auto m = mapped.weight_memory();
      CHECK(m.bytes == owned.weight_memory().bytes);
      CHECK(owned.weight_memory().mapped_bytes == 0);
      CHECK(m.mapped_bytes > 0);
      CHECK((dtype == "F32" ? m.mapped_bytes == m.bytes : m.mapped_bytes < m.bytes));
      CHECK(mapped.weights_read_only());
      CHECK_FALSE(owned.weights_read_only());
      CHECK(logits_of(mapped) == logits_of(owned));
      // Converted on load (f32 file held as bf16): only the norms, f32 in
      // both, are used in place.
      if (dtype == "F32") {
        LoadOptions bf16;
        bf16.weights = WeightType::kBF16;
        CHECK(Model::load(dir, bf16).weight_memory().mapped_bytes == 4u * (2 * s.layers + 1) * s.hidden);
      }
      std::filesystem::remove_all(dir);
    }
  }
}

TEST_CASE("load: a tensor not aligned to its element size is copied, not mapped") {
  setup_torch(2);
  Shape s;
  auto dir = test::fresh_dir("misaligned");
  test::write_checkpoint(dir, s, 12);
  std::vector<float> want;
  {
    Model aligned = Model::load(dir);
    want = logits_of(aligned);
  }  // unmapped before the file is rewritten in place below
  // One more space in the JSON header moves the whole data buffer by a byte.
  std::string bytes = file_bytes(dir / "model.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  bytes.insert(8 + n, " ");
  ++n;
  std::memcpy(bytes.data(), &n, 8);
  std::ofstream(dir / "model.safetensors", std::ios::binary | std::ios::trunc) << bytes;
  Model shifted = Model::load(dir);
  CHECK(shifted.weight_memory().mapped_bytes == 0);
  CHECK_FALSE(shifted.weights_read_only());
  CHECK(logits_of(shifted) == want);
  std::filesystem::remove_all(dir);
}

TEST_CASE("load: merging into a mapped model copies on write and leaves the file alone") {
  setup_torch(2);
  Shape s;
  auto dir = test::fresh_dir("mapped_merge");
  test::write_checkpoint(dir, s, 13);
  const std::string file_before = file_bytes(dir / "model.safetensors");
  Model m = Model::load(dir);
  const auto base = logits_of(m);
  m.add_adapter("a", random_adapter(m.config(), 8));
  m.set_active_adapter("a");
  const auto unmerged = logits_of(m);
  m.merge_adapter("a");  // a write through the read-only map would fault here
  CHECK(test::rel_error(logits_of(m), unmerged) < 1e-5);
  m.unmerge_adapter();
  CHECK(logits_of(m) == base);
  CHECK(file_bytes(dir / "model.safetensors") == file_before);
  // own_weights: private copies that may be written in place.
  m.own_weights();
  CHECK_FALSE(m.weights_read_only());
  CHECK(m.weight_memory().mapped_bytes == 0);
  {
    at::NoGradGuard g;
    m.layer(0).wq.mul_(2.0);
  }
  CHECK(file_bytes(dir / "model.safetensors") == file_before);
  std::filesystem::remove_all(dir);
}

TEST_CASE("load: the mapped weights outlive the file's directory entry") {
  setup_torch(2);
  Shape s;
  auto dir = test::fresh_dir("mapped_unlinked");
  test::write_checkpoint(dir, s, 14);
  Model m = Model::load(dir);
  const auto want = logits_of(m);
  std::filesystem::remove_all(dir);
  Model shared = m.share();
  CHECK(logits_of(shared) == want);
}
