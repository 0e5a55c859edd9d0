#include "fedge/node/serving.h"

#include <fstream>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/node/local_trainer.h"
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

}  // namespace

std::pair<std::string, int> parse_host_port(const std::string& text, const std::string& what) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw Error(ErrorKind::kInvalidInput, what + ": '" + text + "' is not host:port (e.g. 127.0.0.1:8080)");
  }
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) throw Error(ErrorKind::kInvalidInput, what + ": bad port in '" + text + "'");
  return {text.substr(0, colon), port};
}

struct NodeServing::Impl {
  NodeRuntimeConfig config;
  std::unique_ptr<inference::Model> peer_model;  // the split-peer role's own model
  std::unique_ptr<SplitPeer> split_peer;
  std::unique_ptr<InferenceService> service;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<ZmqInferenceServer> zmq;

  explicit Impl(const NodeRuntimeConfig& c) : config(c) {
    auto loaded = inference::load_model_spec(config.model);
    auto model = std::make_unique<inference::Model>(std::move(loaded.model));
    auto tokenizer = std::make_unique<inference::Tokenizer>(std::move(loaded.tokenizer));
    inference::Model& model_ref = *model;
    ServiceOptions options;
    options.model_name = config.name.empty() ? "node-" + std::to_string(config.node_id) : config.name;
    options.max_queue = config.serve.max_queue;
    service = std::make_unique<InferenceService>(std::move(model), std::move(tokenizer), options);
    if (!config.serve.split_peer.empty()) {
      SplitOptions split;
      split.peer_endpoint = config.serve.split_peer;
      split.split_layer = config.serve.split_layers;
      split.prefill_deadline_ms = static_cast<int>(config.serve.split_deadline_ms);
      split.token_deadline_ms = static_cast<int>(config.serve.split_deadline_ms);
      split.node_id = config.node_id;
      service->set_split_client(std::make_unique<SplitClient>(model_ref, split));
      spdlog::info("split inference: layers [0, {}) here, the rest on {}", split.split_layer, split.peer_endpoint);
    }
    if (!config.serve.split_serve.empty()) {
      peer_model = std::make_unique<inference::Model>(inference::load_model_spec(config.model).model);
      SplitPeerOptions peer;
      peer.endpoint = config.serve.split_serve;
      split_peer = std::make_unique<SplitPeer>(*peer_model, peer);
      spdlog::info("serving as split peer on {}", split_peer->endpoint());
    }
    restore_global();
    if (!config.serve.http.empty()) {
      HttpOptions http_options;
      std::tie(http_options.host, http_options.port) = parse_host_port(config.serve.http, "serve.http");
      http = std::make_unique<HttpServer>(*service, http_options);
      spdlog::info("OpenAI-compatible API on {}", http->url());
    }
    if (!config.serve.zmq.empty()) {
      ZmqServerOptions zmq_options;
      zmq_options.endpoint = config.serve.zmq;
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

NodeServing::NodeServing(const NodeRuntimeConfig& config) : impl_(std::make_unique<Impl>(config)) {}
NodeServing::~NodeServing() = default;

void NodeServing::install_global(const ParamVector& params, std::uint64_t version) {
  impl_->install(AdapterSlot::kGlobal, params, version);
}
void NodeServing::install_local(const ParamVector& params, std::uint64_t version) {
  impl_->install(AdapterSlot::kLocal, params, version);
}
std::string NodeServing::http_url() const { return impl_->http ? impl_->http->url() : std::string(); }
std::string NodeServing::zmq_endpoint() const { return impl_->zmq ? impl_->zmq->endpoint() : std::string(); }
std::string NodeServing::split_peer_endpoint() const {
  return impl_->split_peer ? impl_->split_peer->endpoint() : std::string();
}

}  // namespace fedge::node
