// The node's local round step: global adapter in, update (local - global) out,
// in the federation's layout order, with the base untouched.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <catch2/catch.hpp>

#include <cmath>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/node/local_trainer.h"

namespace {

using fedge::ParamLayout;
using fedge::ParamVector;

fedge::training::TokenDataset small_data(int n, int seed) {
  const auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  std::vector<fedge::training::Record> records;
  for (int i = 0; i < n; ++i) {
    records.push_back({"well W" + std::to_string(i % 3) + " day " + std::to_string(i + seed) + ": ",
                       "liquid " + std::to_string(100 + 7 * i + seed) + " bbl"});
  }
  return fedge::training::TokenDataset::build(tokenizer, records, 64, false);
}

// The coordinator's view: the adapter's tensors in reversed order, so the test
// notices any mix-up between the wire layout and the adapter's own order.
ParamVector global_in_wire_order(const fedge::inference::Model& model) {
  fedge::inference::LoraConfig config;
  config.r = 4;
  auto adapter = fedge::inference::LoraAdapter::create(model.config(), config, 7);
  // Non-zero B, so the global adapter is not the identity. A seeded generator:
  // the default one's state depends on what ran before in the process.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  for (auto& t : adapter.parameters()) t.uniform_(-0.05, 0.05, gen);
  const ParamVector own = adapter.to_params();
  ParamLayout reversed;
  for (auto it = own.layout().entries().rbegin(); it != own.layout().entries().rend(); ++it) {
    reversed.add(it->name, it->shape);
  }
  return own.remapped(reversed);
}

fedge::node::LocalTrainRequest request(std::uint64_t round, double mu = 0.0) {
  fedge::node::LocalTrainRequest r;
  r.round = round;
  r.local_steps = 4;
  r.learning_rate = 5e-3;
  r.batch_size = 2;
  r.fedprox_mu = mu;
  return r;
}

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s);
}

}  // namespace

TEST_CASE("local trainer returns local - global in the wire layout and leaves the base alone", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const auto base_before = model.named_weights().front().second.clone();
  const ParamVector global = global_in_wire_order(model);
  fedge::node::LocalTrainer trainer(model, small_data(12, 0), small_data(4, 100));
  CHECK(trainer.num_examples() == 12);

  const auto result = trainer.train(global, request(1));
  REQUIRE(result.update.size() == global.size());
  CHECK(result.num_examples == 12);
  CHECK(result.train_loss > 0);
  CHECK(norm(result.update) > 0);
  // global + update is exactly what the model's adapter now holds.
  const ParamVector local = model.adapter("federated")->to_params().remapped(global.layout());
  for (std::size_t i = 0; i < global.size(); ++i) {
    REQUIRE(global.values()[i] + result.update[i] == Approx(local.values()[i]).margin(1e-7));
  }
  CHECK(at::equal(model.named_weights().front().second, base_before));

  // Deterministic per round; another round draws other batches.
  fedge::node::LocalTrainer again(model, small_data(12, 0), std::nullopt);
  CHECK(again.train(global, request(1)).update == result.update);
  CHECK(again.train(global, request(2)).update != result.update);
}

TEST_CASE("local trainer: FedProx pulls the update toward the global adapter", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  fedge::node::LocalTrainer trainer(model, small_data(12, 0), std::nullopt);
  const double free = norm(trainer.train(global, request(1, 0.0)).update);
  const double prox = norm(trainer.train(global, request(1, 50.0)).update);
  CHECK(prox < free);
}

TEST_CASE("local trainer: train_local_round on borrowed data is the trainer's own step", "[local_trainer]") {
  // The simulator's virtual nodes call train_local_round on their data; a real
  // node's LocalTrainer must compute exactly the same update (FedProx included).
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  const auto data = small_data(12, 0);
  fedge::node::LocalTrainer trainer(model, data, std::nullopt);
  for (double mu : {0.0, 5.0}) {
    const auto own = trainer.train(global, request(3, mu));
    const auto borrowed = fedge::node::train_local_round(model, data, global, request(3, mu), {});
    CHECK(borrowed.update == own.update);
    CHECK(borrowed.train_loss == own.train_loss);
    CHECK(borrowed.tokens == own.tokens);
    CHECK(borrowed.num_examples == 12);
  }
  // A request's own seed replaces the (trainer seed, round) one: the same seed,
  // the same batches whatever the round; another seed, other batches.
  auto seeded = [&](std::uint64_t round, std::uint64_t seed) {
    auto r = request(round);
    r.seed = seed;
    return fedge::node::train_local_round(model, data, global, r, {}).update;
  };
  CHECK(seeded(1, 42) == seeded(2, 42));
  CHECK(seeded(1, 42) != seeded(1, 43));
  CHECK_THROWS_WITH(fedge::node::train_local_round(model, fedge::training::TokenDataset{}, global, request(1), {}),
                    Catch::Contains("training set is empty"));
}

TEST_CASE("local trainer: held-out loss of the global adapter", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  fedge::node::LocalTrainer trainer(model, small_data(12, 0), small_data(4, 100));
  const auto before = trainer.evaluate(global);
  CHECK(before.tokens > 0);
  CHECK(std::isfinite(before.loss));
  CHECK(before.perplexity == Approx(std::exp(before.loss)));
  fedge::node::LocalTrainer no_eval(model, small_data(4, 0), std::nullopt);
  CHECK_THROWS_WITH(no_eval.evaluate(global), Catch::Contains("no held-out split"));
}

TEST_CASE("local trainer refuses layouts that are not a LoRA adapter for the model", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  fedge::node::LocalTrainer trainer(model, small_data(4, 0), std::nullopt);
  ParamLayout junk;
  junk.add("weights", {10});
  CHECK_THROWS_WITH(trainer.train(ParamVector(junk), request(1)), Catch::Contains("no LoRA A matrix"));

  // Right names, one tensor mis-shaped.
  const ParamVector global = global_in_wire_order(model);
  ParamLayout bent;
  for (const auto& e : global.layout().entries()) {
    auto shape = e.shape;
    if (&e == &global.layout().entries().front()) shape[1] += 1;
    bent.add(e.name, shape);
  }
  CHECK_THROWS_AS(trainer.train(ParamVector(bent), request(1)), fedge::Error);
  CHECK_THROWS_WITH(fedge::node::LocalTrainer(model, fedge::training::TokenDataset{}, std::nullopt),
                    Catch::Contains("training set is empty"));
}

TEST_CASE("local trainer: a round's batch above max_batch_size trains in micro-batches with the same step") {
  // Identical records: any draw of sequences gives the same batch, so the
  // micro-batched step must equal the one-batch step.
  const auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  std::vector<fedge::training::Record> records(6, fedge::training::Record{"well W1 day 3: ", "liquid 107 bbl"});
  const auto data = fedge::training::TokenDataset::build(tokenizer, records, 64, false);
  auto model = fedge::inference::Model::tiny(5);
  const ParamVector global = global_in_wire_order(model);
  auto req = request(1);
  req.batch_size = 4;
  fedge::node::LocalTrainerOptions whole, capped;
  capped.max_batch_size = 3;  // 4 = 2 micro-batches of 2
  // The exact f32 base: the bf16 base products round activations per chunk,
  // and chunks follow the batch's shape and the thread count (measured: 0.1%
  // to 2.2% apart over 4 steps at 1 to 4 threads), which is not what this
  // test is about.
  whole.train.frozen_base_bf16 = capped.train.frozen_base_bf16 = false;
  const auto a = fedge::node::train_local_round(model, data, global, req, whole);
  const auto b = fedge::node::train_local_round(model, data, global, req, capped);
  CHECK(a.tokens == b.tokens);
  CHECK(b.train_loss == Approx(a.train_loss).epsilon(1e-4));  // float order again
  REQUIRE(a.update.size() == b.update.size());
  // Equal up to the order of float sums (two backward passes add into the
  // gradients), which Adam's normalisation enlarges for near-zero gradients.
  std::vector<float> diff(a.update.size());
  for (std::size_t i = 0; i < diff.size(); ++i) diff[i] = a.update[i] - b.update[i];
  REQUIRE(norm(a.update) > 0);
  // Measured 3e-5 to 6e-5 at 1 to 4 threads; 1e-3 leaves a 15x margin.
  CHECK(norm(diff) / norm(a.update) < 1e-3);
}

namespace {

double distance(const ParamVector& a, const ParamVector& b) {
  const ParamVector bb = b.remapped(a.layout());
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a.values()[i] - bb.values()[i]) * (a.values()[i] - bb.values()[i]);
  return std::sqrt(s);
}

fedge::node::PersonalizationOptions personal(const std::string& kind, double lambda = 0.1) {
  fedge::node::PersonalizationOptions o;
  o.kind = kind;
  o.steps = 4;
  o.learning_rate = 5e-2;
  o.batch_size = 2;
  o.ditto_lambda = lambda;
  return o;
}

}  // namespace

TEST_CASE("personalization: finetune is a plain local round from the global, the global untouched", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  const ParamVector global_copy = global;
  fedge::node::LocalTrainer trainer(model, small_data(12, 0), std::nullopt);
  double loss = 0;
  const ParamVector p = trainer.personalize(global, nullptr, 5, personal("finetune"), loss);
  CHECK(loss > 0);
  CHECK(distance(global, global_copy) == 0.0);
  REQUIRE(p.layout().entries().size() == global.layout().entries().size());
  CHECK(p.layout().entries().front().name == global.layout().entries().front().name);  // global's layout order
  CHECK(distance(p, global) > 0);
  // The same steps as a round with the personal seed: exactly global + its update.
  auto r = request(5);
  r.local_steps = 4;
  r.learning_rate = 5e-2;
  r.seed = fedge::derive_seed(0, "personal/5");
  auto other = fedge::inference::Model::tiny(3);
  const auto round = fedge::node::train_local_round(other, small_data(12, 0), global, r, {});
  for (std::size_t i = 0; i < p.size(); ++i) REQUIRE(p.values()[i] == global.values()[i] + round.update[i]);
}

TEST_CASE("personalization: ditto trains the node's own adapter, pulled towards the global by lambda",
          "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  fedge::node::LocalTrainer trainer(model, small_data(12, 0), std::nullopt);
  double loss = 0;
  // A first ditto step without an adapter of its own starts from the global.
  const ParamVector first = trainer.personalize(global, nullptr, 1, personal("ditto", 0.0), loss);
  const ParamVector finetuned = trainer.personalize(global, nullptr, 1, personal("finetune"), loss);
  for (std::size_t i = 0; i < first.size(); ++i) REQUIRE(first.values()[i] == finetuned.values()[i]);

  // From its own adapter: lambda 0 ignores the global, a large lambda holds
  // the adapter near it.
  const ParamVector previous = first.remapped(first.layout());
  const ParamVector free = trainer.personalize(global, &previous, 2, personal("ditto", 0.0), loss);
  const ParamVector pulled = trainer.personalize(global, &previous, 2, personal("ditto", 20.0), loss);
  CHECK(distance(free, previous) > 0);
  CHECK(distance(pulled, global) < 0.5 * distance(free, global));
  // lambda 0 is training from the previous adapter alone, whatever the global.
  const ParamVector other_global = previous;
  const ParamVector free_again = trainer.personalize(other_global, &previous, 2, personal("ditto", 0.0), loss);
  CHECK(distance(free_again, free) == 0.0);
}

TEST_CASE("personalization: an unknown kind is refused", "[local_trainer]") {
  auto model = fedge::inference::Model::tiny(3);
  const ParamVector global = global_in_wire_order(model);
  fedge::node::LocalTrainer trainer(model, small_data(4, 0), std::nullopt);
  double loss = 0;
  CHECK_THROWS_WITH(trainer.personalize(global, nullptr, 1, personal("fedper"), loss),
                    Catch::Contains("unknown kind 'fedper'"));
}
