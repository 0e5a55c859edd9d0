// SQLite persistence for the coordinator (see store.h for the crash model and
// the privacy rule). Every statement is prepared with bound parameters; the
// only SQL built at run time is fixed text (schema, pragmas, BEGIN/COMMIT).
#include "fedge/coordinator/store.h"

#include <sodium.h>
#include <sqlite3.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <utility>

#include "fedge/common/error.h"
#include "fedge/protocol/keys.h"

namespace fedge::coordinator {
namespace {

namespace fs = std::filesystem;

// Migration i (0-based) takes the schema from version i to i + 1. STRICT
// tables make SQLite refuse a value of the wrong type (a blob in a TEXT
// column), which together with the length checks keeps individual updates out
// of the database (store.h, "Privacy rule").
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE nodes(
  node_id INTEGER PRIMARY KEY CHECK(node_id BETWEEN 1 AND 4294967295),
  name TEXT NOT NULL CHECK(length(name) <= 256),
  public_key BLOB NOT NULL CHECK(length(public_key) = 32),
  profile TEXT NOT NULL CHECK(length(profile) <= 16384),
  examples INTEGER NOT NULL CHECK(examples >= 0),
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE adapter_versions(
  version INTEGER PRIMARY KEY CHECK(version >= 0),
  round INTEGER NOT NULL CHECK(round >= 0),
  path TEXT NOT NULL CHECK(length(path) BETWEEN 1 AND 4096),
  sha256 TEXT NOT NULL CHECK(length(sha256) IN (0, 64)),
  size_bytes INTEGER NOT NULL CHECK(size_bytes >= 0),
  created_ms INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX adapter_versions_one_per_round ON adapter_versions(round) WHERE round > 0;
CREATE TABLE rounds(
  attempt INTEGER PRIMARY KEY,
  round INTEGER NOT NULL CHECK(round >= 1),
  state TEXT NOT NULL CHECK(state IN ('running', 'completed', 'failed', 'abandoned')),
  plan_json TEXT NOT NULL CHECK(length(plan_json) <= 65536),
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  adapter_version INTEGER REFERENCES adapter_versions(version),
  survivors INTEGER CHECK(survivors >= 0),
  epsilon_spent REAL,
  reason TEXT CHECK(length(reason) <= 4096),
  CHECK((state = 'completed') = (adapter_version IS NOT NULL))
) STRICT;
CREATE UNIQUE INDEX rounds_live_once ON rounds(round) WHERE state IN ('running', 'completed');
CREATE UNIQUE INDEX rounds_one_running ON rounds(state) WHERE state = 'running';
CREATE TABLE round_nodes(
  attempt INTEGER NOT NULL REFERENCES rounds(attempt),
  position INTEGER NOT NULL CHECK(position >= 0),
  node_id INTEGER NOT NULL REFERENCES nodes(node_id),
  PRIMARY KEY(attempt, position),
  UNIQUE(attempt, node_id)
) STRICT;
CREATE TABLE round_metrics(
  round INTEGER NOT NULL,
  attempt INTEGER NOT NULL REFERENCES rounds(attempt),
  name TEXT NOT NULL CHECK(length(name) BETWEEN 1 AND 128),
  value REAL NOT NULL,
  PRIMARY KEY(round, name)
) STRICT;
CREATE TABLE dp_accountant(
  round INTEGER PRIMARY KEY,
  attempt INTEGER NOT NULL REFERENCES rounds(attempt),
  noise_multiplier REAL NOT NULL CHECK(noise_multiplier >= 0),
  sampling_rate REAL NOT NULL CHECK(sampling_rate >= 0 AND sampling_rate <= 1),
  steps INTEGER NOT NULL CHECK(steps >= 0),
  epsilon REAL NOT NULL CHECK(epsilon >= 0),
  delta REAL NOT NULL CHECK(delta >= 0 AND delta < 1)
) STRICT;
)sql",
    // 2: each node id's CURVE key, kept across restarts (issue 16, finding 2):
    // one key is one node and one node one key, so both columns are unique.
    // Filled by registrations over CURVE and by allow-list lines that name an
    // id. Not back-filled from nodes.public_key: a coordinator without CURVE
    // took that from the node's own word, so a binding starts with the first
    // registration after the upgrade.
    R"sql(
CREATE TABLE node_keys(
  node_id INTEGER PRIMARY KEY CHECK(node_id BETWEEN 1 AND 4294967295),
  public_key BLOB NOT NULL UNIQUE CHECK(length(public_key) = 32),
  source TEXT NOT NULL CHECK(source IN ('register', 'allow_list')),
  bound_ms INTEGER NOT NULL
) STRICT;
)sql",
};
static_assert(std::size(kMigrations) == kStoreSchemaVersion, "one migration per schema version");

std::string where(const fs::path& path) { return "coordinator store " + path.string(); }

// Malformed files and broken constraints are the caller's to fix; the rest
// (locks, disk, permissions) is the operating system refusing.
ErrorKind kind_for(int rc) {
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return ErrorKind::kInvalidInput;
    default:
      return ErrorKind::kIo;
  }
}

[[noreturn]] void throw_sqlite(sqlite3* db, const fs::path& path, std::string_view op, int rc) {
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string hint;
  if ((rc & 0xff) == SQLITE_NOTADB) hint = "; it is not a SQLite database: pass the coordinator's own state file";
  if ((rc & 0xff) == SQLITE_BUSY) hint = "; another process holds the database: raise busy_timeout_ms or stop it";
  throw Error(kind_for(rc), where(path) + ": " + std::string(op) + " failed: " + detail + " (" + sqlite3_errstr(rc) +
                                ")" + hint);
}

[[noreturn]] void refuse(const fs::path& path, ErrorKind kind, const std::string& what) {
  throw Error(kind, where(path) + ": " + what);
}

// SQLite stores signed 64-bit integers; the protocol's ids are unsigned.
std::int64_t to_i64(std::uint64_t value, const fs::path& path, std::string_view what) {
  if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    refuse(path, ErrorKind::kInvalidInput, std::string(what) + " " + std::to_string(value) + " exceeds 2^63-1");
  }
  return static_cast<std::int64_t>(value);
}

// One prepared statement; finalised on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const fs::path& path, const char* sql, std::string_view op) : db_(db), path_(path), op_(op) {
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
    if (rc != SQLITE_OK) throw_sqlite(db_, path_, op_, rc);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, double v) { return check(sqlite3_bind_double(stmt_, i, v)); }
  Stmt& bind(int i, std::string_view v) {
    return check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Stmt& bind_blob(int i, std::span<const std::uint8_t> v) {
    return check(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT));
  }
  Stmt& bind_null(int i) { return check(sqlite3_bind_null(stmt_, i)); }

  // True when a row is ready, false when the statement is done.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw_sqlite(db_, path_, op_, rc);
  }
  void run() {
    while (step()) {
    }
  }
  // Rewinds for another execution with new bindings.
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  bool is_null(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::int64_t i64(int c) const { return sqlite3_column_int64(stmt_, c); }
  std::uint64_t u64(int c) const { return static_cast<std::uint64_t>(sqlite3_column_int64(stmt_, c)); }
  double f64(int c) const { return sqlite3_column_double(stmt_, c); }
  std::string text(int c) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, c));
    return p != nullptr ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c))) : std::string();
  }
  std::span<const std::uint8_t> blob(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, c));
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c))};
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) throw_sqlite(db_, path_, op_, rc);
    return *this;
  }
  sqlite3* db_;
  const fs::path& path_;
  std::string op_;
  sqlite3_stmt* stmt_ = nullptr;
};

// Fixed SQL text only (schema, pragmas, transaction control).
void exec(sqlite3* db, const fs::path& path, const char* sql, std::string_view op) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) throw_sqlite(db, path, op, rc);
}

// BEGIN IMMEDIATE takes the write lock up front, so two coordinators cannot
// both read "round 3 is next" and then both write it. Rolls back unless committed.
class Txn {
 public:
  Txn(sqlite3* db, const fs::path& path, std::string_view op) : db_(db), path_(path), op_(op) {
    exec(db_, path_, "BEGIN IMMEDIATE", op_);
  }
  ~Txn() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, path_, "COMMIT", op_);
    done_ = true;
  }

 private:
  sqlite3* db_;
  const fs::path& path_;
  std::string op_;
  bool done_ = false;
};

std::int64_t query_i64(sqlite3* db, const fs::path& path, const char* sql, std::string_view op) {
  Stmt s(db, path, sql, op);
  return s.step() && !s.is_null(0) ? s.i64(0) : 0;
}

const char* state_text(RoundState state) {
  switch (state) {
    case RoundState::kRunning: return "running";
    case RoundState::kCompleted: return "completed";
    case RoundState::kFailed: return "failed";
    case RoundState::kAbandoned: return "abandoned";
  }
  return "running";
}

RoundState state_from(const std::string& text, const fs::path& path) {
  for (RoundState s : {RoundState::kRunning, RoundState::kCompleted, RoundState::kFailed, RoundState::kAbandoned}) {
    if (text == state_text(s)) return s;
  }
  refuse(path, ErrorKind::kInvalidInput, "rounds.state holds unknown value '" + text + "'");
}

void check_length(const fs::path& path, std::string_view what, std::string_view value, std::size_t max) {
  if (value.size() > max) {
    refuse(path, ErrorKind::kInvalidInput,
           std::string(what) + " is " + std::to_string(value.size()) + " bytes; at most " + std::to_string(max) +
               " are stored (the store keeps no bulk data)");
  }
}

// Lowercase hex, 64 digits, or empty.
std::string normalise_sha256(const fs::path& path, std::string_view sha) {
  if (sha.empty()) return {};
  std::string out(sha);
  bool ok = out.size() == 64;
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (!ok) refuse(path, ErrorKind::kInvalidInput, "adapter sha256 '" + std::string(sha) + "' is not 64 hex digits");
  return out;
}

void validate_dp(const fs::path& path, const DpRecord& dp) {
  auto bad = [&](const std::string& what) { refuse(path, ErrorKind::kInvalidInput, "DP accountant row: " + what); };
  if (!(dp.noise_multiplier >= 0)) bad("noise multiplier must be >= 0");
  if (!(dp.sampling_rate >= 0 && dp.sampling_rate <= 1)) bad("sampling rate must be in [0, 1]");
  if (!(dp.epsilon >= 0)) bad("epsilon must be >= 0");
  if (!(dp.delta >= 0 && dp.delta < 1)) bad("delta must be in [0, 1)");
  to_i64(dp.steps, path, "DP steps");
}

void validate_result(const fs::path& path, const RoundResult& r) {
  if (r.adapter_path.empty()) refuse(path, ErrorKind::kInvalidInput, "round result has no adapter path");
  check_length(path, "adapter path", r.adapter_path, kMaxPathBytes);
  to_i64(r.adapter_version, path, "adapter version");
  to_i64(r.adapter_size_bytes, path, "adapter size");
  to_i64(r.survivors, path, "survivors");
  if (std::isnan(r.epsilon_spent) || r.epsilon_spent < 0) {
    refuse(path, ErrorKind::kInvalidInput, "epsilon spent must be a number >= 0");
  }
  for (const auto& [name, value] : r.metrics) {
    if (name.empty()) refuse(path, ErrorKind::kInvalidInput, "a metric has an empty name");
    check_length(path, "metric name '" + name.substr(0, 32) + "'", name, kMaxMetricNameBytes);
    if (std::isnan(value)) refuse(path, ErrorKind::kInvalidInput, "metric '" + name + "' is NaN");
  }
  if (r.dp) validate_dp(path, *r.dp);
}

std::int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

NodeRecord read_node(const Stmt& s) {
  NodeRecord n;
  n.node_id = static_cast<protocol::NodeId>(s.i64(0));
  n.name = s.text(1);
  auto key = s.blob(2);
  if (key.size() == n.public_key.size()) std::memcpy(n.public_key.data(), key.data(), key.size());
  n.profile = s.text(3);
  n.examples = s.u64(4);
  n.first_seen_ms = s.i64(5);
  n.last_seen_ms = s.i64(6);
  return n;
}

constexpr const char* kNodeColumns =
    "SELECT node_id, name, public_key, profile, examples, first_seen_ms, last_seen_ms FROM nodes";

AdapterVersion read_adapter(const Stmt& s) {
  return AdapterVersion{s.u64(0), s.u64(1), s.text(2), s.text(3), s.u64(4), s.i64(5)};
}

constexpr const char* kRoundColumns =
    "SELECT attempt, round, state, plan_json, started_ms, finished_ms, adapter_version, survivors, "
    "epsilon_spent, reason FROM rounds";

}  // namespace

std::string_view round_state_name(RoundState state) { return state_text(state); }

protocol::Key32 public_key_from_text(std::string_view text) {
  protocol::Key32 key{};
  if (text.size() == key.size()) {
    std::memcpy(key.data(), text.data(), key.size());
    return key;
  }
  if (text.size() == protocol::kZ85KeyChars) return protocol::z85_to_key(text, "node public key");
  throw Error(ErrorKind::kInvalidInput, "node public key is " + std::to_string(text.size()) +
                                            " bytes; expected 40 Z85 characters or 32 raw bytes");
}

FileDigest digest_file(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw Error(ErrorKind::kNotFound, "adapter file " + file.string() + " does not exist (or is not a regular file)");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, "cannot read adapter file " + file.string());
  if (sodium_init() < 0) throw Error(ErrorKind::kRuntime, "libsodium failed to initialise");
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  std::vector<char> buffer(1 << 20);
  FileDigest out;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    auto got = static_cast<std::size_t>(in.gcount());
    crypto_hash_sha256_update(&state, reinterpret_cast<const unsigned char*>(buffer.data()), got);
    out.size_bytes += got;
  }
  if (in.bad()) throw Error(ErrorKind::kIo, "read failed in adapter file " + file.string());
  unsigned char hash[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state, hash);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char b : hash) {
    out.sha256.push_back(kHex[b >> 4]);
    out.sha256.push_back(kHex[b & 15]);
  }
  return out;
}

// ---------------------------------------------------------------- opening

Store::Store(fs::path path, sqlite3* db, StoreOptions options)
    : path_(std::move(path)), db_(db), options_(std::move(options)) {}

Store::Store(Store&& other) noexcept
    : path_(std::move(other.path_)), db_(std::exchange(other.db_, nullptr)), options_(std::move(other.options_)) {}

Store& Store::operator=(Store&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    db_ = std::exchange(other.db_, nullptr);
    options_ = std::move(other.options_);
  }
  return *this;
}

Store::~Store() { close(); }

void Store::close() noexcept {
  if (db_ != nullptr) sqlite3_close_v2(db_);
  db_ = nullptr;
}

std::int64_t Store::now_ms() const { return options_.clock ? options_.clock() : system_now_ms(); }

namespace {

// Decides whether the file is a fresh database, fedge's, or someone else's,
// and migrates fedge's to the current schema, all under one write lock.
void prepare_schema(sqlite3* db, const fs::path& path, std::int64_t now) {
  Txn txn(db, path, "initialise schema");
  auto app_id = query_i64(db, path, "PRAGMA application_id", "read application_id");
  auto tables = query_i64(db, path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", "list tables");
  if (app_id == 0 && tables == 0) {
    static_assert(kStoreApplicationId == 1178944583, "keep the pragma text in step");
    exec(db, path, "PRAGMA application_id = 1178944583", "set application_id");
    exec(db, path, "CREATE TABLE schema_version(version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL) STRICT",
         "create schema_version");
  } else if (app_id != kStoreApplicationId) {
    refuse(path, ErrorKind::kInvalidInput,
           "is a SQLite database but not a fedge coordinator store (application_id " + std::to_string(app_id) +
               ", " + std::to_string(tables) + " tables); pass a new file or the coordinator's own state file");
  }
  auto version = query_i64(db, path, "SELECT max(version) FROM schema_version", "read schema version");
  if (version > kStoreSchemaVersion) {
    refuse(path, ErrorKind::kInvalidInput,
           "has schema version " + std::to_string(version) + ", written by a newer fedge; this build reads up to " +
               std::to_string(kStoreSchemaVersion) + ": upgrade fedge or use another state file");
  }
  for (auto v = version + 1; v <= kStoreSchemaVersion; ++v) {
    exec(db, path, kMigrations[v - 1], "migrate schema to version " + std::to_string(v));
    Stmt s(db, path, "INSERT INTO schema_version(version, applied_ms) VALUES(?1, ?2)", "record schema version");
    s.bind(1, static_cast<std::int64_t>(v)).bind(2, now).run();
    spdlog::info("{}: schema migrated to version {}", where(path), v);
  }
  txn.commit();
}

}  // namespace

Store Store::open(const fs::path& path, StoreOptions options) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  // Owned from here on, so every throw below closes the handle.
  Store store(path, raw, std::move(options));
  if (rc != SQLITE_OK) throw_sqlite(raw, path, "open", rc);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, store.options_.busy_timeout_ms);

  // The first read of the header: a file that is not SQLite fails here.
  query_i64(raw, path, "PRAGMA application_id", "read header");
  {
    Stmt s(raw, path, "PRAGMA journal_mode = WAL", "enable WAL");
    std::string mode = s.step() ? s.text(0) : "";
    if (mode != "wal") spdlog::warn("{}: journal mode is '{}', not WAL; concurrent readers will wait", where(path), mode);
  }
  // FULL: a completed round survives power loss, not only a process crash.
  exec(raw, path, "PRAGMA synchronous = FULL", "set synchronous");
  exec(raw, path, "PRAGMA foreign_keys = ON", "enable foreign keys");
  prepare_schema(raw, path, store.now_ms());
  return store;
}

int Store::schema_version() const {
  return static_cast<int>(query_i64(db_, path_, "SELECT max(version) FROM schema_version", "read schema version"));
}

// ---------------------------------------------------------------- nodes

void Store::upsert_node(const NodeRecord& node) {
  const std::string op = "register node " + std::to_string(node.node_id);
  if (node.node_id == protocol::kCoordinatorId) {
    refuse(path_, ErrorKind::kInvalidInput, op + ": node id 0 is the coordinator's");
  }
  check_length(path_, "node name", node.name, kMaxNodeNameBytes);
  check_length(path_, "node profile", node.profile, kMaxProfileBytes);
  Stmt s(db_, path_,
         "INSERT INTO nodes(node_id, name, public_key, profile, examples, first_seen_ms, last_seen_ms) "
         "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6) "
         "ON CONFLICT(node_id) DO UPDATE SET name = excluded.name, public_key = excluded.public_key, "
         "profile = excluded.profile, examples = excluded.examples, last_seen_ms = excluded.last_seen_ms",
         op);
  s.bind(1, static_cast<std::int64_t>(node.node_id))
      .bind(2, node.name)
      .bind_blob(3, node.public_key)
      .bind(4, node.profile)
      .bind(5, to_i64(node.examples, path_, "examples count"))
      .bind(6, now_ms())
      .run();
}

std::optional<NodeRecord> Store::node(protocol::NodeId id) const {
  std::string sql = std::string(kNodeColumns) + " WHERE node_id = ?1";
  Stmt s(db_, path_, sql.c_str(), "read node");
  s.bind(1, static_cast<std::int64_t>(id));
  if (!s.step()) return std::nullopt;
  return read_node(s);
}

std::vector<NodeRecord> Store::list_nodes() const {
  std::string sql = std::string(kNodeColumns) + " ORDER BY node_id";
  Stmt s(db_, path_, sql.c_str(), "list nodes");
  std::vector<NodeRecord> out;
  while (s.step()) out.push_back(read_node(s));
  return out;
}

void Store::mark_heartbeat(protocol::NodeId id, std::optional<std::int64_t> at_ms) {
  Stmt s(db_, path_, "UPDATE nodes SET last_seen_ms = max(last_seen_ms, ?1) WHERE node_id = ?2", "mark heartbeat");
  s.bind(1, at_ms.value_or(now_ms())).bind(2, static_cast<std::int64_t>(id)).run();
  if (sqlite3_changes(db_) == 0) {
    refuse(path_, ErrorKind::kNotFound, "heartbeat from node " + std::to_string(id) + ", which never registered");
  }
}

// ---------------------------------------------------------------- node keys

namespace {

const char* source_text(KeyBindingSource source) {
  return source == KeyBindingSource::kAllowList ? "allow_list" : "register";
}

NodeKeyBinding read_binding(const Stmt& s) {
  NodeKeyBinding b;
  b.node_id = static_cast<protocol::NodeId>(s.i64(0));
  auto key = s.blob(1);
  if (key.size() == b.public_key.size()) std::memcpy(b.public_key.data(), key.data(), key.size());
  b.source = s.text(2) == "allow_list" ? KeyBindingSource::kAllowList : KeyBindingSource::kRegister;
  b.bound_ms = s.i64(3);
  return b;
}

constexpr const char* kBindingColumns = "SELECT node_id, public_key, source, bound_ms FROM node_keys";

// The bindings of `id` or of `key` (at most two rows: one per unique column).
std::vector<NodeKeyBinding> bindings_of(sqlite3* db, const fs::path& path, protocol::NodeId id,
                                        const protocol::Key32& key) {
  const std::string sql = std::string(kBindingColumns) + " WHERE node_id = ?1 OR public_key = ?2 ORDER BY node_id";
  Stmt s(db, path, sql.c_str(), "read node key bindings");
  s.bind(1, static_cast<std::int64_t>(id)).bind_blob(2, key);
  std::vector<NodeKeyBinding> out;
  while (s.step()) out.push_back(read_binding(s));
  return out;
}

void insert_binding(sqlite3* db, const fs::path& path, protocol::NodeId id, const protocol::Key32& key,
                    KeyBindingSource source, std::int64_t now) {
  Stmt s(db, path, "INSERT INTO node_keys(node_id, public_key, source, bound_ms) VALUES(?1, ?2, ?3, ?4)",
         "bind node " + std::to_string(id) + " to its key");
  s.bind(1, static_cast<std::int64_t>(id)).bind_blob(2, key).bind(3, std::string_view(source_text(source)));
  s.bind(4, now).run();
}

}  // namespace

void Store::bind_node_key(protocol::NodeId id, const protocol::Key32& key) {
  const std::string op = "bind node " + std::to_string(id) + " to key " + protocol::key_to_z85(key);
  if (id == protocol::kCoordinatorId) refuse(path_, ErrorKind::kInvalidInput, op + ": node id 0 is the coordinator's");
  Txn txn(db_, path_, op);
  for (const auto& b : bindings_of(db_, path_, id, key)) {
    if (b.node_id == id && b.public_key == key) return;  // already bound: nothing to do
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": " +
               (b.node_id == id ? "node " + std::to_string(id) + " is bound to key " + protocol::key_to_z85(b.public_key)
                                : "the key is bound to node " + std::to_string(b.node_id)) +
               "; one key is one node (name the node's new key in the allow-list to move it)");
  }
  insert_binding(db_, path_, id, key, KeyBindingSource::kRegister, now_ms());
  txn.commit();
}

std::vector<NodeKeyBinding> Store::pin_node_key(protocol::NodeId id, const protocol::Key32& key) {
  const std::string op = "pin node " + std::to_string(id) + " to key " + protocol::key_to_z85(key);
  if (id == protocol::kCoordinatorId) refuse(path_, ErrorKind::kInvalidInput, op + ": node id 0 is the coordinator's");
  Txn txn(db_, path_, op);
  std::vector<NodeKeyBinding> replaced;
  for (const auto& b : bindings_of(db_, path_, id, key)) {
    if (b.node_id == id && b.public_key == key) return {};  // already bound: nothing to do
    replaced.push_back(b);
  }
  Stmt drop(db_, path_, "DELETE FROM node_keys WHERE node_id = ?1 OR public_key = ?2", op);
  drop.bind(1, static_cast<std::int64_t>(id)).bind_blob(2, key).run();
  insert_binding(db_, path_, id, key, KeyBindingSource::kAllowList, now_ms());
  txn.commit();
  return replaced;
}

std::vector<NodeKeyBinding> Store::node_key_bindings() const {
  const std::string sql = std::string(kBindingColumns) + " ORDER BY node_id";
  Stmt s(db_, path_, sql.c_str(), "list node key bindings");
  std::vector<NodeKeyBinding> out;
  while (s.step()) out.push_back(read_binding(s));
  return out;
}

// ---------------------------------------------------------------- rounds

std::uint64_t Store::begin_round(std::uint64_t round, std::string_view plan_json,
                                 const std::vector<protocol::NodeId>& selected) {
  const std::string op = "begin round " + std::to_string(round);
  auto round_i = to_i64(round, path_, "round id");
  check_length(path_, "round plan", plan_json, kMaxPlanBytes);
  if (!nlohmann::json::accept(plan_json)) refuse(path_, ErrorKind::kInvalidInput, op + ": the plan is not JSON");
  if (selected.empty()) refuse(path_, ErrorKind::kInvalidInput, op + ": no nodes selected");
  if (std::set<protocol::NodeId>(selected.begin(), selected.end()).size() != selected.size()) {
    refuse(path_, ErrorKind::kInvalidInput, op + ": a node is selected twice");
  }

  Txn txn(db_, path_, op);
  if (auto running = running_round()) {
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": round " + std::to_string(running->round) +
               " is still running; complete or fail it (or recover() after a restart) first");
  }
  auto next = last_completed_round() + 1;
  if (round != next) {
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": the last completed round is " + std::to_string(next - 1) + ", so the next round must be " +
               std::to_string(next) + " (rounds are never skipped or repeated)");
  }
  Stmt ins(db_, path_, "INSERT INTO rounds(round, state, plan_json, started_ms) VALUES(?1, 'running', ?2, ?3)", op);
  ins.bind(1, round_i).bind(2, plan_json).bind(3, now_ms()).run();
  auto attempt = static_cast<std::int64_t>(sqlite3_last_insert_rowid(db_));

  Stmt known(db_, path_, "SELECT 1 FROM nodes WHERE node_id = ?1", op);
  Stmt add(db_, path_, "INSERT INTO round_nodes(attempt, position, node_id) VALUES(?1, ?2, ?3)", op);
  for (std::size_t i = 0; i < selected.size(); ++i) {
    known.reset();
    known.bind(1, static_cast<std::int64_t>(selected[i]));
    if (!known.step()) {
      refuse(path_, ErrorKind::kNotFound,
             op + ": selected node " + std::to_string(selected[i]) + " never registered");
    }
    add.reset();
    add.bind(1, attempt).bind(2, static_cast<std::int64_t>(i)).bind(3, static_cast<std::int64_t>(selected[i])).run();
  }
  txn.commit();
  return static_cast<std::uint64_t>(attempt);
}

void Store::complete_round(std::uint64_t round, const RoundResult& result) {
  const std::string op = "complete round " + std::to_string(round);
  auto round_i = to_i64(round, path_, "round id");
  validate_result(path_, result);
  auto sha = normalise_sha256(path_, result.adapter_sha256);

  Txn txn(db_, path_, op);
  auto running = running_round();
  if (!running || running->round != round) {
    if (auto done = completed_round(round)) {
      refuse(path_, ErrorKind::kInvalidInput,
             op + ": it is already completed (adapter version " + std::to_string(done->adapter_version.value_or(0)) +
                 "); a round is never completed twice");
    }
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": it is not running (begin_round first; a failed or abandoned round is begun again)");
  }
  if (result.survivors > running->selected.size()) {
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": " + std::to_string(result.survivors) + " survivors but only " +
               std::to_string(running->selected.size()) + " nodes were selected");
  }
  if (auto latest = latest_version(); latest && result.adapter_version <= latest->version) {
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": adapter version " + std::to_string(result.adapter_version) + " must exceed the latest, " +
               std::to_string(latest->version));
  }
  auto now = now_ms();
  auto attempt = static_cast<std::int64_t>(running->attempt);
  auto version = static_cast<std::int64_t>(result.adapter_version);

  Stmt adapter(db_, path_,
               "INSERT INTO adapter_versions(version, round, path, sha256, size_bytes, created_ms) "
               "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
               op);
  adapter.bind(1, version).bind(2, round_i).bind(3, result.adapter_path).bind(4, sha);
  adapter.bind(5, static_cast<std::int64_t>(result.adapter_size_bytes)).bind(6, now).run();

  Stmt update(db_, path_,
              "UPDATE rounds SET state = 'completed', finished_ms = ?1, adapter_version = ?2, survivors = ?3, "
              "epsilon_spent = ?4 WHERE attempt = ?5",
              op);
  update.bind(1, now).bind(2, version).bind(3, static_cast<std::int64_t>(result.survivors));
  update.bind(4, result.epsilon_spent).bind(5, attempt).run();

  Stmt metric(db_, path_, "INSERT INTO round_metrics(round, attempt, name, value) VALUES(?1, ?2, ?3, ?4)", op);
  for (const auto& [name, value] : result.metrics) {
    metric.reset();
    metric.bind(1, round_i).bind(2, attempt).bind(3, name).bind(4, value).run();
  }
  if (result.dp) {
    const auto& dp = *result.dp;
    Stmt acc(db_, path_,
             "INSERT INTO dp_accountant(round, attempt, noise_multiplier, sampling_rate, steps, epsilon, delta) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
             op);
    acc.bind(1, round_i).bind(2, attempt).bind(3, dp.noise_multiplier).bind(4, dp.sampling_rate);
    acc.bind(5, static_cast<std::int64_t>(dp.steps)).bind(6, dp.epsilon).bind(7, dp.delta).run();
  }
  txn.commit();
}

void Store::fail_round(std::uint64_t round, std::string_view reason) {
  const std::string op = "fail round " + std::to_string(round);
  check_length(path_, "failure reason", reason, kMaxReasonBytes);
  Stmt s(db_, path_,
         "UPDATE rounds SET state = 'failed', reason = ?1, finished_ms = ?2 WHERE round = ?3 AND state = 'running'",
         op);
  s.bind(1, reason).bind(2, now_ms()).bind(3, to_i64(round, path_, "round id")).run();
  if (sqlite3_changes(db_) == 0) refuse(path_, ErrorKind::kInvalidInput, op + ": it is not running");
}

std::uint64_t Store::last_completed_round() const {
  return static_cast<std::uint64_t>(
      query_i64(db_, path_, "SELECT max(round) FROM rounds WHERE state = 'completed'", "read last completed round"));
}

namespace {

std::vector<RoundRecord> read_rounds(sqlite3* db, const fs::path& path, const char* filter,
                                     std::optional<std::int64_t> round) {
  std::string sql = std::string(kRoundColumns) + " " + filter + " ORDER BY attempt";
  Stmt s(db, path, sql.c_str(), "read rounds");
  if (round) s.bind(1, *round);
  std::vector<RoundRecord> out;
  while (s.step()) {
    RoundRecord r;
    r.attempt = s.u64(0);
    r.round = s.u64(1);
    r.state = state_from(s.text(2), path);
    r.plan_json = s.text(3);
    r.started_ms = s.i64(4);
    r.finished_ms = s.is_null(5) ? 0 : s.i64(5);
    if (!s.is_null(6)) r.adapter_version = s.u64(6);
    r.survivors = s.is_null(7) ? 0 : s.u64(7);
    r.epsilon_spent = s.is_null(8) ? 0 : s.f64(8);
    r.reason = s.text(9);
    out.push_back(std::move(r));
  }
  Stmt nodes(db, path, "SELECT node_id FROM round_nodes WHERE attempt = ?1 ORDER BY position", "read round nodes");
  for (auto& r : out) {
    nodes.reset();
    nodes.bind(1, static_cast<std::int64_t>(r.attempt));
    while (nodes.step()) r.selected.push_back(static_cast<protocol::NodeId>(nodes.i64(0)));
  }
  return out;
}

}  // namespace

std::optional<RoundRecord> Store::running_round() const {
  auto rows = read_rounds(db_, path_, "WHERE state = 'running'", std::nullopt);
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::optional<RoundRecord> Store::completed_round(std::uint64_t round) const {
  auto rows = read_rounds(db_, path_, "WHERE round = ?1 AND state = 'completed'", to_i64(round, path_, "round id"));
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::vector<RoundRecord> Store::round_attempts(std::uint64_t round) const {
  return read_rounds(db_, path_, "WHERE round = ?1", to_i64(round, path_, "round id"));
}

Recovery Store::recover() {
  Recovery out;
  {
    Txn txn(db_, path_, "recover");
    if (auto running = running_round()) {
      out.abandoned.push_back(running->round);
      Stmt s(db_, path_,
             "UPDATE rounds SET state = 'abandoned', finished_ms = ?1, reason = ?2 WHERE state = 'running'",
             "recover");
      s.bind(1, now_ms()).bind(2, std::string_view("coordinator restarted while the round was running")).run();
      spdlog::warn("{}: round {} was running when the coordinator stopped; marked abandoned, it will run again",
                   where(path_), running->round);
    }
    txn.commit();
  }
  out.last_completed = last_completed_round();
  out.next_round = out.last_completed + 1;
  out.latest_adapter = latest_version();
  return out;
}

// ---------------------------------------------------------------- metrics and DP

std::map<std::string, double> Store::round_metrics(std::uint64_t round) const {
  Stmt s(db_, path_, "SELECT name, value FROM round_metrics WHERE round = ?1", "read round metrics");
  s.bind(1, to_i64(round, path_, "round id"));
  std::map<std::string, double> out;
  while (s.step()) out.emplace(s.text(0), s.f64(1));
  return out;
}

std::vector<DpRecord> Store::dp_history() const {
  Stmt s(db_, path_,
         "SELECT round, noise_multiplier, sampling_rate, steps, epsilon, delta FROM dp_accountant ORDER BY round",
         "read DP accountant");
  std::vector<DpRecord> out;
  while (s.step()) out.push_back(DpRecord{s.u64(0), s.f64(1), s.f64(2), s.u64(3), s.f64(4), s.f64(5)});
  return out;
}

DpSpent Store::dp_spent() const {
  DpSpent out;
  Stmt last(db_, path_, "SELECT epsilon, delta FROM dp_accountant ORDER BY round DESC LIMIT 1", "read DP spent");
  if (last.step()) {
    out.epsilon = last.f64(0);
    out.delta = last.f64(1);
  }
  Stmt totals(db_, path_, "SELECT count(*), coalesce(sum(steps), 0) FROM dp_accountant", "read DP spent");
  if (totals.step()) {
    out.rounds = totals.u64(0);
    out.steps = totals.u64(1);
  }
  return out;
}

// ---------------------------------------------------------------- adapters

void Store::record_initial_adapter(const AdapterVersion& adapter) {
  const std::string op = "record initial adapter";
  if (adapter.path.empty()) refuse(path_, ErrorKind::kInvalidInput, op + ": no path");
  check_length(path_, "adapter path", adapter.path, kMaxPathBytes);
  auto sha = normalise_sha256(path_, adapter.sha256);
  Txn txn(db_, path_, op);
  if (auto latest = latest_version()) {
    refuse(path_, ErrorKind::kInvalidInput,
           op + ": adapter version " + std::to_string(latest->version) + " is already recorded");
  }
  Stmt s(db_, path_,
         "INSERT INTO adapter_versions(version, round, path, sha256, size_bytes, created_ms) "
         "VALUES(?1, 0, ?2, ?3, ?4, ?5)",
         op);
  s.bind(1, to_i64(adapter.version, path_, "adapter version")).bind(2, adapter.path).bind(3, sha);
  s.bind(4, to_i64(adapter.size_bytes, path_, "adapter size")).bind(5, now_ms()).run();
  txn.commit();
}

namespace {

std::vector<AdapterVersion> read_adapters(sqlite3* db, const fs::path& path, const char* sql,
                                          std::optional<std::int64_t> version) {
  Stmt s(db, path, sql, "read adapter versions");
  if (version) s.bind(1, *version);
  std::vector<AdapterVersion> out;
  while (s.step()) out.push_back(read_adapter(s));
  return out;
}

constexpr const char* kAdapterSelect =
    "SELECT version, round, path, sha256, size_bytes, created_ms FROM adapter_versions ";

}  // namespace

std::optional<AdapterVersion> Store::latest_version() const {
  auto sql = std::string(kAdapterSelect) + "ORDER BY version DESC LIMIT 1";
  auto rows = read_adapters(db_, path_, sql.c_str(), std::nullopt);
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::optional<AdapterVersion> Store::adapter_version(std::uint64_t version) const {
  auto sql = std::string(kAdapterSelect) + "WHERE version = ?1";
  auto rows = read_adapters(db_, path_, sql.c_str(), to_i64(version, path_, "adapter version"));
  if (rows.empty()) return std::nullopt;
  return rows.front();
}

std::vector<AdapterVersion> Store::adapter_versions() const {
  auto sql = std::string(kAdapterSelect) + "ORDER BY version";
  return read_adapters(db_, path_, sql.c_str(), std::nullopt);
}

}  // namespace fedge::coordinator
