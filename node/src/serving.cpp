#include "fedge/node/serving.h"

#include <fstream>
#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/node/local_trainer.h"
#include "fedge/protocol/keys.h"
#include "fedge/protocol/transport.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"
#include "fedge/serving/split_inference.h"
#include "fedge/serving/zmq_inference.h"

namespace fedge::node {
namespace {

namespace fs = std::filesystem;
using serving::AdapterSlot;
using serving::HttpOptions;
using serving::HttpServer;
using serving::InferenceService;
using serving::ServiceOptions;
using serving::SplitClient;
using serving::SplitOptions;
using serving::SplitPeer;
using serving::SplitPeerOptions;
using serving::ZmqInferenceServer;
using serving::ZmqServerOptions;

// serve.insecure is for one machine: each plaintext endpoint must be loopback.
void require_loopback(const std::string& endpoint, const std::string& setting) {
  if (protocol::is_loopback_endpoint(endpoint)) return;
  throw Error(ErrorKind::kInvalidInput,
              "serve.insecure = true would send " + setting + " ('" + endpoint + "') in plain text; it is allowed on "
              "loopback endpoints only (tcp://127.0.0.1:..., ipc://...). Remove serve.insecure and use CurveZMQ "
              "keys (docs/SERVING.md, \"Who may ask\")");
}

// This node's CURVE pair for its serving links: serve.key, else node.key.
protocol::CurveKeyPair serving_keys(const NodeRuntimeConfig& c, const std::string& setting) {
  const fs::path& file = c.serve.key.empty() ? c.key_file : c.serve.key;
  if (file.empty())
    throw Error(ErrorKind::kInvalidInput, setting + " runs over CurveZMQ and needs this node's key pair: set serve.key "
                                          "(or node.key) to a secret key file from 'fedge keygen'");
  return protocol::load_key_pair(file);
}

// CURVE settings of a bound serving endpoint (serve.zmq, serve.split_serve),
// or nullopt for plaintext (serve.insecure, loopback only).
std::optional<protocol::CurveServer> curve_server(const NodeRuntimeConfig& c, const std::string& endpoint,
                                                  const std::string& setting, const fs::path& allow_list,
                                                  const std::string& allow_setting) {
  if (c.serve.insecure) {
    require_loopback(endpoint, setting);
    spdlog::warn("{} runs WITHOUT CurveZMQ (serve.insecure = true): requests and answers are plain text", setting);
    return std::nullopt;
  }
  if (allow_list.empty())
    throw Error(ErrorKind::kInvalidInput,
                setting + " is set but " + allow_setting + " is not: name a file of the public keys it may answer "
                "(one per line, as 'fedge keygen' writes NAME.pub), or set serve.insecure = true for a loopback "
                "endpoint on one machine");
  protocol::CurveServer curve{serving_keys(c, setting), protocol::load_allow_list(allow_list)};
  if (curve.allowed_clients.empty())
    throw Error(ErrorKind::kInvalidInput, allow_setting + ": " + allow_list.string() +
                                              " lists no public keys, so nobody could connect; add one per line");
  return curve;
}

// CURVE settings of the split link to serve.split.peer.
std::optional<protocol::CurveClient> split_curve_client(const NodeRuntimeConfig& c) {
  if (c.serve.insecure) {
    require_loopback(c.serve.split_peer, "serve.split.peer");
    spdlog::warn("the split link to {} runs WITHOUT CurveZMQ (serve.insecure = true)", c.serve.split_peer);
    return std::nullopt;
  }
  if (c.serve.split_peer_public_key.empty())
    throw Error(ErrorKind::kInvalidInput,
                "serve.split.peer is set but serve.split.peer_public_key is not: name the peer's public key file "
                "(its 'fedge keygen' NAME.pub; the peer lists this node's key in its serve.split_allow_list), or set "
                "serve.insecure = true for a loopback peer");
  return protocol::CurveClient{serving_keys(c, "serve.split.peer"),
                               protocol::load_public_key(c.serve.split_peer_public_key)};
}

// Who may ask, settled before the model loads, so a config mistake fails fast.
struct ServingSecurity {
  std::shared_ptr<const protocol::ApiKeys> api_keys;
  std::optional<protocol::CurveServer> zmq, split_serve;
  std::optional<protocol::CurveClient> split_peer;
};

ServingSecurity read_security(const NodeRuntimeConfig& c) {
  ServingSecurity s;
  if (!c.serve.http.empty()) {
    if (!c.serve.api_keys.empty()) s.api_keys = std::make_shared<protocol::ApiKeys>(protocol::ApiKeys::load(c.serve.api_keys, "serve.api_keys"));
    const std::string host = parse_host_port(c.serve.http, "serve.http").first;
    if (!s.api_keys && !protocol::is_loopback_host(host))
      throw Error(ErrorKind::kInvalidInput,
                  "serve.http = \"" + c.serve.http + "\" is beyond loopback but serve.api_keys is not set: anyone "
                  "reaching it could use the model. Name a key file in serve.api_keys (docs/SERVING.md, \"API "
                  "keys\"), or serve on 127.0.0.1");
  }
  if (!c.serve.zmq.empty()) s.zmq = curve_server(c, c.serve.zmq, "serve.zmq", c.serve.zmq_allow_list, "serve.zmq_allow_list");
  if (!c.serve.split_serve.empty())
    s.split_serve = curve_server(c, c.serve.split_serve, "serve.split_serve", c.serve.split_allow_list,
                                 "serve.split_allow_list");
  if (!c.serve.split_peer.empty()) s.split_peer = split_curve_client(c);
  return s;
}

}  // namespace

struct NodeServing::Impl {
  NodeRuntimeConfig config;
  std::optional<inference::LoadedModel> own_base;  // without a base from the node runtime
  // One copy of the base weights per node: serving and the split-peer role
  // each have a Model over them (Model::share), with adapters of their own.
  std::unique_ptr<inference::Model> model;
  std::unique_ptr<inference::Model> peer_model;
  std::unique_ptr<SplitPeer> split_peer;
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<ZmqInferenceServer> zmq;

  Impl(const NodeRuntimeConfig& c, const inference::LoadedModel* base) : config(c) {
    ServingSecurity security = read_security(config);
    if (!base) {
      inference::LoadOptions load;
      load.weights = config.model_weights;
      base = &own_base.emplace(inference::load_model_spec(config.model, load));
    }
    model = std::make_unique<inference::Model>(base->model.share());
    inference::Model& model_ref = *model;
    ServiceOptions options;
    options.model_name = config.name.empty() ? "node-" + std::to_string(config.node_id) : config.name;
    options.max_queue = config.serve.max_queue;
    options.max_batch = config.serve.max_batch;
    options.context = config.serve.context;
    options.expose_local_adapter = config.serve.expose_local_adapter;
    service = std::make_unique<InferenceService>(*model, base->tokenizer, options);
    if (!config.serve.split_peer.empty()) {
      SplitOptions split;
      split.peer_endpoint = config.serve.split_peer;
      split.split_layer = config.serve.split_layers;
      split.prefill_deadline_ms = static_cast<int>(config.serve.split_deadline_ms);
      split.token_deadline_ms = static_cast<int>(config.serve.split_deadline_ms);
      split.node_id = config.node_id;
      split.curve = security.split_peer;
      service->set_split_client(std::make_unique<SplitClient>(model_ref, split));
      spdlog::info("split inference: layers [0, {}) here, the rest on {}", split.split_layer, split.peer_endpoint);
    }
    if (!config.serve.split_serve.empty()) {
      peer_model = std::make_unique<inference::Model>(base->model.share());
      SplitPeerOptions peer;
      peer.max_sessions = config.serve.split_sessions;
      peer.endpoint = config.serve.split_serve;
      peer.curve = security.split_serve;
      split_peer = std::make_unique<SplitPeer>(*peer_model, peer);
      spdlog::info("serving as split peer on {}", split_peer->endpoint());
    }
    restore_global();
    if (!config.serve.http.empty()) {
      HttpOptions http_options;
      std::tie(http_options.host, http_options.port) = parse_host_port(config.serve.http, "serve.http");
      http_options.api_keys = security.api_keys;
      http_options.max_n = config.serve.max_n;
      http = std::make_unique<HttpServer>(*service, http_options);
      spdlog::info("OpenAI-compatible API on {}", http->url());
    }
    if (!config.serve.zmq.empty()) {
      ZmqServerOptions zmq_options;
      zmq_options.endpoint = config.serve.zmq;
      zmq_options.curve = security.zmq;
      zmq = std::make_unique<ZmqInferenceServer>(*service, zmq_options);
      spdlog::info("inference over ZeroMQ on {}", zmq->endpoint());
    }
  }

  ~Impl() {
    if (http) http->stop();
    if (zmq) zmq->stop();
    if (split_peer) split_peer->stop();
    if (service) service->stop();
  }

  void install(AdapterSlot slot, const ParamVector& params, std::uint64_t version) {
    const auto lora = lora_config_from_layout(params.layout(), config.trainer.lora_alpha);
    service->install_adapter(slot, params, lora, version);
  }

  // A restarted node serves the global it had before, until the coordinator sends a newer one.
  void restore_global() {
    const fs::path dir = config.state_dir / "global";
    if (!fs::exists(dir / "adapter_model.safetensors")) return;
    std::uint64_t version = 0;
    std::ifstream(dir / "fedge_version.txt") >> version;
    install(AdapterSlot::kGlobal, ParamVector::load(dir / "adapter_model.safetensors"), version);
    spdlog::info("serving the saved global adapter v{} from {}", version, dir.string());
  }
};

NodeServing::NodeServing(const NodeRuntimeConfig& config, const inference::LoadedModel* base)
    : impl_(std::make_unique<Impl>(config, base)) {}
NodeServing::~NodeServing() = default;

void NodeServing::install_global(const ParamVector& params, std::uint64_t version) {
  impl_->install(AdapterSlot::kGlobal, params, version);
}
void NodeServing::install_local(const ParamVector& params, std::uint64_t version) {
  // Not exposed: the private adapter stays out of the serving process's model.
  if (!impl_->config.serve.expose_local_adapter) return;
  impl_->install(AdapterSlot::kLocal, params, version);
}
void NodeServing::set_metrics_provider(std::function<void(prometheus::TextWriter&)> provider) {
  if (impl_->http) impl_->http->set_metrics_provider(std::move(provider));
}

void write_node_metrics(const NodeStats& st, prometheus::TextWriter& w) {
  w.counter("fedge_training_rounds_total", "Local trainings for federated rounds, by outcome.",
            {{{{"outcome", "completed"}}, double(st.rounds_trained)}, {{{"outcome", "failed"}}, double(st.rounds_failed)}});
  w.counter("fedge_training_steps_total", "Optimiser steps of completed local trainings.", double(st.training_steps));
  w.counter("fedge_training_seconds_total", "Seconds spent in completed local trainings.", st.training_seconds);
  w.gauge("fedge_training_last_loss", "Mean training loss of the last local training (NaN before the first).",
          st.last_train_loss);
  w.gauge("fedge_eval_last_loss", "Held-out loss of the latest global adapter on this node's eval data (NaN without).",
          st.last_eval_loss);
  w.gauge("fedge_node_global_version", "Global adapter version installed on this node (-1 before the first).",
          st.has_global ? double(st.global_version) : -1.0);
  w.counter("fedge_node_global_installs_total", "Global adapters installed since the node started.",
            double(st.global_installs));
  w.gauge("fedge_node_round", "The federated round this node last heard of.", double(st.current_round));
  w.gauge("fedge_node_personal_version",
          "Global version the personalized adapter was last made from ([personalization]; 0: none yet).",
          double(st.personal_version));
}

std::string NodeServing::http_url() const { return impl_->http ? impl_->http->url() : std::string(); }
std::string NodeServing::zmq_endpoint() const { return impl_->zmq ? impl_->zmq->endpoint() : std::string(); }
const inference::Model& NodeServing::model() const { return *impl_->model; }
std::string NodeServing::split_peer_endpoint() const {
  return impl_->split_peer ? impl_->split_peer->endpoint() : std::string();
}

}  // namespace fedge::node
