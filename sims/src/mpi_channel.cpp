// The host channel over MPI: rank 0 of MPI_COMM_WORLD is the coordinator
// process, ranks 1..H its node hosts. Point-to-point messages, one tag; sends
// are non-blocking (MPI_Isend, the bytes kept until done) so that, as over
// ZeroMQ, the coordinator hands out a window and works on its own part while
// the hosts work on theirs. Receives poll (MPI_Iprobe) with short sleeps
// instead of a blocking MPI_Recv: OpenMPI's blocking calls spin a core, which
// on a machine with fewer cores than ranks would take it from the training.
// A rank that dies is the launcher's to report: mpirun ends the whole job and
// names the rank and host (MPI itself cannot tell us).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <thread>

#include <spdlog/spdlog.h>

#include "host_channel.h"
#include "fedge/common/error.h"
#include "fedge/sims/host_wire.h"
#include "fedge/sims/mpi.h"

#if FEDGE_WITH_MPI
// The C API only: OpenMPI's and MPICH's deprecated C++ bindings would need
// their own library.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace fedge::sims {

namespace {

std::optional<int> env_int(const char* variable, int min) {
  const char* value = std::getenv(variable);
  if (!value) return std::nullopt;
  const std::string_view text(value);
  int out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc() || end != text.data() + text.size() || out < min) {
    throw Error(ErrorKind::kInvalidInput, std::string("the MPI launcher's variable ") + variable + " is \"" +
                                              std::string(text.substr(0, 64)) + "\", not a whole number >= " +
                                              std::to_string(min) + "; start fedge with mpirun or srun, or unset it");
  }
  return out;
}

}  // namespace

std::optional<MpiLaunch> mpi_launch_from_env() {
  struct Pair {
    const char *size, *rank;
  };
  for (const Pair& p : {Pair{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"}, Pair{"PMI_SIZE", "PMI_RANK"}}) {
    auto size = env_int(p.size, 1);
    if (!size) continue;
    MpiLaunch launch;
    launch.size = *size;
    launch.rank = env_int(p.rank, 0).value_or(0);
    launch.variable = p.size;
    if (launch.rank >= launch.size) {
      throw Error(ErrorKind::kInvalidInput, std::string("the MPI launcher's variables say rank ") +
                                                std::to_string(launch.rank) + " of " + std::to_string(launch.size) +
                                                " (" + p.rank + ", " + p.size + "); start fedge with mpirun or srun");
    }
    return launch;
  }
  if (auto rank = env_int("PMIX_RANK", 0)) {
    MpiLaunch launch;
    launch.rank = *rank;
    launch.variable = "PMIX_RANK";
    return launch;
  }
  return std::nullopt;
}

#if FEDGE_WITH_MPI

bool mpi_built() { return true; }

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) throw Error(ErrorKind::kRuntime, "MPI is started already in this process (one MpiSession only)");
  int provided = 0;
  // Only the main thread calls MPI (libtorch's threads never do).
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw Error(ErrorKind::kRuntime, "MPI_Init_thread failed: start fedge with mpirun or srun");
  }
  // Errors come back as codes (and become fedge::Errors) instead of ending the job silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() { MPI_Finalize(); }

std::string MpiSession::processor_name() const {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  MPI_Get_processor_name(name, &length);
  return std::string(name, static_cast<std::size_t>(std::max(0, length)));
}

void MpiSession::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

namespace detail {
namespace {

constexpr int kHostTag = 7;  // every host-wire message; nothing else travels on MPI_COMM_WORLD

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<std::size_t>(std::max(0, length)));
}

std::string rank_name(int rank) { return "rank " + std::to_string(rank); }

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

void require_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw Error(ErrorKind::kRuntime, "the MPI host channel needs an MpiSession in this process");
}

// How long to sleep between probes after waiting `waited`: a twentieth of the
// wait so far, between 20 us and 2 ms. A window's answer often comes within a
// millisecond (thousands of windows per level), so early naps must be short;
// a long wait (a host training its nodes, rank 0 a cloud level) costs at most
// 5% extra latency and a few hundred wake-ups a second, not a spinning core.
std::chrono::microseconds nap_after(std::chrono::steady_clock::duration waited) {
  const auto twentieth = std::chrono::duration_cast<std::chrono::microseconds>(waited) / 20;
  return std::clamp(twentieth, std::chrono::microseconds(20), std::chrono::microseconds(2000));
}

// Point-to-point messages of one rank: sends queued with MPI_Isend, receives
// by polling. Shared by both ends.
class MpiEndpoint {
 public:
  ~MpiEndpoint() {
    // Sends still under way went to a peer that stopped listening (the run is
    // failing). MPI may read their bytes until it ends, so they are let go
    // of, not freed: the process ends right after (MPI_Abort or MPI_Finalize).
    static auto* let_go = new std::vector<protocol::Bytes>();  // reachable to the end, never freed
    for (auto& p : pending_) {
      MPI_Request_free(&p.request);
      let_go->push_back(std::move(p.bytes));
    }
  }

  void send(int rank, const protocol::Bytes& bytes) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
      throw Error(ErrorKind::kInvalidInput, "a host message of " + std::to_string(bytes.size()) + " bytes for " +
                                                rank_name(rank) + " is over MPI's limit of " +
                                                std::to_string(INT_MAX) + " bytes per message");
    }
    Pending p{bytes, MPI_REQUEST_NULL};
    const int rc = MPI_Isend(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, rank, kHostTag, MPI_COMM_WORLD,
                             &p.request);
    if (rc != MPI_SUCCESS) throw Error(ErrorKind::kIo, "cannot send to " + rank_name(rank) + ": " + mpi_error(rc));
    pending_.push_back(std::move(p));
    progress_sends();
  }

  // The next message from `from` (MPI_ANY_SOURCE: any rank) within `timeout`.
  std::optional<std::pair<int, protocol::Bytes>> recv(int from, std::chrono::milliseconds timeout) {
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + timeout;
    while (true) {
      progress_sends();
      int arrived = 0;
      MPI_Status status;
      const int rc = MPI_Iprobe(from, kHostTag, MPI_COMM_WORLD, &arrived, &status);
      if (rc != MPI_SUCCESS) throw Error(ErrorKind::kIo, "MPI_Iprobe failed: " + mpi_error(rc));
      if (arrived) return std::make_pair(status.MPI_SOURCE, take(status));
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) return std::nullopt;
      std::this_thread::sleep_for(nap_after(now - start));
    }
  }

  void flush(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (progress_sends() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  struct Pending {
    protocol::Bytes bytes;  // kept alive until MPI is done with it
    MPI_Request request;
  };

  // Receives the probed message; one over the host wire's limit is taken
  // (the only way to clear it) and refused.
  protocol::Bytes take(const MPI_Status& probed) {
    int count = 0;
    MPI_Get_count(&probed, MPI_BYTE, &count);
    const HostWireLimits limits;
    const std::size_t size = static_cast<std::size_t>(std::max(0, count));
    const bool too_large = size > limits.max_message_bytes;
    std::vector<std::uint8_t> buffer(too_large ? 0 : size);
    MPI_Status status;
    const int rc = MPI_Recv(buffer.data(), too_large ? 0 : count, MPI_BYTE, probed.MPI_SOURCE, kHostTag,
                            MPI_COMM_WORLD, &status);
    if (too_large) {
      throw Error(ErrorKind::kProtocol, rank_name(probed.MPI_SOURCE) + " sent a host message of " +
                                            std::to_string(size) + " bytes, over the limit of " +
                                            std::to_string(limits.max_message_bytes));
    }
    if (rc != MPI_SUCCESS) {
      throw Error(ErrorKind::kIo, "cannot receive from " + rank_name(probed.MPI_SOURCE) + ": " + mpi_error(rc));
    }
    return protocol::Bytes::from_vector(std::move(buffer));
  }

  // Completes what it can; returns how many sends are still under way.
  std::size_t progress_sends() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? pending_.erase(it) : it + 1;
    }
    return pending_.size();
  }

  std::vector<Pending> pending_;
};

class MpiHostChannel : public HostChannel {
 public:
  MpiHostChannel() : size_(world_size()) {
    require_mpi();
    if (world_rank() != 0) throw Error(ErrorKind::kRuntime, "the MPI host channel runs on rank 0 only");
  }
  std::string where() const override { return "MPI ranks 1.." + std::to_string(size_ - 1); }
  int hosts() const override { return size_ - 1; }
  std::string how_to_join() const override {
    return "ranks 1.." + std::to_string(size_ - 1) + " of this MPI job (each runs `fedge sim` with the same arguments)";
  }
  int block_of(const std::string& peer, int) const override { return std::stoi(peer) - 1; }
  void send(const std::string& peer, const protocol::Bytes& bytes) override { mpi_.send(std::stoi(peer), bytes); }
  std::optional<protocol::Incoming> recv(std::chrono::milliseconds timeout) override {
    auto in = mpi_.recv(MPI_ANY_SOURCE, timeout);
    if (!in) return std::nullopt;
    protocol::Incoming out;
    out.peer = std::to_string(in->first);
    out.payload = std::move(in->second);
    return out;
  }
  std::optional<std::string> lost_peer(const std::vector<std::string>&) override { return std::nullopt; }
  void flush(std::chrono::milliseconds limit) override { mpi_.flush(limit); }

 private:
  int size_;
  MpiEndpoint mpi_;
};

class MpiCoordinatorChannel : public CoordinatorChannel {
 public:
  MpiCoordinatorChannel() : rank_(world_rank()) {
    require_mpi();
    if (rank_ == 0) throw Error(ErrorKind::kRuntime, "rank 0 is the coordinator, not a node host");
  }
  std::string where() const override { return "MPI rank 0"; }
  std::string unreachable_hint() const override {
    return "rank 0 should be running `fedge sim SCENARIO` with the same arguments as this rank";
  }
  std::string default_name() const override {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) std::snprintf(name, sizeof name, "host");
    return "rank " + std::to_string(rank_) + " on " + name + " (pid " + std::to_string(::getpid()) + ")";
  }
  void send(const protocol::Bytes& bytes) override { mpi_.send(0, bytes); }
  std::optional<protocol::Bytes> recv(std::chrono::milliseconds timeout) override {
    auto in = mpi_.recv(0, timeout);
    if (!in) return std::nullopt;
    return std::move(in->second);
  }
  void flush(std::chrono::milliseconds limit) override { mpi_.flush(limit); }

 private:
  int rank_;
  MpiEndpoint mpi_;
};

}  // namespace

std::unique_ptr<HostChannel> make_mpi_host_channel() { return std::make_unique<MpiHostChannel>(); }
std::unique_ptr<CoordinatorChannel> make_mpi_coordinator_channel() { return std::make_unique<MpiCoordinatorChannel>(); }

}  // namespace detail

#else  // built without MPI

bool mpi_built() { return false; }

namespace {
[[noreturn]] void no_mpi() {
  throw Error(ErrorKind::kInvalidInput,
              "this fedge was built without MPI (CMake FEDGE_WITH_MPI=OFF, or no MPI found): install OpenMPI "
              "(scripts/install-deps.sh) and rebuild, or spread the run with `--node-hosts` over ZeroMQ");
}
}  // namespace

MpiSession::MpiSession() { no_mpi(); }
MpiSession::~MpiSession() = default;
std::string MpiSession::processor_name() const { return {}; }
void MpiSession::abort(int code) { std::_Exit(code); }

namespace detail {
std::unique_ptr<HostChannel> make_mpi_host_channel() { no_mpi(); }
std::unique_ptr<CoordinatorChannel> make_mpi_coordinator_channel() { no_mpi(); }
}  // namespace detail

#endif

}  // namespace fedge::sims
