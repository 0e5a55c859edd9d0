#include <filesystem>
#include <random>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "fedge/protocol/transport.h"
#include "samples.h"

using namespace fedge::protocol;
using namespace std::chrono_literals;

namespace {

constexpr auto kArrive = 5000ms;   // upper bound for a message that must arrive
constexpr auto kRefused = 600ms;   // how long we wait to see that nothing arrives

std::filesystem::path fresh_dir(const std::string& name) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("fedge_" + name + "_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

// Node sends a sample, router decodes it and answers; node decodes the answer.
void exchange(Router& router, Dealer& dealer, const std::string& expect_user = {}) {
  auto heartbeat = test::all_samples()[2];
  dealer.send(encode(heartbeat));
  auto in = router.recv(kArrive);
  REQUIRE(in);
  CHECK(decode(in->payload, {}) == heartbeat);
  CHECK(in->user_id == expect_user);
  auto plan = test::envelope(test::sample_plan(), 0);
  router.send(in->peer, encode(plan));
  auto back = dealer.recv(kArrive);
  REQUIRE(back);
  CHECK(decode(*back, {}) == plan);
}

}  // namespace

TEST_CASE("router and dealer exchange messages over tcp, ipc and inproc") {
  auto dir = fresh_dir("ipc");
  for (const std::string& endpoint : {std::string("tcp://127.0.0.1:*"), "ipc://" + (dir / "c.sock").string(),
                                     std::string("inproc://fedge-test")}) {
    INFO(endpoint);
    Context ctx;
    Router router(ctx, endpoint);
    const std::string bound = router.endpoint();
    if (endpoint.starts_with("tcp")) CHECK(bound.find(":*") == std::string::npos);
    Dealer dealer(ctx, bound, {}, std::nullopt, "node-11");
    exchange(router, dealer);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("large payloads cross tcp intact and decode without copying") {
  Context ctx;
  Router router(ctx, "tcp://127.0.0.1:*");
  Dealer dealer(ctx, router.endpoint());
  std::vector<float> update(1 << 20);
  for (std::size_t i = 0; i < update.size(); ++i) update[i] = static_cast<float>(i) * 0.5f - 7.0f;
  auto msg = test::envelope(PlainUpdate{3, Payload<float>::borrow(update), 0.25f}, 12);
  dealer.send(encode(msg));
  auto in = router.recv(kArrive);
  REQUIRE(in);
  Expectations expect;
  expect.update_length = update.size();
  bool zero_copy = false;
  auto back = decode(in->payload, {}, expect, &zero_copy);
  CHECK(zero_copy);  // zmq allocates large messages with malloc alignment
  CHECK(std::get<PlainUpdate>(back.body).update.to_vector() == update);
}

TEST_CASE("sending to an unknown peer is a clear error") {
  Context ctx;
  Router router(ctx, "inproc://unknown-peer");
  try {
    router.send("nobody", encode(test::all_samples()[1]));
    FAIL("send to an unknown peer succeeded");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kNotFound);
    CHECK(std::string(e.what()).find("peer nobody is not connected") != std::string::npos);
  }
}

TEST_CASE("bad framing is dropped and counted, and the router keeps serving") {
  Context ctx;
  Router router(ctx, "tcp://127.0.0.1:*");
  Dealer dealer(ctx, router.endpoint());
  std::array<zmq::const_buffer, 2> two = {zmq::str_buffer("a"), zmq::str_buffer("b")};
  zmq::send_multipart(dealer.socket(), two);
  exchange(router, dealer);
  CHECK(router.dropped_frames() == 1);
}

TEST_CASE("a message over ZMQ_MAXMSGSIZE never reaches the router") {
  Context ctx;
  SocketOptions small;
  small.limits.max_message_bytes = 2048;
  Router router(ctx, "tcp://127.0.0.1:*", small);
  Dealer big(ctx, router.endpoint());
  big.send(encode(test::all_samples()[11]));  // plain update of 1000 floats, > 2 KiB
  CHECK_FALSE(router.recv(kRefused));
  Dealer other(ctx, router.endpoint());
  exchange(router, other);  // the router still serves well-behaved peers
}

TEST_CASE("curve: an allow-listed client talks, others cannot") {
  Context ctx;
  const auto server = generate_curve_keypair();
  const auto good = generate_curve_keypair();
  const auto stranger = generate_curve_keypair();
  Router router(ctx, "tcp://127.0.0.1:*", {}, CurveServer{server, {good.public_z85}});
  const std::string endpoint = router.endpoint();

  Dealer allowed(ctx, endpoint, {}, CurveClient{good, server.public_z85});
  exchange(router, allowed, good.public_z85);

  Dealer refused(ctx, endpoint, {}, CurveClient{stranger, server.public_z85});
  refused.send(encode(test::all_samples()[2]));
  CHECK_FALSE(router.recv(kRefused));

  Dealer plain(ctx, endpoint);  // no CURVE at all
  plain.send(encode(test::all_samples()[2]));
  CHECK_FALSE(router.recv(kRefused));

  Dealer wrong_server(ctx, endpoint, {}, CurveClient{good, stranger.public_z85});  // expects another server
  wrong_server.send(encode(test::all_samples()[2]));
  CHECK_FALSE(router.recv(kRefused));

  // Allow-listing the stranger takes effect for a new connection.
  router.allow(stranger.public_z85);
  Dealer now_allowed(ctx, endpoint, {}, CurveClient{stranger, server.public_z85});
  exchange(router, now_allowed, stranger.public_z85);
}

TEST_CASE("curve router in one context, clients in another, clean shutdown") {
  const auto server = generate_curve_keypair();
  const auto node = generate_curve_keypair();
  Context server_ctx, node_ctx;
  auto router = std::make_unique<Router>(server_ctx, "tcp://127.0.0.1:*", SocketOptions{},
                                         CurveServer{server, {node.public_z85}});
  Dealer dealer(node_ctx, router->endpoint(), {}, CurveClient{node, server.public_z85});
  exchange(*router, dealer, node.public_z85);
  router.reset();  // stops the ZAP thread and closes the socket
  // A second curve router in the same context can start once the first is gone.
  Router again(server_ctx, "tcp://127.0.0.1:*", {}, CurveServer{server, {}});
  CHECK_THROWS_AS(Router(server_ctx, "tcp://127.0.0.1:*", {}, CurveServer{server, {}}), fedge::Error);
}

TEST_CASE("malformed keys are refused when sockets are made") {
  Context ctx;
  auto server = generate_curve_keypair();
  CHECK_THROWS_AS(Router(ctx, "inproc://x", {}, CurveServer{{"short", "short"}, {}}), fedge::Error);
  CHECK_THROWS_AS(Router(ctx, "inproc://y", {}, CurveServer{server, {"not a key"}}), fedge::Error);
  CHECK_THROWS_AS(Dealer(ctx, "inproc://z", {}, CurveClient{server, "bad"}), fedge::Error);
  CHECK_THROWS_AS(Router(ctx, "tcp://256.0.0.1:1"), fedge::Error);
}

TEST_CASE("loopback hosts and endpoints: only addresses that stay on this machine", "[transport]") {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"}) {
    INFO(host);
    CHECK(is_loopback_host(host));
  }
  for (const char* host : {"0.0.0.0", "*", "", "10.0.0.1", "128.0.0.1", "::", "[::]", "edge-server", "eth0",
                           "127.0.0.1.example.com", "localhost.example.com"}) {
    INFO(host);
    CHECK_FALSE(is_loopback_host(host));
  }
  for (const char* endpoint : {"tcp://127.0.0.1:5560", "tcp://127.0.0.1:*", "tcp://[::1]:5560", "tcp://localhost:1",
                               "ipc:///run/fedge.sock", "inproc://serving"}) {
    INFO(endpoint);
    CHECK(is_loopback_endpoint(endpoint));
  }
  for (const char* endpoint : {"tcp://*:5560", "tcp://0.0.0.0:5560", "tcp://10.1.2.3:5600", "tcp://eth0:5560",
                               "tcp://127.0.0.1", "tcp://10.0.0.1;127.0.0.1:5560", "udp://127.0.0.1:5560",
                               "pgm://127.0.0.1;239.192.1.1:5555", "127.0.0.1:5560", ""}) {
    INFO(endpoint);
    CHECK_FALSE(is_loopback_endpoint(endpoint));
  }
}
