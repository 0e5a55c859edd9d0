// One base per node and the node's memory budget: serving and training use
// the same weight memory, the start-up estimate follows the config, and a
// budget that is too small stops the node before it starts, naming every part
// and what to change.
#include <fstream>
#include <string>

#include "fedge/inference/generate.h"
#include "fedge/inference/model.h"
#include "fedge/node/memory_budget.h"
#include "fedge/node/runtime.h"
#include "fedge/node/serving.h"
#include "test_util.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;

namespace {

// A node folder with training data; config() writes node.toml with `extra`
// appended (tables after [data]).
struct NodeSite {
  testing::TempDir dir{"fedge_node_memory_"};
  NodeSite() {
    std::ofstream out(dir.path / "train.jsonl");
    for (int i = 0; i < 8; ++i) out << "{\"text\": \"a line of training text number " << i << "\"}\n";
  }
  node::NodeRuntimeConfig config(const std::string& node_keys, const std::string& extra = "") const {
    std::ofstream(dir.path / "node.toml") << "[node]\nid = 1\ninsecure = true\nstate_dir = \"state\"\n" << node_keys
                                          << "\n[coordinator]\nendpoint = \"tcp://127.0.0.1:1\"\n"
                                          << "[data]\ntrain = \"train.jsonl\"\nseq_len = 32\n" << extra;
    return node::read_node_config(dir.path / "node.toml");
  }
};

bool same_storage(const inference::Model& a, const inference::Model& b) {
  const auto wa = a.named_weights(), wb = b.named_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i)
    if (wa[i].second.data_ptr() != wb[i].second.data_ptr()) return false;
  return true;
}

}  // namespace

TEST_CASE("node memory: the budget, weight type and serving limits are read from the config") {
  NodeSite site;
  const auto plain = site.config("");
  CHECK(plain.memory_mb == 0);
  CHECK(plain.model_weights == inference::WeightType::kF32);
  CHECK(plain.serve.max_batch == 4);
  CHECK(plain.serve.context == 0);
  CHECK(plain.serve.max_n == 8);
  const auto c = site.config("memory_mb = 512",
                             "[model]\nweights = \"q4_0\"\n[serve]\nmax_batch = 2\ncontext = 256\nsplit_sessions = 3\nmax_n = 2\n"
                             "[train]\nmax_batch_size = 2\n");
  CHECK(c.memory_mb == 512);
  CHECK(c.model_weights == inference::WeightType::kQ4_0);
  CHECK(c.serve.max_batch == 2);
  CHECK(c.serve.context == 256);
  CHECK(c.serve.split_sessions == 3);
  CHECK(c.serve.max_n == 2);
  CHECK_THROWS_WITH(site.config("", "[serve]\nmax_n = 1000000000\n"), Catch::Contains("max_n"));
  CHECK(c.trainer.max_batch_size == 2);
  CHECK_THROWS_WITH(site.config("", "[model]\nweights = \"q3_k\"\n"), Catch::Contains("weights"));
  CHECK_THROWS_WITH(site.config("memory_mb = -1"), Catch::Contains("memory_mb"));
}

TEST_CASE("node memory: the estimate follows the weight type, the serving context and checkpointing") {
  NodeSite site;
  const auto f32 = inference::Model::tiny(0);
  inference::LoadOptions q4;
  q4.weights = inference::WeightType::kQ4_0;
  const auto packed = inference::Model::random(inference::ModelConfig::tiny(), 0, q4);
  const auto serving = site.config("", "[serve]\nhttp = \"127.0.0.1:0\"\n");
  const auto m = node::estimate_node_memory(f32, serving);
  // The tiny preset: 4 layers, hidden 256, intermediate 688, vocab 261, tied.
  const double params = double(f32.config().num_parameters());
  CHECK(m.base_mb == Approx(params * 4 / (1024.0 * 1024.0)).epsilon(0.01));
  CHECK(node::estimate_node_memory(packed, serving).base_mb < 0.3 * m.base_mb);
  CHECK(m.kv_cache_mb > 0);
  CHECK(node::estimate_node_memory(f32, site.config("")).kv_cache_mb == 0);  // nothing served
  const auto shorter = node::estimate_node_memory(f32, site.config("", "[serve]\nhttp = \"127.0.0.1:0\"\ncontext = 64\n"));
  CHECK(shorter.kv_cache_mb < m.kv_cache_mb);
  const auto ckpt = node::estimate_node_memory(f32, site.config("", "[train]\ngradient_checkpointing = true\n"));
  CHECK(ckpt.training_mb < m.training_mb);
  CHECK(m.adapters_mb > 0);
  CHECK(node::describe(m).find("base ") == 0);
}

TEST_CASE("node memory: a budget too small is refused at start, naming the budget, every part and what to change") {
  NodeSite site;
  const auto config = site.config("memory_mb = 2", "[serve]\nhttp = \"127.0.0.1:0\"\n");
  try {
    node::NodeRuntime runtime(config);
    FAIL("the node started within 2 MB");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK(what.find("memory_mb = 2 MB") != std::string::npos);
    for (const char* part : {"base ", "adapters ", "KV cache ", "training "}) CHECK(what.find(part) != std::string::npos);
    CHECK(what.find("weights = \"q4_0\"") != std::string::npos);
    CHECK(what.find("[serve] context") != std::string::npos);
    CHECK(what.find("gradient_checkpointing") != std::string::npos);
  }
}

TEST_CASE("node memory: within its budget the node starts, and serving shares the training model's weights") {
  NodeSite site;
  const auto config = site.config("memory_mb = 4096", "[serve]\nhttp = \"127.0.0.1:0\"\n");
  node::NodeRuntime runtime(config);
  node::NodeServing serving(config, &runtime.base());
  CHECK(same_storage(serving.model(), runtime.base().model));
  CHECK(runtime.base().model.weights_read_only());  // shared: never written in place
}
