#include "fedge/node/local_trainer.h"

#include <chrono>
#include <string>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"

namespace fedge::node {
namespace {

std::string lora_a_name(int layer, inference::LoraTarget t) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + inference::lora_target_parent(t) + "." +
         inference::lora_target_name(t) + ".lora_A.weight";
}

}  // namespace

inference::LoraConfig lora_config_from_layout(const ParamLayout& layout, double alpha) {
  inference::LoraConfig config;
  config.alpha = alpha;
  config.target_modules.clear();
  config.r = 0;
  for (int t = 0; t < inference::kNumLoraTargets; ++t) {
    const auto target = static_cast<inference::LoraTarget>(t);
    const ParamEntry* a = layout.find(lora_a_name(0, target));
    if (a == nullptr) continue;
    if (a->shape.size() != 2 || a->shape[0] <= 0) {
      throw Error(ErrorKind::kInvalidInput, "federated layout: tensor '" + a->name + "' is not a LoRA A matrix");
    }
    if (config.r != 0 && config.r != a->shape[0]) {
      throw Error(ErrorKind::kInvalidInput, "federated layout: tensor '" + a->name + "' has rank " +
                                                std::to_string(a->shape[0]) + " but another target has rank " +
                                                std::to_string(config.r));
    }
    config.r = static_cast<int>(a->shape[0]);
    config.target_modules.push_back(inference::lora_target_name(target));
  }
  if (config.target_modules.empty()) {
    throw Error(ErrorKind::kInvalidInput,
                "federated layout: no LoRA A matrix for layer 0 (expected names like '" +
                    lora_a_name(0, inference::LoraTarget::kQ) + "')");
  }
  config.validate("federated layout");
  return config;
}

inference::LoraAdapter adapter_from_params(const ParamVector& params, const inference::ModelConfig& model,
                                           double alpha) {
  auto adapter = inference::LoraAdapter::create(model, lora_config_from_layout(params.layout(), alpha), 0);
  // remapped() checks every tensor's name and shape against what the model needs.
  adapter.from_params(params.remapped(adapter.layout()));
  return adapter;
}

LocalTrainer::LocalTrainer(inference::Model& model, training::TokenDataset train,
                           std::optional<training::TokenDataset> eval, LocalTrainerOptions options)
    : model_(model), train_(std::move(train)), eval_(std::move(eval)), options_(std::move(options)) {
  if (train_.empty()) throw Error(ErrorKind::kInvalidInput, "local trainer: the training set is empty");
  if (eval_ && eval_->empty()) eval_.reset();
}

namespace {

// Puts `global` into the model's adapter slot and makes it active; returns
// the adapter's own layout (the order the trainer uses).
ParamLayout install(inference::Model& model, const ParamVector& global, const LocalTrainerOptions& options) {
  auto adapter = adapter_from_params(global, model.config(), options.lora_alpha);
  ParamLayout own = adapter.layout();
  model.add_adapter(options.adapter_slot, std::move(adapter));
  model.set_active_adapter(options.adapter_slot);
  return own;
}

}  // namespace

LocalTrainRequest local_train_request(const TrainCommand& command) {
  LocalTrainRequest request;
  request.round = command.round;
  request.local_steps = command.hyper.local_steps;
  request.learning_rate = command.hyper.learning_rate;
  request.batch_size = command.hyper.batch_size;
  request.fedprox_mu = command.hyper.fedprox_mu;
  return request;
}

LocalTrainResult train_local_round(inference::Model& model, const training::TokenDataset& data,
                                   const ParamVector& global, const LocalTrainRequest& request,
                                   const LocalTrainerOptions& trainer_options,
                                   const std::function<bool()>& should_stop, const ParamVector* proximal_center,
                                   const ParamVector* gradient_offset) {
  const auto start = std::chrono::steady_clock::now();
  if (data.empty()) throw Error(ErrorKind::kInvalidInput, "local trainer: the training set is empty");
  const ParamLayout own = install(model, global, trainer_options);
  training::TrainOptions options = trainer_options.train;
  options.steps = request.local_steps;
  options.lr = request.learning_rate;
  options.batch_size = static_cast<int>(request.batch_size);
  if (trainer_options.max_batch_size > 0 && options.batch_size > trainer_options.max_batch_size) {
    // The largest micro-batch that divides the batch: as many sequences per step.
    int micro = trainer_options.max_batch_size;
    while (options.batch_size % micro != 0) --micro;
    options.grad_accum *= options.batch_size / micro;
    options.batch_size = micro;
  }
  options.fedprox_mu = request.fedprox_mu;
  options.seed = request.seed ? *request.seed : derive_seed(trainer_options.train.seed, request.round);
  options.validate();

  auto trainer = training::Trainer::for_adapter(model, trainer_options.adapter_slot, data, options);
  if (request.fedprox_mu > 0) trainer.set_proximal_center((proximal_center ? *proximal_center : global).remapped(own));
  if (gradient_offset) trainer.set_gradient_offset(gradient_offset->remapped(own));
  LocalTrainResult result;
  double loss_sum = 0;
  while (!trainer.done()) {
    if (should_stop && should_stop()) {
      throw Error(ErrorKind::kRuntime, "local training of round " + std::to_string(request.round) + " was stopped");
    }
    const auto stats = trainer.step();
    loss_sum += stats.loss;
    result.tokens += stats.tokens;
  }
  const ParamVector local = model.adapter(trainer_options.adapter_slot)->to_params().remapped(global.layout());
  result.update.resize(local.size());
  for (std::size_t i = 0; i < result.update.size(); ++i) result.update[i] = local.values()[i] - global.values()[i];
  if (gradient_offset && request.local_steps > 0) {
    const ParamVector mean = ParamVector(own, trainer.mean_raw_gradient()).remapped(global.layout());
    result.mean_gradient.assign(mean.values().begin(), mean.values().end());
  }
  result.train_loss = request.local_steps > 0 ? loss_sum / request.local_steps : 0.0;
  result.num_examples = data.size();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

LocalTrainResult LocalTrainer::train(const ParamVector& global, const LocalTrainRequest& request,
                                     const std::function<bool()>& should_stop, const ParamVector* gradient_offset) {
  auto result = train_local_round(model_, train_, global, request, options_, should_stop, nullptr, gradient_offset);
  spdlog::debug("round {}: {} local steps, train loss {:.4f}, {} tokens in {:.2f} s", request.round,
                request.local_steps, result.train_loss, result.tokens, result.seconds);
  return result;
}

ParamVector LocalTrainer::personalize(const ParamVector& global, const ParamVector* previous, std::uint64_t version,
                                      const PersonalizationOptions& options, double& train_loss,
                                      const std::function<bool()>& should_stop) {
  const bool ditto = options.kind == "ditto";
  if (!ditto && options.kind != "finetune")
    throw Error(ErrorKind::kInvalidInput, "personalization: unknown kind '" + options.kind + "'");
  ParamVector personal = ditto && previous ? previous->remapped(global.layout()) : global;
  LocalTrainRequest request;
  request.round = version;
  request.local_steps = options.steps;
  request.learning_rate = options.learning_rate;
  request.batch_size = options.batch_size;
  request.fedprox_mu = ditto ? options.ditto_lambda : 0.0;
  request.seed = derive_seed(options_.train.seed, "personal/" + std::to_string(version));
  // The round's start becomes the result: start + the update it returns.
  const LocalTrainResult result = train_local_round(model_, train_, personal, request, options_, should_stop, &global);
  for (std::size_t i = 0; i < personal.size(); ++i) personal.values()[i] += result.update[i];
  train_loss = result.train_loss;
  spdlog::debug("personal adapter for global v{} ({}): {} steps, train loss {:.4f}, {:.2f} s", version, options.kind,
                options.steps, result.train_loss, result.seconds);
  return personal;
}

training::EvalResult LocalTrainer::evaluate(const ParamVector& global) {
  if (!eval_) throw Error(ErrorKind::kInvalidInput, "local trainer: no held-out split to evaluate on");
  install(model_, global, options_);
  return training::evaluate_loss(model_, *eval_);
}

}  // namespace fedge::node
