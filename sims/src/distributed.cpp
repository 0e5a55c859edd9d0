// A simulation over several processes: the coordinator process's HostPool and
// RemoteHost links, and the node host's loop (serve_as_node_host). The node
// host and the pool exchange host_wire.h messages over a host channel
// (host_channel.h: ZeroMQ or MPI); the virtual nodes' own messages travel
// inside them as encoded protocol Envelopes.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "context.h"
#include "federation_sim.h"
#include "host_channel.h"
#include "host_pool.h"
#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/sims/node_host.h"

namespace fedge::sims::detail {
namespace {

using Seconds = std::chrono::duration<double>;
constexpr auto kPoll = std::chrono::milliseconds(200);
constexpr double kLogEvery_s = 30;
constexpr auto kFlush = std::chrono::milliseconds(3000);  // for the last words of a run

template <class T>
T expect(HostMessage m, const std::string& from, const char* what) {
  if (const auto* e = std::get_if<HostError>(&m)) {
    throw Error(ErrorKind::kRuntime, from + " failed: " + e->message);
  }
  if (auto* t = std::get_if<T>(&m)) return std::move(*t);  // a window report's deliveries are not copied
  throw Error(ErrorKind::kProtocol, from + " sent " + host_message_name(m) + " where " + what + " was expected");
}

}  // namespace

// One node host, as the level drivers see it.
class RemoteHost : public HostLink {
 public:
  RemoteHost(HostPool& pool, std::string peer, std::string name, int first, int end, double timeout_s)
      : pool_(pool), peer_(std::move(peer)), name_(std::move(name)), first_(first), end_(end), timeout_s_(timeout_s) {}
  int first_node() const override { return first_; }
  int end_node() const override { return end_; }
  std::string name() const override {
    return "node host " + name_ + " (nodes " + std::to_string(first_) + ".." + std::to_string(end_ - 1) + ")";
  }
  const std::string& peer() const { return peer_; }
  void send_start(int level) override { pool_.send(*this, StartLevel{level}); }
  void send_window(WindowOrder order) override { pool_.send(*this, std::move(order)); }
  WindowReport collect() override {
    auto m = pool_.receive(*this, Seconds(timeout_s_));
    auto report = expect<WindowReport>(std::move(m), name(), "a window report");
    for (const auto& d : report.messages) check_node(d.node, "a message from");
    for (const auto& r : report.rows) check_node(static_cast<std::uint32_t>(r.node), "a metrics row of");
    return report;
  }

 private:
  void check_node(std::uint32_t node, const char* what) const {
    if (static_cast<int>(node) < first_ || static_cast<int>(node) >= end_) {
      throw Error(ErrorKind::kProtocol, name() + " sent " + what + " node " + std::to_string(node) + ", outside its block");
    }
  }
  HostPool& pool_;
  std::string peer_, name_;
  int first_, end_;
  double timeout_s_;
};

HostPool::HostPool(const Scenario& scenario, const RunOptions& options) : scenario_(scenario), options_(options) {
  if (scenario.text.empty()) {
    throw Error(ErrorKind::kInvalidInput, "scenario " + scenario.source +
                                              " has no TOML text to send to node hosts; read it with load_scenario()");
  }
  channel_ = options.mpi ? make_mpi_host_channel() : make_zmq_host_channel(options);
  try {
    await_hosts();
  } catch (...) {  // the destructor does not run for a pool that was never made
    tell_hosts_the_run_failed();
    throw;
  }
}

void HostPool::await_hosts() {
  const int wanted = channel_->hosts();
  progress("waiting for " + std::to_string(wanted) + " node host(s): " + channel_->how_to_join());
  const auto deadline = std::chrono::steady_clock::now() + Seconds(options_.host_wait_s);
  auto last_log = std::chrono::steady_clock::now();
  std::vector<bool> block_taken(static_cast<std::size_t>(wanted), false);
  while (static_cast<int>(hosts_.size()) < wanted) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error(ErrorKind::kIo, "only " + std::to_string(hosts_.size()) + " of " + std::to_string(wanted) +
                                           " node hosts connected to " + channel_->where() + " within " +
                                           std::to_string(static_cast<int>(options_.host_wait_s)) + " s; " +
                                           channel_->how_to_join());
    }
    if (std::chrono::steady_clock::now() - last_log > Seconds(kLogEvery_s)) {
      progress(std::to_string(hosts_.size()) + "/" + std::to_string(wanted) + " node hosts connected");
      last_log = std::chrono::steady_clock::now();
    }
    auto in = channel_->recv(kPoll);
    if (!in) continue;
    if (inbox_.count(in->peer)) {  // a host that has its block already: keep what it says (HostReady) for later
      keep(std::move(*in));
      continue;
    }
    HostHello hello;
    try {
      hello = expect<HostHello>(decode_host_message(in->payload), "a peer", "a hello");
    } catch (const Error& e) {  // not a node host of ours: ignore it, keep waiting
      spdlog::warn("sim: ignoring a peer on {}: {}", channel_->where(), e.what());
      continue;
    }
    const int i = channel_->block_of(in->peer, static_cast<int>(hosts_.size()));
    if (i < 0 || i >= wanted || block_taken[static_cast<std::size_t>(i)]) {
      throw Error(ErrorKind::kRuntime, "node host " + hello.host_name + " was given block " + std::to_string(i) +
                                            ", which is out of range or taken");
    }
    block_taken[static_cast<std::size_t>(i)] = true;
    auto [first, end] = block_range(scenario_.nodes, wanted, i);
    hosts_.push_back(std::make_unique<RemoteHost>(*this, in->peer, hello.host_name, first, end, options_.host_timeout_s));
    inbox_[in->peer];  // from now on, its messages are kept until asked for
    send(*hosts_.back(), assignment(first, end, 0));
    progress(hosts_.back()->name() + " connected");
  }
  // The level drivers take the blocks in node order, however the hosts arrived.
  std::sort(hosts_.begin(), hosts_.end(), [](const auto& a, const auto& b) { return a->first_node() < b->first_node(); });
}

// A host whose connection is gone ends the run at once, named.
void HostPool::check_connections() {
  std::vector<std::string> peers;
  for (const auto& host : hosts_) peers.push_back(host->peer());
  if (auto lost = channel_->lost_peer(peers)) {
    throw Error(ErrorKind::kIo, host_of(*lost)->name() + " disconnected (its process ended or its network failed); "
                                                         "the run cannot go on without its nodes: see its log, then run again");
  }
}

HostPool::~HostPool() {
  // The run failed here: the hosts stop with an error too.
  if (!shut_down_) tell_hosts_the_run_failed();
}

void HostPool::tell_hosts_the_run_failed() noexcept {
  for (auto& host : hosts_) {
    try {
      send(*host, HostError{"the simulation coordinator stopped with an error (see its log)"});
    } catch (...) {  // that host times out instead
    }
  }
  try {
    channel_->flush(kFlush);
  } catch (...) {
  }
}

std::vector<HostLink*> HostPool::links(const Context& ctx) {
  const std::string base = base_digest(ctx);
  std::vector<HostLink*> out;
  for (auto& host : hosts_) {
    auto ready = expect<HostReady>(receive(*host, Seconds(options_.host_wait_s)), host->name(), "ready");
    if (ready.base_digest != base) {
      throw Error(ErrorKind::kInvalidInput, host->name() + " loaded another base model (digest " + ready.base_digest +
                                                ", here " + base + "); give it the same base (copy the cache folder "
                                                "or the model folder from this machine)");
    }
    const std::string split = split_digest(ctx, host->first_node(), host->end_node());
    if (ready.split_digest != split) {
      throw Error(ErrorKind::kInvalidInput,
                  host->name() + " derived another data split (digest " + ready.split_digest + ", here " + split +
                      "); the scenario text it was sent must describe this run: a scenario changed in code "
                      "(nodes, data, seed) must be changed in its TOML text too");
    }
    out.push_back(host.get());
  }
  progress("all " + std::to_string(hosts_.size()) + " node hosts have loaded their blocks");
  return out;
}

void HostPool::assign_seed(int seed_index) {
  for (auto& host : hosts_) send(*host, assignment(host->first_node(), host->end_node(), seed_index));
  progress("node hosts: seed index " + std::to_string(seed_index) + " assigned");
}

HostAssign HostPool::assignment(int first, int end, int seed_index) const {
  HostAssign assign;
  assign.scenario_toml = scenario_.text;
  assign.scenario_source = scenario_.source;
  assign.levels.assign(scenario_.levels.begin(), scenario_.levels.end());
  assign.first_node = static_cast<std::uint32_t>(first);
  assign.end_node = static_cast<std::uint32_t>(end);
  assign.threads = options_.threads;
  assign.seed_index = static_cast<std::uint32_t>(seed_index);
  return assign;
}

void HostPool::shutdown(const std::string& reason) {
  shut_down_ = true;
  for (auto& host : hosts_) send(*host, Shutdown{reason});
  channel_->flush(kFlush);
}

void HostPool::send(const RemoteHost& host, const HostMessage& message) {
  channel_->send(host.peer(), encode_host_message(message));
}

HostMessage HostPool::receive(const RemoteHost& host, std::chrono::duration<double> timeout) {
  const auto start = std::chrono::steady_clock::now();
  auto last_log = start;
  auto& mine = inbox_.at(host.peer());
  while (mine.empty()) {
    const auto now = std::chrono::steady_clock::now();
    if (now - start > timeout) {
      throw Error(ErrorKind::kIo, host.name() + " did not answer within " +
                                           std::to_string(static_cast<int>(timeout.count())) +
                                           " s; check that it still runs (or raise the host timeout)");
    }
    if (now - last_log > Seconds(kLogEvery_s)) {
      progress("waiting for " + host.name());
      last_log = now;
    }
    check_connections();
    auto in = channel_->recv(kPoll);
    if (!in) continue;
    if (!inbox_.count(in->peer)) {
      spdlog::warn("sim: ignoring {} bytes from a peer that is not one of the node hosts", in->payload.size());
      continue;
    }
    keep(std::move(*in));
  }
  auto message = std::move(mine.front());
  mine.pop_front();
  return message;
}

void HostPool::keep(protocol::Incoming in) {
  const RemoteHost* host = host_of(in.peer);
  HostMessage message;
  try {
    message = decode_host_message(in.payload);
  } catch (const Error& e) {
    throw Error(ErrorKind::kProtocol, host->name() + " sent a message that does not decode: " + e.what());
  }
  if (std::holds_alternative<HostHello>(message)) {
    // Refused, not kept: a host says hello once. It stops on the error, and
    // the run ends when its HostError (or its disconnection) arrives.
    spdlog::warn("sim: {} said hello a second time; refusing it", host->name());
    try {
      send(*host, HostError{"a second hello from " + host->name() +
                            ": a node host says hello once (is another process using its connection?)"});
    } catch (const Error&) {  // it is gone already: its disconnection ends the run
    }
    return;
  }
  inbox_.at(in.peer).push_back(std::move(message));
}

const RemoteHost* HostPool::host_of(const std::string& peer) const {
  for (const auto& host : hosts_) {
    if (host->peer() == peer) return host.get();
  }
  return nullptr;
}

void HostPool::progress(const std::string& line) const {
  if (options_.progress) {
    options_.progress(line);
  } else {
    spdlog::info("{}", line);
  }
}

namespace {

// The node host's loop once its block is loaded: levels and windows, in order,
// until the coordinator ends the run (nothing returned) or assigns the next
// seed of a run of several (its HostAssign returned).
std::optional<HostAssign> serve_coordinator(CoordinatorChannel& channel, Context& ctx, const HostAssign& assign,
                                            const NodeHostOptions& o) {
  std::unique_ptr<NodeBlock> block;
  const int first = static_cast<int>(assign.first_node), end = static_cast<int>(assign.end_node);
  auto last_message = std::chrono::steady_clock::now();
  while (true) {
    auto bytes = channel.recv(kPoll);
    if (!bytes) {
      if (std::chrono::steady_clock::now() - last_message > Seconds(o.wait_s)) {
        throw Error(ErrorKind::kIo, "the coordinator at " + channel.where() + " sent nothing for " +
                                             std::to_string(static_cast<int>(o.wait_s)) + " s; giving up");
      }
      continue;
    }
    last_message = std::chrono::steady_clock::now();
    auto m = decode_host_message(*bytes);
    if (const auto* start = std::get_if<StartLevel>(&m)) {
      block = std::make_unique<NodeBlock>(ctx, start->level, first, end);
      channel.send(encode_host_message(block->start()));
    } else if (const auto* order = std::get_if<WindowOrder>(&m)) {
      if (!block) throw Error(ErrorKind::kProtocol, "the coordinator sent a window before starting a level");
      channel.send(encode_host_message(block->window(*order)));
    } else if (const auto* stop = std::get_if<Shutdown>(&m)) {
      block.reset();
      char rss[64];
      std::snprintf(rss, sizeof rss, " (peak RSS of this host %.0f MB)", peak_rss_megabytes());
      ctx.progress("the coordinator ended the run: " + stop->reason + rss);
      return std::nullopt;
    } else if (auto* next = std::get_if<HostAssign>(&m)) {
      return std::move(*next);
    } else if (std::holds_alternative<Ping>(m)) {
      continue;  // the coordinator checking that this host is still there
    } else {
      expect<WindowOrder>(std::move(m), "the coordinator", "a level or a window");
    }
  }
}

// The coordinator's answer to the hello: the assignment, or a HostError.
HostMessage await_assignment(CoordinatorChannel& channel, const NodeHostOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  std::optional<protocol::Bytes> bytes;
  while (!(bytes = channel.recv(kPoll))) {
    if (std::chrono::steady_clock::now() - start > Seconds(o.wait_s)) {
      throw Error(ErrorKind::kIo, "no coordinator answered at " + channel.where() + " within " +
                                           std::to_string(static_cast<int>(o.wait_s)) + " s; " +
                                           channel.unreachable_hint());
    }
  }
  return decode_host_message(*bytes);
}

}  // namespace

void serve_as_node_host(CoordinatorChannel& channel, const NodeHostOptions& options) {
  auto progress = [&](const std::string& line) {
    if (options.progress) {
      options.progress(line);
    } else {
      spdlog::info("{}", line);
    }
  };
  const std::string name = options.name.empty() ? channel.default_name() : options.name;
  try {
    channel.send(encode_host_message(HostHello{name}));
    progress("node host " + name + ": waiting for the coordinator at " + channel.where());
    std::optional<HostAssign> assign =
        expect<HostAssign>(await_assignment(channel, options), "the coordinator", "a block assignment");
    inference::setup_torch(options.threads > 0 ? options.threads : assign->threads);
    while (assign) {  // one pass per seed index of the run
      Scenario scenario = for_seed_index(parse_scenario(assign->scenario_toml, assign->scenario_source),
                                         static_cast<int>(assign->seed_index));
      scenario.levels.assign(assign->levels.begin(), assign->levels.end());
      progress("node host " + name + ": nodes " + std::to_string(assign->first_node) + ".." +
               std::to_string(assign->end_node - 1) + " of scenario " + scenario.name +
               (assign->seed_index > 0 ? ", seed index " + std::to_string(assign->seed_index) : std::string()) +
               "; loading data and base");
      auto ctx = build_context(scenario, std::make_pair(static_cast<int>(assign->first_node),
                                                        static_cast<int>(assign->end_node)));
      ctx->progress_sink = progress;
      ctx->enable_memo(std::count(scenario.levels.begin(), scenario.levels.end(), 4) &&
                       std::count(scenario.levels.begin(), scenario.levels.end(), 5));
      channel.send(encode_host_message(HostReady{
          base_digest(*ctx),
          split_digest(*ctx, static_cast<int>(assign->first_node), static_cast<int>(assign->end_node))}));
      progress("node host " + name + ": block loaded; ready for the coordinator's levels");
      assign = serve_coordinator(channel, *ctx, *assign, options);
    }
    channel.flush(kFlush);
  } catch (const std::exception& e) {
    try {
      channel.send(encode_host_message(HostError{"node host " + name + ": " + e.what()}));
      channel.flush(kFlush);
    } catch (...) {  // the coordinator is gone: nothing to tell
    }
    const auto* error = dynamic_cast<const Error*>(&e);
    throw Error(error ? error->kind() : ErrorKind::kRuntime, "node host " + name + ": " + e.what());
  }
}

}  // namespace fedge::sims::detail

namespace fedge::sims {

void run_node_host(const NodeHostOptions& options) {
  auto channel = detail::make_zmq_coordinator_channel(options);
  detail::serve_as_node_host(*channel, options);
}

void run_mpi_node_host(const NodeHostOptions& options) {
  auto channel = detail::make_mpi_coordinator_channel();
  detail::serve_as_node_host(*channel, options);
}

}  // namespace fedge::sims
