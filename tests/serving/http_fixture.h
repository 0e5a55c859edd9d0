// A tiny model served over real loopback HTTP, for the serving tests
// (test_http_server.cpp, test_api_keys.cpp). Include it before Catch: ATen
// (through glog) defines CHECK too, and the tests must use Catch's.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"

namespace fedge::serving::testing_http {

struct HttpFixture {
  explicit HttpFixture(HttpOptions http = {}, bool expose_local = false)
      : service(model, tokenizer, service_options(expose_local)), server(service, http) {}
  static ServiceOptions service_options(bool expose_local) {
    ServiceOptions o;
    o.model_name = "tiny";
    o.max_tokens_limit = 128;
    o.expose_local_adapter = expose_local;
    return o;
  }
  bool torch_ready = (inference::setup_torch(1), true);
  inference::Model model = inference::Model::tiny(17);
  inference::Tokenizer tokenizer = inference::Tokenizer::byte_level_tiny();
  InferenceService service;
  HttpServer server;

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(30, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const nlohmann::json& body) const {
    return client().Post(path.c_str(), body.dump(), "application/json");
  }
  CompletionResult direct(const std::string& prompt, int max_tokens, AdapterChoice a = AdapterChoice::kDefault) {
    CompletionRequest r;
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.adapter = a;
    return service.complete(r);
  }
  // A fresh adapter (B = 0) in the local slot, version 7.
  void install_local() {
    inference::LoraConfig lc;
    service.install_adapter(AdapterSlot::kLocal, inference::LoraAdapter::create(model.config(), lc, 2), 7);
  }
};

}  // namespace fedge::serving::testing_http
