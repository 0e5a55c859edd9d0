#include "fedge/protocol/transport.h"

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedge/common/error.h"

namespace fedge::protocol {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kZapDomain = "fedge";

// Sends the payload without copying: zmq holds a reference to its storage
// until the I/O thread is done with it.
zmq::message_t to_message(const Bytes& b) {
  if (!b.owner() || b.size() == 0) return zmq::message_t(b.data(), b.size());
  auto* hold = new std::shared_ptr<const void>(b.owner());
  return zmq::message_t(
      const_cast<std::uint8_t*>(b.data()), b.size(),
      [](void*, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }, hold);
}

Bytes from_message(zmq::message_t&& msg) {
  auto owned = std::make_shared<zmq::message_t>(std::move(msg));
  return Bytes::adopt(owned, static_cast<const std::uint8_t*>(owned->data()), owned->size());
}

void apply_common(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(o.limits.max_message_bytes));
  s.set(zmq::sockopt::handshake_ivl, o.handshake_ms);
  s.set(zmq::sockopt::sndtimeo, o.send_timeout_ms);
  s.set(zmq::sockopt::sndhwm, o.high_water_mark);
  s.set(zmq::sockopt::rcvhwm, o.high_water_mark);
}

// Polls for input until `deadline`; false on timeout or EINTR.
bool wait_readable(zmq::socket_t& s, std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() < 0) left = std::chrono::milliseconds(0);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  try {
    return zmq::poll(&item, 1, left) > 0;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw Error(ErrorKind::kIo, std::string("zmq poll failed: ") + e.what());
  }
}

void send_or_throw(zmq::socket_t& s, zmq::message_t&& msg, zmq::send_flags flags, const std::string& peer) {
  try {
    if (!s.send(std::move(msg), flags)) {
      throw Error(ErrorKind::kIo, "send to " + peer + " timed out (peer not reading or not connected)");
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) {
      throw Error(ErrorKind::kNotFound, "peer " + peer + " is not connected (it left or never connected)");
    }
    throw Error(ErrorKind::kIo, "send to " + peer + " failed: " + e.what());
  }
}

std::string printable(const std::string& id) {
  std::string out;
  for (unsigned char c : id) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

}  // namespace

// ZAP (RFC 27) handler: admits CURVE clients whose public key is allow-listed.
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, const std::vector<std::string>& allowed)
      : zap_(ctx, zmq::socket_type::rep), stop_rx_(ctx, zmq::socket_type::pair), stop_tx_(ctx, zmq::socket_type::pair) {
    for (const auto& k : allowed) allow(k);
    bind_zap();
    static std::atomic<unsigned> counter{0};
    const std::string stop = "inproc://fedge.zap.stop." + std::to_string(counter++);
    zap_.set(zmq::sockopt::linger, 0);
    stop_rx_.set(zmq::sockopt::linger, 0);
    stop_tx_.set(zmq::sockopt::linger, 0);
    stop_rx_.bind(stop);
    stop_tx_.connect(stop);
    thread_ = std::thread([this] { run(); });
  }
  ~ZapHandler() {
    try {
      stop_tx_.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::error("ZAP handler: cannot signal stop: {}", e.what());
    }
    thread_.join();
    try {
      zap_.unbind(kZapEndpoint);  // free the endpoint now, not when the reaper closes the socket
    } catch (const zmq::error_t&) {
    }
  }
  void allow(const std::string& key) {
    z85_to_key(key, "allow-listed client key");
    std::lock_guard lock(mu_);
    allowed_.insert(key);
  }
  void revoke(const std::string& key) {
    std::lock_guard lock(mu_);
    allowed_.erase(key);
  }

 private:
  // A just-closed handler's endpoint can stay registered for a moment; retry briefly.
  void bind_zap() {
    for (int attempt = 0;; ++attempt) {
      try {
        zap_.bind(kZapEndpoint);
        return;
      } catch (const zmq::error_t& e) {
        if (e.num() != EADDRINUSE || attempt == 20) {
          throw Error(ErrorKind::kRuntime, std::string("cannot start the ZAP handler: ") + e.what() +
                                               " (only one CURVE Router per Context)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  void run() {
    zmq::pollitem_t items[] = {{zap_.handle(), 0, ZMQ_POLLIN, 0}, {stop_rx_.handle(), 0, ZMQ_POLLIN, 0}};
    for (;;) {
      try {
        zmq::poll(items, 2, std::chrono::milliseconds(-1));
        if (items[1].revents & ZMQ_POLLIN) return;
        if (items[0].revents & ZMQ_POLLIN) handle();
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        if (e.num() != ETERM) spdlog::error("ZAP handler stopped: {}", e.what());
        return;
      }
    }
  }
  void handle() {
    std::vector<zmq::message_t> req;
    (void)zmq::recv_multipart(zap_, std::back_inserter(req));
    req.resize(std::max<std::size_t>(req.size(), 6));  // REP must answer even a short request (refused below)
    const std::string mechanism = req[5].to_string();
    std::string user, status = "400", text = "client key not allowed";
    if (mechanism == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
      Key32 k;
      std::memcpy(k.data(), req[6].data(), 32);
      user = key_to_z85(k);
      std::lock_guard lock(mu_);
      if (allowed_.count(user)) status = "200", text = "OK";
    } else {
      text = "mechanism " + mechanism + " refused";
    }
    if (status != "200") spdlog::warn("refused {} client {} from {}", mechanism, user, req[3].to_string());
    std::vector<zmq::message_t> reply;
    reply.emplace_back(std::string("1.0"));
    reply.push_back(std::move(req[1]));
    reply.emplace_back(status);
    reply.emplace_back(text);
    reply.emplace_back(status == "200" ? user : std::string());
    reply.emplace_back();
    zmq::send_multipart(zap_, reply);
  }

  zmq::socket_t zap_, stop_rx_, stop_tx_;
  std::mutex mu_;
  std::set<std::string> allowed_;
  std::thread thread_;
};

Context::Context(int io_threads) : ctx_(std::make_unique<zmq::context_t>(io_threads)) {}
Context::~Context() = default;

Router::Router(Context& ctx, const std::string& endpoint, const SocketOptions& options,
               std::optional<CurveServer> curve) {
  if (curve) {
    z85_to_key(curve->keys.secret_z85, "coordinator secret key");
    zap_ = std::make_unique<ZapHandler>(ctx.native(), curve->allowed_clients);
  }
  socket_ = std::make_unique<zmq::socket_t>(ctx.native(), zmq::socket_type::router);
  apply_common(*socket_, options);
  socket_->set(zmq::sockopt::router_mandatory, 1);
  if (curve) {
    socket_->set(zmq::sockopt::zap_domain, kZapDomain);
    socket_->set(zmq::sockopt::curve_server, 1);
    socket_->set(zmq::sockopt::curve_secretkey, curve->keys.secret_z85);
  }
  try {
    socket_->bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw Error(ErrorKind::kIo, "cannot bind " + endpoint + ": " + e.what());
  }
}

Router::~Router() {
  socket_.reset();  // close the socket before its ZAP handler goes
  zap_.reset();
}

std::string Router::endpoint() const { return socket_->get(zmq::sockopt::last_endpoint); }

void Router::send(const std::string& peer, const Bytes& payload) {
  send_or_throw(*socket_, zmq::message_t(peer.data(), peer.size()), zmq::send_flags::sndmore, printable(peer));
  send_or_throw(*socket_, to_message(payload), zmq::send_flags::none, printable(peer));
}

std::optional<Incoming> Router::recv(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (wait_readable(*socket_, deadline)) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(*socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) continue;
    if (frames.size() != 2) {
      ++dropped_;
      spdlog::warn("dropped a message of {} frames from {} (expected one payload frame)", frames.size() - 1,
                   printable(frames[0].to_string()));
      continue;
    }
    Incoming in;
    in.peer = frames[0].to_string();
    if (const char* user = zmq_msg_gets(frames[1].handle(), "User-Id")) in.user_id = user;
    in.payload = from_message(std::move(frames[1]));
    return in;
  }
  return std::nullopt;
}

void Router::allow(const std::string& public_z85) {
  if (!zap_) throw Error(ErrorKind::kInvalidInput, "allow-list changes need a CURVE Router");
  zap_->allow(public_z85);
}

void Router::revoke(const std::string& public_z85) {
  if (!zap_) throw Error(ErrorKind::kInvalidInput, "allow-list changes need a CURVE Router");
  zap_->revoke(public_z85);
}

Dealer::Dealer(Context& ctx, const std::string& endpoint, const SocketOptions& options,
               std::optional<CurveClient> curve, const std::string& routing_id) {
  socket_ = std::make_unique<zmq::socket_t>(ctx.native(), zmq::socket_type::dealer);
  apply_common(*socket_, options);
  if (!routing_id.empty()) socket_->set(zmq::sockopt::routing_id, routing_id);
  if (curve) {
    z85_to_key(curve->keys.public_z85, "node public key");
    z85_to_key(curve->keys.secret_z85, "node secret key");
    z85_to_key(curve->server_public_z85, "coordinator public key");
    socket_->set(zmq::sockopt::curve_serverkey, curve->server_public_z85);
    socket_->set(zmq::sockopt::curve_publickey, curve->keys.public_z85);
    socket_->set(zmq::sockopt::curve_secretkey, curve->keys.secret_z85);
  }
  try {
    socket_->connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw Error(ErrorKind::kIo, "cannot connect to " + endpoint + ": " + e.what());
  }
}

Dealer::~Dealer() = default;

void Dealer::send(const Bytes& payload) { send_or_throw(*socket_, to_message(payload), zmq::send_flags::none, "router"); }

std::optional<Bytes> Dealer::recv(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (wait_readable(*socket_, deadline)) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(*socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) continue;
    if (frames.size() != 1) {
      ++dropped_;
      spdlog::warn("dropped a message of {} frames (expected one)", frames.size());
      continue;
    }
    return from_message(std::move(frames[0]));
  }
  return std::nullopt;
}

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

bool is_loopback_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  const std::string text(host);
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, text.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

bool is_loopback_endpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  const std::string_view address = endpoint.substr(6);
  // "source;destination" (a connect from a chosen interface): not worth
  // judging, so not loopback.
  const auto colon = address.rfind(':');
  if (address.find(';') != std::string_view::npos || colon == std::string_view::npos) return false;
  return is_loopback_host(address.substr(0, colon));
}

}  // namespace fedge::protocol
