// Coordinator state in SQLite: nodes, rounds, per-round metrics, the DP
// accountant and the list of global adapter versions, so that a coordinator
// killed at any point restarts and continues from the last completed round,
// neither losing a round nor completing one twice.
//
// Crash model. A round is a row that goes "running" -> "completed" | "failed"
// | "abandoned". Everything a completed round produces (its adapter version,
// metrics, survivors, DP accountant row) is written in ONE transaction by
// complete_round(), so after a crash a round is either entirely completed or
// still "running". On restart, recover() marks every "running" round
// "abandoned" and returns last_completed_round() + 1 as the round to run next;
// that round id is then begun again as a fresh attempt. The coordinator should
// write the adapter safetensors file durably (temp file, fsync, rename, fsync
// of its folder and of the new folder's entry: write_file_atomically and
// fsync_directory in common/file_io.h) BEFORE calling complete_round(): with
// synchronous = FULL the committed row survives power loss, and so must the
// file it names. A file without a row is left over from an abandoned round
// and is simply overwritten when the round is run again.
//
// Privacy rule. The database holds NO table or column that could hold an
// individual node's update: only sums (the global adapters, which live in
// safetensors files outside the database and are referenced by path), scalar
// metrics and DP accounting. The only BLOB columns are the nodes' CURVE public
// keys (nodes.public_key and node_keys.public_key, 32 bytes, length-checked);
// all tables are STRICT (a TEXT column refuses blobs)
// and text columns carry length limits small enough that no update fits in
// them. tests/coordinator/test_store.cpp inspects sqlite_master to keep it so.
//
// Files: WAL journal, foreign keys on, PRAGMA application_id marks the file as
// fedge's, and the schema_version table records applied migrations. A second
// Store (or process) may open the same file: readers see committed rounds and
// writers wait up to StoreOptions::busy_timeout_ms for each other.
//
// A Store is not thread-safe: use one per thread (they share the file safely).
// Every failure throws fedge::Error naming the database file and the
// operation: kInvalidInput for a file that is not fedge's (or is newer) and for
// calls that would break the round rules, kNotFound for an unknown node or
// round, kIo for what SQLite or the OS refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/federation/membership.h"
#include "fedge/federation/round_result.h"
#include "fedge/protocol/messages.h"

struct sqlite3;

namespace fedge::coordinator {

// Schema version this build writes; open() migrates older files up to it and
// refuses newer ones.
inline constexpr int kStoreSchemaVersion = 2;
// PRAGMA application_id of a fedge coordinator database ("FEDG").
inline constexpr std::int32_t kStoreApplicationId = 0x46454447;

// Limits that keep every text column too small to smuggle an update into.
using federation::kMaxNodeNameBytes;  // the coordinator core refuses longer ones (membership.h)
using federation::kMaxProfileBytes;
inline constexpr std::size_t kMaxPlanBytes = 64 * 1024;
inline constexpr std::size_t kMaxReasonBytes = 4 * 1024;
inline constexpr std::size_t kMaxMetricNameBytes = 128;
inline constexpr std::size_t kMaxPathBytes = 4096;

struct StoreOptions {
  int busy_timeout_ms = 5000;
  // Milliseconds since the epoch for first/last seen and round timestamps; the
  // simulator passes its virtual clock. Empty: the system clock.
  std::function<std::int64_t()> clock;
};

struct NodeRecord {
  protocol::NodeId node_id = 0;  // 1..2^32-1 (0 is the coordinator)
  std::string name;
  protocol::Key32 public_key{};  // CurveZMQ public key, raw 32 bytes
  std::string profile;           // device profile text
  std::uint64_t examples = 0;
  // Set by the store (its clock), ignored by upsert_node.
  std::int64_t first_seen_ms = 0;  // first registration
  std::int64_t last_seen_ms = 0;   // last registration or heartbeat
  bool operator==(const NodeRecord&) const = default;
};

// A public key given as 40 Z85 characters or as 32 raw bytes.
// Throws Error(kInvalidInput) for anything else.
protocol::Key32 public_key_from_text(std::string_view text);

// SHA-256 (lowercase hex) and size of an adapter file, for AdapterVersion and
// RoundResult, so a restarted coordinator can tell a file that changed on disk.
// Throws Error(kNotFound) for a missing file, Error(kIo) for a read failure.
struct FileDigest {
  std::string sha256;
  std::uint64_t size_bytes = 0;
};
FileDigest digest_file(const std::filesystem::path& file);

// A node id bound to the CURVE key it registers with, for the life of the
// federation: one key is one node, one node one key (issue 16, finding 2).
enum class KeyBindingSource {
  kRegister,   // the key the node first registered with over CURVE
  kAllowList,  // an allow-list line that names the id (the operator's word)
};
struct NodeKeyBinding {
  protocol::NodeId node_id = 0;
  protocol::Key32 public_key{};
  KeyBindingSource source = KeyBindingSource::kRegister;
  std::int64_t bound_ms = 0;  // the store's clock
  bool operator==(const NodeKeyBinding&) const = default;
};

enum class RoundState { kRunning, kCompleted, kFailed, kAbandoned };
std::string_view round_state_name(RoundState state);

// One row of the DP accountant (federation/round_result.h); dp_history()
// returns them for a restarted coordinator to replay.
using federation::DpRecord;

struct DpSpent {
  double epsilon = 0;  // cumulative, from the latest accountant row (0 without DP)
  double delta = 0;
  std::uint64_t rounds = 0;  // rounds with an accountant row
  std::uint64_t steps = 0;   // sum of steps over those rounds
};

struct AdapterVersion {
  std::uint64_t version = 0;
  std::uint64_t round = 0;  // the round that produced it; 0 for the initial adapter
  std::string path;         // the adapter safetensors file
  std::string sha256;       // 64 lowercase hex digits, or empty when not computed
  std::uint64_t size_bytes = 0;
  std::int64_t created_ms = 0;
  bool operator==(const AdapterVersion&) const = default;
};

// What a completed round produced; complete_round() stores all of it at once.
struct RoundResult {
  std::uint64_t adapter_version = 0;  // must exceed latest_version()
  std::string adapter_path;
  std::string adapter_sha256;  // 64 hex digits or empty
  std::uint64_t adapter_size_bytes = 0;
  std::map<std::string, double> metrics;  // name -> value (NaN refused)
  std::uint64_t survivors = 0;
  double epsilon_spent = 0;    // cumulative epsilon after this round
  std::optional<DpRecord> dp;  // accountant row for this round, if DP is on
};

// One attempt at a round (a round id that was abandoned or failed is begun
// again as a new attempt).
struct RoundRecord {
  std::uint64_t attempt = 0;
  std::uint64_t round = 0;
  RoundState state = RoundState::kRunning;
  std::string plan_json;
  std::vector<protocol::NodeId> selected;  // in the order given to begin_round
  std::int64_t started_ms = 0;
  std::int64_t finished_ms = 0;  // 0 while running
  std::optional<std::uint64_t> adapter_version;  // completed rounds only
  std::uint64_t survivors = 0;
  double epsilon_spent = 0;
  std::string reason;  // why it failed or was abandoned
};

struct Recovery {
  std::uint64_t next_round = 1;
  std::uint64_t last_completed = 0;  // 0 when none has completed
  std::vector<std::uint64_t> abandoned;  // rounds that were running at the crash
  std::optional<AdapterVersion> latest_adapter;
};

class Store {
 public:
  // Creates or opens the database at `path` and migrates it to
  // kStoreSchemaVersion. Throws Error(kInvalidInput) naming the file for a file
  // that is not SQLite, not fedge's, or from a newer fedge.
  static Store open(const std::filesystem::path& path, StoreOptions options = {});

  Store(Store&& other) noexcept;
  Store& operator=(Store&& other) noexcept;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  ~Store();

  const std::filesystem::path& path() const { return path_; }
  int schema_version() const;

  // --- nodes ---
  // Inserts a node or updates name, key, profile and examples of a known one;
  // first_seen is kept from the first registration, last_seen becomes now.
  void upsert_node(const NodeRecord& node);
  std::optional<NodeRecord> node(protocol::NodeId id) const;
  std::vector<NodeRecord> list_nodes() const;  // by node id
  // Throws Error(kNotFound) for a node that never registered.
  void mark_heartbeat(protocol::NodeId id, std::optional<std::int64_t> at_ms = std::nullopt);

  // --- node id <-> CURVE key bindings (kept across restarts) ---
  // Records the key node `id` registered with over CURVE; the same pair again
  // changes nothing. Throws Error(kInvalidInput) naming both when the id is
  // bound to another key or the key to another id (the coordinator core
  // refuses such a Register before it gets here).
  void bind_node_key(protocol::NodeId id, const protocol::Key32& key);
  // The operator's word (an allow-list line that names the id): binds them,
  // first dropping the other bindings of the id and of the key, which it
  // returns so the caller can say what changed. A pair already bound stays.
  std::vector<NodeKeyBinding> pin_node_key(protocol::NodeId id, const protocol::Key32& key);
  std::vector<NodeKeyBinding> node_key_bindings() const;  // by node id

  // --- rounds ---
  // Starts an attempt at `round`, which must be last_completed_round() + 1,
  // with no other round running; the selected nodes must be registered.
  // Returns the attempt id.
  std::uint64_t begin_round(std::uint64_t round, std::string_view plan_json,
                            const std::vector<protocol::NodeId>& selected);
  // Completes the running attempt of `round` in one transaction. Refuses a
  // round that is not running, including one already completed.
  void complete_round(std::uint64_t round, const RoundResult& result);
  void fail_round(std::uint64_t round, std::string_view reason);
  std::uint64_t last_completed_round() const;  // 0 when none
  std::optional<RoundRecord> running_round() const;
  std::optional<RoundRecord> completed_round(std::uint64_t round) const;
  std::vector<RoundRecord> round_attempts(std::uint64_t round) const;  // oldest first
  // Call once at start-up: abandons rounds left running by a crash and says
  // which round to run next.
  Recovery recover();

  // --- metrics and DP ---
  std::map<std::string, double> round_metrics(std::uint64_t round) const;
  std::vector<DpRecord> dp_history() const;  // by round
  DpSpent dp_spent() const;

  // --- global adapters ---
  // Records the adapter the federation starts from (round 0) when there is none yet.
  void record_initial_adapter(const AdapterVersion& adapter);
  std::optional<AdapterVersion> latest_version() const;
  std::optional<AdapterVersion> adapter_version(std::uint64_t version) const;
  std::vector<AdapterVersion> adapter_versions() const;  // by version

 private:
  Store(std::filesystem::path path, sqlite3* db, StoreOptions options);
  std::int64_t now_ms() const;
  void close() noexcept;

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  StoreOptions options_;
};

}  // namespace fedge::coordinator
