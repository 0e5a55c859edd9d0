// Coordinator persistence: round trips of every record, crash recovery, the
// round rules, bad files, concurrent opens and the privacy rule on the schema.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "fedge/common/error.h"
#include "fedge/coordinator/store.h"
#include "fedge/protocol/keys.h"

namespace fs = std::filesystem;
using fedge::Error;
using fedge::ErrorKind;
using namespace fedge::coordinator;

namespace {

// A fresh directory per test, removed afterwards.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    dir = fs::temp_directory_path() /
          ("fedge_store_" + std::to_string(rd()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  fs::path db() const { return dir / "coordinator.db"; }
};

// A deterministic clock so timestamps can be checked exactly.
StoreOptions fake_clock(std::int64_t* now) {
  StoreOptions o;
  o.clock = [now] { return *now; };
  return o;
}

NodeRecord make_node(fedge::protocol::NodeId id) {
  NodeRecord n;
  n.node_id = id;
  n.name = "site-" + std::to_string(id);
  for (std::size_t i = 0; i < n.public_key.size(); ++i) n.public_key[i] = static_cast<std::uint8_t>(id * 7 + i);
  n.profile = R"({"device":"jetson","mem_gb":8})";
  n.examples = 100 * id;
  return n;
}

RoundResult make_result(std::uint64_t version) {
  RoundResult r;
  r.adapter_version = version;
  r.adapter_path = "/var/fedge/adapters/v" + std::to_string(version) + "/adapter_model.safetensors";
  r.adapter_sha256 = std::string(64, 'a');
  r.adapter_size_bytes = 4096 * version;
  r.metrics = {{"train_loss", 2.5 / static_cast<double>(version)}, {"eval_loss", 2.75}, {"bytes_up", 1.5e6}};
  r.survivors = 2;
  r.epsilon_spent = 0.5 * static_cast<double>(version);
  r.dp = DpRecord{0, 1.1, 0.25, 10, 0.5 * static_cast<double>(version), 1e-5};
  return r;
}

// Registers nodes 1..3 and completes rounds 1..n.
void run_rounds(Store& store, std::uint64_t n) {
  for (fedge::protocol::NodeId id = 1; id <= 3; ++id) store.upsert_node(make_node(id));
  for (std::uint64_t r = 1; r <= n; ++r) {
    store.begin_round(r, R"({"lr":0.001})", {1, 2, 3});
    store.complete_round(r, make_result(r));
  }
}

template <class F>
ErrorKind error_kind_of(F&& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message != nullptr) *message = e.what();
    return e.kind();
  }
  FAIL("expected fedge::Error");
  return ErrorKind::kRuntime;
}

// Runs fixed SQL on a raw connection (to forge files the store must refuse).
void raw_exec(const fs::path& file, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  std::string msg = err != nullptr ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
  INFO(msg);
}

}  // namespace

TEST_CASE("store: creates a fresh database with WAL, foreign keys and the current schema version") {
  TempDir tmp;
  auto store = Store::open(tmp.db());
  CHECK(store.schema_version() == kStoreSchemaVersion);
  CHECK(store.path() == tmp.db());
  CHECK(store.last_completed_round() == 0);
  CHECK_FALSE(store.latest_version().has_value());
  CHECK(store.list_nodes().empty());
  CHECK(fs::exists(tmp.dir / "coordinator.db-wal"));
  auto rec = store.recover();
  CHECK(rec.next_round == 1);
  CHECK(rec.last_completed == 0);
  CHECK(rec.abandoned.empty());
}

TEST_CASE("store: nodes round trip, keep first_seen, track heartbeats") {
  TempDir tmp;
  std::int64_t now = 1000;
  auto store = Store::open(tmp.db(), fake_clock(&now));
  auto a = make_node(1);
  store.upsert_node(a);
  now = 2000;
  store.upsert_node(make_node(2));

  auto got = store.node(1);
  REQUIRE(got.has_value());
  a.first_seen_ms = 1000;
  a.last_seen_ms = 1000;
  CHECK(*got == a);

  now = 3000;
  a.profile = R"({"device":"pi5"})";
  a.examples = 7;
  store.upsert_node(a);  // re-registration keeps first_seen
  got = store.node(1);
  CHECK(got->first_seen_ms == 1000);
  CHECK(got->last_seen_ms == 3000);
  CHECK(got->profile == a.profile);
  CHECK(got->examples == 7);

  store.mark_heartbeat(2, 5000);
  store.mark_heartbeat(2, 4000);  // an older heartbeat never moves last_seen back
  CHECK(store.node(2)->last_seen_ms == 5000);
  now = 6000;
  store.mark_heartbeat(1);
  CHECK(store.node(1)->last_seen_ms == 6000);

  auto all = store.list_nodes();
  REQUIRE(all.size() == 2);
  CHECK(all[0].node_id == 1);
  CHECK(all[1].node_id == 2);
  CHECK_FALSE(store.node(9).has_value());
  CHECK(error_kind_of([&] { store.mark_heartbeat(9); }) == ErrorKind::kNotFound);
  CHECK(error_kind_of([&] { store.upsert_node(make_node(0)); }) == ErrorKind::kInvalidInput);
  auto big = make_node(3);
  big.profile.assign(kMaxProfileBytes + 1, 'x');
  CHECK(error_kind_of([&] { store.upsert_node(big); }) == ErrorKind::kInvalidInput);
}

TEST_CASE("store: a node id stays bound to its CURVE key across reopening, and one key is one node") {
  TempDir tmp;
  std::int64_t now = 1000;
  const auto k3 = make_node(3).public_key;
  const auto k4 = make_node(4).public_key;
  {
    auto store = Store::open(tmp.db(), fake_clock(&now));
    CHECK(store.node_key_bindings().empty());
    store.bind_node_key(3, k3);
    now = 2000;
    store.bind_node_key(3, k3);  // a re-registration changes nothing
    std::string msg;
    CHECK(error_kind_of([&] { store.bind_node_key(7, k3); }, &msg) == ErrorKind::kInvalidInput);
    CHECK_THAT(msg, Catch::Contains("bound to node 3"));
    CHECK(error_kind_of([&] { store.bind_node_key(3, k4); }, &msg) == ErrorKind::kInvalidInput);
    CHECK_THAT(msg, Catch::Contains("node 3 is bound to key"));
    CHECK(error_kind_of([&] { store.bind_node_key(0, k4); }) == ErrorKind::kInvalidInput);
  }
  // A restarted coordinator reads the same binding back.
  auto store = Store::open(tmp.db(), fake_clock(&now));
  CHECK(store.node_key_bindings() == std::vector<NodeKeyBinding>{{3, k3, KeyBindingSource::kRegister, 1000}});
  CHECK(error_kind_of([&] { store.bind_node_key(7, k3); }) == ErrorKind::kInvalidInput);

  // The allow-list's word moves a binding: node 9 takes key 4, then node 3
  // takes key 4 from node 9 (both old bindings are dropped and reported).
  now = 3000;
  CHECK(store.pin_node_key(9, k4).empty());
  CHECK(store.pin_node_key(9, k4).empty());  // already so: nothing changes
  const auto replaced = store.pin_node_key(3, k4);
  CHECK(replaced == std::vector<NodeKeyBinding>{{3, k3, KeyBindingSource::kRegister, 1000},
                                                {9, k4, KeyBindingSource::kAllowList, 3000}});
  CHECK(store.node_key_bindings() == std::vector<NodeKeyBinding>{{3, k4, KeyBindingSource::kAllowList, 3000}});
  store.bind_node_key(7, k3);  // key 3 is free again
  CHECK(store.node_key_bindings().size() == 2);
}

TEST_CASE("store: a schema version 1 file migrates to version 2 and keeps its nodes") {
  TempDir tmp;
  {
    auto store = Store::open(tmp.db());
    run_rounds(store, 1);
  }
  // What a fedge before migration 2 left behind.
  raw_exec(tmp.db(), "DROP TABLE node_keys; DELETE FROM schema_version WHERE version = 2");
  auto store = Store::open(tmp.db());
  CHECK(store.schema_version() == 2);
  CHECK(store.list_nodes().size() == 3);
  CHECK(store.last_completed_round() == 1);
  CHECK(store.node_key_bindings().empty());  // bindings start with the next registration
  store.bind_node_key(1, make_node(1).public_key);
  CHECK(store.node_key_bindings().size() == 1);
}

TEST_CASE("store: public keys from Z85 text or 32 raw bytes") {
  auto pair = fedge::protocol::generate_curve_keypair();
  auto key = public_key_from_text(pair.public_z85);
  CHECK(fedge::protocol::key_to_z85(key) == pair.public_z85);
  std::string raw(reinterpret_cast<const char*>(key.data()), key.size());
  CHECK(public_key_from_text(raw) == key);
  CHECK(error_kind_of([] { public_key_from_text("short"); }) == ErrorKind::kInvalidInput);
  CHECK(error_kind_of([] { public_key_from_text(std::string(40, '~')); }) == ErrorKind::kInvalidInput);
}

TEST_CASE("store: digest_file gives SHA-256 and size of an adapter file") {
  TempDir tmp;
  auto file = tmp.dir / "adapter_model.safetensors";
  { std::ofstream(file, std::ios::binary) << "abc"; }
  auto d = digest_file(file);
  CHECK(d.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(d.size_bytes == 3);
  { std::ofstream(file, std::ios::binary | std::ios::trunc); }
  CHECK(digest_file(file).sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(digest_file(file).size_bytes == 0);
  // Larger than the 1 MiB read buffer (reference from Python's hashlib).
  { std::ofstream out(file, std::ios::binary | std::ios::trunc); out << std::string(3u << 20, 'a'); }
  CHECK(digest_file(file).size_bytes == (3u << 20));
  CHECK(digest_file(file).sha256 == "6f850bc94ae6f7de14297c01616c36d712d22864497b28a63b81d776b035e656");
  CHECK(error_kind_of([&] { digest_file(tmp.dir / "missing.safetensors"); }) == ErrorKind::kNotFound);
  CHECK(error_kind_of([&] { digest_file(tmp.dir); }) == ErrorKind::kNotFound);
}

TEST_CASE("store: rounds, metrics, DP and adapter versions round trip") {
  TempDir tmp;
  std::int64_t now = 10;
  auto store = Store::open(tmp.db(), fake_clock(&now));
  store.record_initial_adapter({0, 0, "/adapters/v0.safetensors", "", 123, 0});
  for (fedge::protocol::NodeId id = 1; id <= 3; ++id) store.upsert_node(make_node(id));

  now = 100;
  auto attempt = store.begin_round(1, R"({"lr":0.001,"steps":10})", {3, 1, 2});
  auto running = store.running_round();
  REQUIRE(running.has_value());
  CHECK(running->attempt == attempt);
  CHECK(running->round == 1);
  CHECK(running->state == RoundState::kRunning);
  CHECK(running->selected == std::vector<fedge::protocol::NodeId>{3, 1, 2});
  CHECK(running->started_ms == 100);
  CHECK(running->finished_ms == 0);

  now = 250;
  auto result = make_result(1);
  result.adapter_sha256 = std::string(64, 'B');  // normalised to lowercase
  store.complete_round(1, result);
  CHECK_FALSE(store.running_round().has_value());
  CHECK(store.last_completed_round() == 1);

  auto done = store.completed_round(1);
  REQUIRE(done.has_value());
  CHECK(done->state == RoundState::kCompleted);
  CHECK(done->plan_json == R"({"lr":0.001,"steps":10})");
  CHECK(done->finished_ms == 250);
  CHECK(done->adapter_version == std::optional<std::uint64_t>(1));
  CHECK(done->survivors == 2);
  CHECK(done->epsilon_spent == 0.5);
  CHECK(store.round_metrics(1) == result.metrics);
  CHECK(store.round_metrics(2).empty());

  auto v1 = store.latest_version();
  REQUIRE(v1.has_value());
  CHECK(*v1 == AdapterVersion{1, 1, result.adapter_path, std::string(64, 'b'), 4096, 250});
  CHECK(store.adapter_version(0)->path == "/adapters/v0.safetensors");
  CHECK(store.adapter_versions().size() == 2);

  store.begin_round(2, "{}", {1, 2});
  store.complete_round(2, make_result(2));
  auto history = store.dp_history();
  REQUIRE(history.size() == 2);
  CHECK(history[1] == DpRecord{2, 1.1, 0.25, 10, 1.0, 1e-5});
  auto spent = store.dp_spent();
  CHECK(spent.epsilon == 1.0);  // the accountant's composed total, not a sum
  CHECK(spent.delta == 1e-5);
  CHECK(spent.rounds == 2);
  CHECK(spent.steps == 20);

  // A round without DP adds no accountant row.
  auto no_dp = make_result(3);
  no_dp.dp.reset();
  store.begin_round(3, "{}", {1});
  no_dp.survivors = 1;
  store.complete_round(3, no_dp);
  CHECK(store.dp_spent().rounds == 2);
  CHECK(store.latest_version()->version == 3);
}

TEST_CASE("store: a crash mid-round is recovered without losing or repeating a round") {
  TempDir tmp;
  {
    auto store = Store::open(tmp.db());
    run_rounds(store, 2);
    store.begin_round(3, R"({"lr":0.001})", {1, 2, 3});
    // Simulated crash: the store goes away without completing round 3.
  }
  {
    auto store = Store::open(tmp.db());
    CHECK(store.running_round().has_value());  // still marked running until recovered
    auto rec = store.recover();
    CHECK(rec.next_round == 3);
    CHECK(rec.last_completed == 2);
    CHECK(rec.abandoned == std::vector<std::uint64_t>{3});
    REQUIRE(rec.latest_adapter.has_value());
    CHECK(rec.latest_adapter->version == 2);
    CHECK(rec.latest_adapter->round == 2);
    CHECK_FALSE(store.running_round().has_value());

    auto attempts = store.round_attempts(3);
    REQUIRE(attempts.size() == 1);
    CHECK(attempts[0].state == RoundState::kAbandoned);
    CHECK_FALSE(attempts[0].reason.empty());

    // Round 3 runs again as a new attempt and completes once.
    store.begin_round(3, R"({"lr":0.001})", {1, 2});
    store.complete_round(3, make_result(3));
    attempts = store.round_attempts(3);
    REQUIRE(attempts.size() == 2);
    CHECK(attempts[0].state == RoundState::kAbandoned);
    CHECK(attempts[1].state == RoundState::kCompleted);
    CHECK(attempts[1].selected == std::vector<fedge::protocol::NodeId>{1, 2});
    // A second recover with nothing running changes nothing.
    auto again = store.recover();
    CHECK(again.next_round == 4);
    CHECK(again.abandoned.empty());
  }
}

// Runs `body` in a child process that dies without any cleanup (no
// destructors, no sqlite3_close), as a killed coordinator would.
template <class F>
void in_killed_child(F&& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      body();
    } catch (...) {
      _exit(3);  // an unexpected error: the parent sees exit status 3
    }
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));  // died as planned, not from an error
  CHECK(WTERMSIG(status) == SIGKILL);
}

TEST_CASE("store: a coordinator killed inside complete_round's transaction loses nothing") {
  TempDir tmp;
  { auto store = Store::open(tmp.db()); run_rounds(store, 2); }

  // Killed after begin_round (round 3 running), then killed in the middle of
  // completing round 4: complete_round reads the clock after BEGIN IMMEDIATE.
  in_killed_child([&] {
    auto store = Store::open(tmp.db());
    store.begin_round(3, "{}", {1, 2});
  });
  {
    auto store = Store::open(tmp.db());
    CHECK(store.recover().next_round == 3);
    store.begin_round(3, "{}", {1, 2});
    store.complete_round(3, make_result(3));
  }
  bool die = false;
  in_killed_child([&] {
    StoreOptions o;
    o.clock = [&die] {
      if (die) kill(getpid(), SIGKILL);
      return std::int64_t{42};
    };
    auto store = Store::open(tmp.db(), o);
    store.begin_round(4, "{}", {1, 2, 3});
    die = true;
    store.complete_round(4, make_result(4));
  });

  auto store = Store::open(tmp.db());
  auto rec = store.recover();
  CHECK(rec.last_completed == 3);
  CHECK(rec.next_round == 4);
  CHECK(rec.abandoned == std::vector<std::uint64_t>{4});
  CHECK(rec.latest_adapter->version == 3);
  CHECK(store.round_metrics(4).empty());
  CHECK(store.dp_history().size() == 3);
  auto attempts = store.round_attempts(3);
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0].state == RoundState::kAbandoned);
  CHECK(attempts[1].state == RoundState::kCompleted);
  store.begin_round(4, "{}", {1, 2, 3});
  store.complete_round(4, make_result(4));
  CHECK(store.recover().next_round == 5);
}

TEST_CASE("store: round rules refuse repeats, skips and concurrent rounds") {
  TempDir tmp;
  auto store = Store::open(tmp.db());
  run_rounds(store, 2);
  std::string msg;

  // Completing the same round twice is an error, and changes nothing.
  CHECK(error_kind_of([&] { store.complete_round(2, make_result(9)); }, &msg) == ErrorKind::kInvalidInput);
  CHECK_THAT(msg, Catch::Contains("already completed"));
  CHECK_THAT(msg, Catch::Contains(tmp.db().string()));
  CHECK(store.latest_version()->version == 2);
  CHECK(store.adapter_versions().size() == 2);

  CHECK(error_kind_of([&] { store.begin_round(2, "{}", {1}); }) == ErrorKind::kInvalidInput);  // repeat
  CHECK(error_kind_of([&] { store.begin_round(5, "{}", {1}); }) == ErrorKind::kInvalidInput);  // skip
  CHECK(error_kind_of([&] { store.complete_round(3, make_result(3)); }) == ErrorKind::kInvalidInput);  // not begun
  CHECK(error_kind_of([&] { store.begin_round(3, "not json", {1}); }) == ErrorKind::kInvalidInput);
  CHECK(error_kind_of([&] { store.begin_round(3, "{}", {}); }) == ErrorKind::kInvalidInput);
  CHECK(error_kind_of([&] { store.begin_round(3, "{}", {1, 1}); }) == ErrorKind::kInvalidInput);
  CHECK(error_kind_of([&] { store.begin_round(3, "{}", {1, 42}); }) == ErrorKind::kNotFound);
  CHECK_FALSE(store.running_round().has_value());  // the refused begin left no row behind

  store.begin_round(3, "{}", {1, 2});
  CHECK(error_kind_of([&] { store.begin_round(3, "{}", {1}); }) == ErrorKind::kInvalidInput);  // already running
  auto stale = make_result(2);  // version must grow
  CHECK(error_kind_of([&] { store.complete_round(3, stale); }) == ErrorKind::kInvalidInput);
  auto too_many = make_result(3);
  too_many.survivors = 3;  // only 2 selected
  CHECK(error_kind_of([&] { store.complete_round(3, too_many); }) == ErrorKind::kInvalidInput);
  auto nan_metric = make_result(3);
  nan_metric.metrics["loss"] = std::nan("");
  CHECK(error_kind_of([&] { store.complete_round(3, nan_metric); }) == ErrorKind::kInvalidInput);
  auto bad_sha = make_result(3);
  bad_sha.adapter_sha256 = "xyz";
  CHECK(error_kind_of([&] { store.complete_round(3, bad_sha); }) == ErrorKind::kInvalidInput);
  auto bad_dp = make_result(3);
  bad_dp.dp->delta = 1.5;
  CHECK(error_kind_of([&] { store.complete_round(3, bad_dp); }) == ErrorKind::kInvalidInput);
  auto huge = make_result(3);
  huge.metrics[std::string(kMaxMetricNameBytes + 1, 'm')] = 1.0;
  CHECK(error_kind_of([&] { store.complete_round(3, huge); }) == ErrorKind::kInvalidInput);
  // None of the refused completions wrote anything.
  CHECK(store.running_round()->round == 3);
  CHECK(store.round_metrics(3).empty());

  // A failed round is begun again under the same id.
  store.fail_round(3, "fewer than threshold survivors (1 < 2)");
  CHECK(error_kind_of([&] { store.fail_round(3, "again"); }) == ErrorKind::kInvalidInput);
  auto attempts = store.round_attempts(3);
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0].state == RoundState::kFailed);
  CHECK(attempts[0].reason == "fewer than threshold survivors (1 < 2)");
  CHECK(store.recover().next_round == 3);
  store.begin_round(3, "{}", {1, 2});
  store.complete_round(3, make_result(3));
  CHECK(store.last_completed_round() == 3);
  CHECK(error_kind_of([&] { store.record_initial_adapter({0, 0, "/a", "", 1, 0}); }) == ErrorKind::kInvalidInput);
}

TEST_CASE("store: reopening preserves everything") {
  TempDir tmp;
  std::vector<NodeRecord> nodes;
  std::vector<AdapterVersion> adapters;
  std::vector<DpRecord> dp;
  {
    auto store = Store::open(tmp.db());
    run_rounds(store, 3);
    store.mark_heartbeat(2, 123456789);
    nodes = store.list_nodes();
    adapters = store.adapter_versions();
    dp = store.dp_history();
  }
  auto store = Store::open(tmp.db());
  CHECK(store.schema_version() == kStoreSchemaVersion);
  CHECK(store.list_nodes() == nodes);
  CHECK(store.adapter_versions() == adapters);
  CHECK(store.dp_history() == dp);
  CHECK(store.last_completed_round() == 3);
  CHECK(store.round_metrics(2) == make_result(2).metrics);
  CHECK(store.completed_round(3)->selected == std::vector<fedge::protocol::NodeId>{1, 2, 3});
  CHECK(store.recover().next_round == 4);
}

TEST_CASE("store: a file that is not a fedge database is refused, naming the file") {
  TempDir tmp;
  std::string msg;

  auto text = tmp.dir / "notes.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 64; ++i) out << "this is not a database, it is a text file line " << i << "\n";
  }
  CHECK(error_kind_of([&] { Store::open(text); }, &msg) == ErrorKind::kInvalidInput);
  CHECK_THAT(msg, Catch::Contains(text.string()));
  CHECK_THAT(msg, Catch::Contains("not a SQLite database"));

  // A SQLite header followed by garbage pages.
  auto corrupt = tmp.dir / "corrupt.db";
  {
    auto store = Store::open(corrupt);
    run_rounds(store, 1);
  }
  fs::remove(tmp.dir / "corrupt.db-wal");
  fs::remove(tmp.dir / "corrupt.db-shm");
  {
    std::fstream f(corrupt, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    std::string junk(8000, '\xA5');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  CHECK(error_kind_of([&] { Store::open(corrupt).list_nodes(); }, &msg) == ErrorKind::kInvalidInput);
  CHECK_THAT(msg, Catch::Contains(corrupt.string()));

  // Someone else's SQLite database.
  auto other = tmp.dir / "other.db";
  raw_exec(other, "CREATE TABLE photos(id INTEGER PRIMARY KEY, caption TEXT)");
  CHECK(error_kind_of([&] { Store::open(other); }, &msg) == ErrorKind::kInvalidInput);
  CHECK_THAT(msg, Catch::Contains("not a fedge coordinator store"));
  CHECK_THAT(msg, Catch::Contains(other.string()));

  // A directory where the file should be.
  CHECK(error_kind_of([&] { Store::open(tmp.dir); }) == ErrorKind::kIo);
}

TEST_CASE("store: a newer schema version is refused") {
  TempDir tmp;
  { Store::open(tmp.db()); }
  raw_exec(tmp.db(), "INSERT INTO schema_version(version, applied_ms) VALUES(3, 0)");
  static_assert(kStoreSchemaVersion == 2, "the forged version above must be newer than this build's");
  std::string msg;
  CHECK(error_kind_of([&] { Store::open(tmp.db()); }, &msg) == ErrorKind::kInvalidInput);
  CHECK_THAT(msg, Catch::Contains("schema version 3"));
  CHECK_THAT(msg, Catch::Contains("newer fedge"));
  CHECK_THAT(msg, Catch::Contains(tmp.db().string()));
}

TEST_CASE("store: two Store objects share one file in WAL mode") {
  TempDir tmp;
  auto writer = Store::open(tmp.db());
  auto reader = Store::open(tmp.db());
  run_rounds(writer, 2);
  CHECK(reader.last_completed_round() == 2);
  CHECK(reader.latest_version()->version == 2);
  CHECK(reader.list_nodes().size() == 3);

  writer.begin_round(3, "{}", {1, 2});
  CHECK(reader.running_round()->round == 3);
  // The second connection cannot start a round while one is running (the
  // constraint holds across connections, not only inside one object).
  CHECK(error_kind_of([&] { reader.begin_round(3, "{}", {1}); }) == ErrorKind::kInvalidInput);
  writer.complete_round(3, make_result(3));
  CHECK(reader.last_completed_round() == 3);
  CHECK(reader.round_metrics(3) == make_result(3).metrics);
  // Completing it again through the other connection is refused as well.
  CHECK(error_kind_of([&] { reader.complete_round(3, make_result(4)); }) == ErrorKind::kInvalidInput);

  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open(tmp.db().c_str(), &raw) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "wal");
  sqlite3_finalize(s);
  sqlite3_close(raw);
}

TEST_CASE("store: schema has no place for an individual node's update") {
  TempDir tmp;
  {
    auto store = Store::open(tmp.db());
    run_rounds(store, 1);
    // Text columns have hard limits, so no update can be smuggled in as text.
    CHECK(error_kind_of([&] { store.begin_round(2, "\"" + std::string(kMaxPlanBytes, 'A') + "\"", {1}); }) ==
          ErrorKind::kInvalidInput);
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(tmp.db().c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* tables = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name", -1,
                             &tables, nullptr) == SQLITE_OK);
  std::vector<std::string> names;
  int blob_columns = 0;
  while (sqlite3_step(tables) == SQLITE_ROW) {
    std::string table = reinterpret_cast<const char*>(sqlite3_column_text(tables, 0));
    std::string sql = reinterpret_cast<const char*>(sqlite3_column_text(tables, 1));
    names.push_back(table);
    INFO("table " << table);
    CHECK_THAT(sql, Catch::Contains("STRICT"));  // a TEXT column refuses blobs
    CHECK(table.find("update") == std::string::npos);

    sqlite3_stmt* cols = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT name, upper(type) FROM pragma_table_info(?1)", -1, &cols, nullptr) ==
            SQLITE_OK);
    sqlite3_bind_text(cols, 1, table.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(cols) == SQLITE_ROW) {
      std::string column = reinterpret_cast<const char*>(sqlite3_column_text(cols, 0));
      std::string type = reinterpret_cast<const char*>(sqlite3_column_text(cols, 1));
      INFO("column " << table << "." << column << " " << type);
      CHECK((type == "INTEGER" || type == "REAL" || type == "TEXT" || type == "BLOB"));
      CHECK(column.find("update") == std::string::npos);
      if (type == "BLOB") {  // only the nodes' 32-byte CURVE keys
        ++blob_columns;
        CHECK((table == "nodes" || table == "node_keys"));
        CHECK(column == "public_key");
        CHECK_THAT(sql, Catch::Contains("length(public_key) = 32"));
      }
    }
    sqlite3_finalize(cols);
  }
  sqlite3_finalize(tables);
  sqlite3_close(db);
  CHECK(blob_columns == 2);
  // A new table must be reviewed against the privacy rule before it joins this list.
  CHECK(names == std::vector<std::string>{"adapter_versions", "dp_accountant", "node_keys", "nodes",
                                           "round_metrics", "round_nodes", "rounds", "schema_version"});
}
