# The simulator's node-host wire: what a simulation coordinator process and its
# node-host processes say to each other (sims/include/fedge/sims/host_wire.h,
# docs/SIMULATOR.md "Across machines"). One HostMessage per ZeroMQ frame.
#
# Compatibility rules as in protocol/schema/fedge.capnp: field numbers are never
# reused or renumbered; new fields and union members are appended; `version`
# stays field @0 so any build can read it and refuse a mismatch clearly.
@0x888a0982c83a1951;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("fedge::sims::wire");

# Bumped on any change an older host cannot read correctly (kHostWireVersion).
const hostWireVersion :UInt32 = 1;

# One protocol message in flight to or from a virtual node.
struct Delivery {
  atMs @0 :Int64;       # simulated arrival time
  node @1 :UInt32;      # node index (sender or receiver)
  seq @2 :UInt64;       # orders one sender's messages within a millisecond
  envelope @3 :Data;    # one encoded protocol Envelope (fedge.capnp), untouched
}

struct RoundDone {
  round @0 :UInt32;
  atMs @1 :Int64;
  survivors @2 :List(UInt32);
  global @3 :List(Float32);  # the new global adapter, flat
  evaluate @4 :Bool;
  last @5 :Bool;
}

# One row of metrics.csv (fedge::sims::MetricsRow).
struct MetricsRow {
  level @0 :Int32;
  round @1 :Int32;
  node @2 :Int32;
  perplexity @3 :Float64;    # NaN: the round was not evaluated
  hasAccuracy @4 :Bool;
  accuracy @5 :Float64;      # meaningful only with hasAccuracy
  participated @6 :Bool;
  bytesUp @7 :UInt64;
  bytesDown @8 :UInt64;
  rawBytesLeft @9 :UInt64;
  nodeComputeS @10 :Float64;
  nodeEnergyJ @11 :Float64;
  simTimeS @12 :Float64;
  serving @13 :Bool;
  ttftP50Ms @14 :Float64;
  ttftP95Ms @15 :Float64;
  tpotP50Ms @16 :Float64;
  tpotP95Ms @17 :Float64;
  outageRequests @18 :Int32;
  outageServed @19 :Int32;
  # Personalization (NaN: not measured): the global on the pooled held-out
  # rows, the node's personal adapter on its own and on the pooled rows.
  globalPooledPerplexity @20 :Float64 = nan;
  personalPerplexity @21 :Float64 = nan;
  personalPooledPerplexity @22 :Float64 = nan;
}

struct HostHello {
  hostName @0 :Text;
}

struct HostAssign {
  scenarioToml @0 :Text;
  scenarioSource @1 :Text;
  levels @2 :List(Int32);
  firstNode @3 :UInt32;
  endNode @4 :UInt32;
  threads @5 :Int32;
  seedIndex @6 :UInt32;  # fedge sim --seeds: which seed index to run (0: the scenario's seed)
}

struct HostReady {
  baseDigest @0 :Text;
  splitDigest @1 :Text;  # the block's data split: the same scenario text must give the same split
}

struct StartLevel {
  level @0 :Int32;
}

struct WindowOrder {
  level @0 :Int32;
  untilMs @1 :Int64;
  deliveries @2 :List(Delivery);
  completed @3 :List(RoundDone);
  finish @4 :Bool;
}

struct WindowReport {
  level @0 :Int32;
  messages @1 :List(Delivery);
  hasNextEvent @2 :Bool;
  nextEventMs @3 :Int64;     # meaningful only with hasNextEvent
  rows @4 :List(MetricsRow);
}

struct Shutdown {
  reason @0 :Text;
}

struct HostError {
  message @0 :Text;
}

struct Ping {}

struct HostMessage {
  version @0 :UInt32;
  union {
    # The all-zero default: a message that names no kind is refused, not read
    # as a HostHello.
    unset @1 :Void;
    hostHello @2 :HostHello;
    hostAssign @3 :HostAssign;
    hostReady @4 :HostReady;
    startLevel @5 :StartLevel;
    windowOrder @6 :WindowOrder;
    windowReport @7 :WindowReport;
    shutdown @8 :Shutdown;
    hostError @9 :HostError;
    ping @10 :Ping;
  }
}
