# fedge wire protocol: every message between coordinator and nodes is one
# Envelope in one ZeroMQ frame. See docs/PROTOCOL.md.
#
# Compatibility rules: field numbers are never reused or renumbered; new fields
# and new union members are appended. `version` stays field @0 so any build can
# read it from any other build's message and refuse a mismatch with a clear error.
@0xb5dbb03e373f2612;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("fedge::protocol::wire");

# Bumped on any change that an older peer cannot read correctly.
const protocolVersion :UInt16 = 1;

enum ErrorCode {
  unknown @0;
  badVersion @1;        # envelope version differs from the receiver's
  malformed @2;         # bytes do not decode, or a field is out of range
  tooLarge @3;          # message or list over the receiver's limits
  wrongRound @4;        # round id is not the current round
  wrongStage @5;        # message arrived outside its stage
  notAllowed @6;        # sender not registered / not on the allow-list
  unknownSender @7;
  duplicate @8;
  deadlineMissed @9;
  unsupported @10;      # message type or option not handled by this peer
  internal @11;         # receiver failed for its own reasons
  overloaded @12;       # try again later
}

enum NodeState {
  idle @0;
  training @1;
  aggregating @2;
  serving @3;
  draining @4;
}

struct Capabilities {
  deviceProfile @0 :Text;   # e.g. "rpi5", "jetson-orin", "x86-2core"
  numExamples @1 :UInt64;   # local training examples
  modelName @2 :Text;       # base model the node serves
  threads @3 :UInt32;
  memoryBytes @4 :UInt64;
}

struct Register {
  nodeId @0 :UInt32;
  name @1 :Text;
  publicKey @2 :Data;       # 32-byte CurveZMQ public key of the node (as on the allow-list)
  capabilities @3 :Capabilities;
}

struct RegisterAck {
  nodeId @0 :UInt32;
  heartbeatIntervalMs @1 :UInt32;
  globalVersion @2 :UInt64;
}

struct Heartbeat {
  unixMs @0 :UInt64;
  state @1 :NodeState;
  globalVersion @2 :UInt64;  # adapter version the node serves
}

struct HyperParams {
  localSteps @0 :UInt32;
  learningRate @1 :Float32;
  batchSize @2 :UInt32;
  fedproxMu @3 :Float32;     # 0: plain FedAvg local objective
}

# Milliseconds each stage may take once it starts; a node that misses one is a dropout.
struct Deadlines {
  trainMs @0 :UInt32;
  advertiseKeysMs @1 :UInt32;
  shareKeysMs @2 :UInt32;
  maskedInputMs @3 :UInt32;
  unmaskMs @4 :UInt32;
}

enum DpMode {
  none @0;
  central @1;       # coordinator adds Gaussian noise to the sum
  distributed @2;   # each node adds its share of integer (Skellam) noise
}

struct SecAggParams {
  numClients @0 :UInt32;     # n = length of RoundPlan.selected
  threshold @1 :UInt32;      # t
  degree @2 :UInt32;         # k neighbours (n-1: complete graph)
  vectorLength @3 :UInt64;   # d ring elements per masked input
  graphSeed @4 :Data;        # 32 bytes; fixes the neighbour graph
  quantBits @5 :UInt32;      # 2..32
  clipRange @6 :Float64;     # values clipped to [-clipRange, clipRange] before quantising
  noiseBound @7 :UInt64;     # per-input integer noise bound used in the capacity check
  prg @8 :MaskPrg;           # the mask generator every party of the round uses
  mode @9 :SecAggMode;
  graphSeedCommitment @10 :Data;  # malicious mode: 32 bytes, BLAKE2b commitment to the seed; graphSeed is then all zero
}

enum SecAggMode {
  semiHonest @0;             # the coordinator follows the protocol (docs/SECURE_AGGREGATION.md)
  malicious @1;              # signed keys, consistency round, committed graph seed
}

enum MaskPrg {
  chacha20 @0;               # runs anywhere
  aes256Ctr @1;              # needs AES instructions on every node; faster unmasking
}

struct DpParams {
  mode @0 :DpMode;
  clipNorm @1 :Float64;
  noiseMultiplier @2 :Float64;
}

struct RoundPlan {
  globalVersion @0 :UInt64;
  hyper @1 :HyperParams;
  deadlines @2 :Deadlines;
  secure @3 :Bool;           # false: nodes answer with PlainUpdate
  secagg @4 :SecAggParams;
  dp @5 :DpParams;
  selected @6 :List(UInt32); # node ids; a node's secure-aggregation client id is its index here + 1
  updateLength @7 :UInt64;   # float elements of the flattened update
  exampleScale @8 :UInt64;   # node weight = min(examples, exampleScale) / exampleScale (docs/FEDERATION.md); 0 = unset
  lossCap @9 :Float64;       # train losses are clamped to [0, lossCap] in the secure sum; 0 = not reported
}

# --- secure aggregation (ids inside these messages are client ids 1..n) ---

struct AdvertiseKeys {
  cPublic @0 :Data;          # 32-byte X25519 key, encrypts shares
  sPublic @1 :Data;          # 32-byte X25519 key, derives pairwise masks
  signature @2 :Data;        # malicious mode: 64 bytes, Ed25519 (docs/SECURE_AGGREGATION.md); else empty
}

struct PeerKeys {
  id @0 :UInt32;
  cPublic @1 :Data;
  sPublic @2 :Data;
  signature @3 :Data;
}

struct KeysBroadcast {
  recipient @0 :UInt32;
  neighbours @1 :List(PeerKeys);
  graphSeed @2 :Data;        # malicious mode: 32 bytes, opens the plan's graphSeedCommitment; else empty
}

struct EncryptedShare {
  from @0 :UInt32;
  to @1 :UInt32;
  box @2 :Data;              # AEAD ciphertext
}

struct ShareKeys {
  sender @0 :UInt32;         # client id
  shares @1 :List(EncryptedShare);
}

struct SharesDelivery {
  recipient @0 :UInt32;
  shares @1 :List(EncryptedShare);
}

struct MaskedInput {
  sender @0 :UInt32;         # client id
  masked @1 :Data;           # d x uint32 little-endian, ring Z_2^32
}

struct UnmaskRequest {
  survivors @0 :List(UInt32);
  dropped @1 :List(UInt32);
  signatures @2 :List(SurvivorSignature);  # malicious mode: >= t survivors' signatures on `survivors`
}

# Malicious mode: the coordinator asks the survivors to sign the survivor set
# before anyone reveals a share (the consistency round).
struct ConsistencyCheck {
  survivors @0 :List(UInt32);
}

struct SurvivorSignature {
  sender @0 :UInt32;         # client id
  signature @1 :Data;        # 64 bytes, Ed25519 over the survivor set
}

enum SecretKind {
  selfMask @0;               # share of the self-mask seed b (surviving owner)
  pairwiseKey @1;            # share of the mask secret key s (dropped owner)
}

struct RevealedShare {
  owner @0 :UInt32;          # whose secret
  kind @1 :SecretKind;
  x @2 :UInt32;              # Shamir x (the holder's client id)
  y @3 :List(UInt64);        # one element per chunk of the secret
}

struct UnmaskResponse {
  sender @0 :UInt32;
  shares @1 :List(RevealedShare);
}

# --- plain (non-secure) training and results ---

struct PlainUpdate {
  numExamples @0 :UInt64;
  update @1 :Data;           # float32 little-endian, RoundPlan.updateLength elements
  trainLoss @2 :Float32;
}

struct TensorLayout {
  name @0 :Text;
  shape @1 :List(UInt64);
}

enum ModelFormat {
  flatF32 @0;                # data = float32 LE, tensors in `layout` order
  safetensors @1;            # data = a complete safetensors file
}

struct GlobalModel {
  version @0 :UInt64;
  format @1 :ModelFormat;
  data @2 :Data;
  layout @3 :List(TensorLayout);
}

struct Metric {
  name @0 :Text;
  value @1 :Float64;
}

struct Metrics {
  entries @0 :List(Metric);
}

# --- inference ---

enum AdapterChoice {
  global @0;
  local @1;
  none @2;
}

enum FinishReason {
  stop @0;
  length @1;
  error @2;
  cancelled @3;
}

struct InferenceRequest {
  requestId @0 :UInt64;
  prompt @1 :Text;
  maxTokens @2 :UInt32;
  temperature @3 :Float32;
  topP @4 :Float32;
  seed @5 :UInt64;
  adapter @6 :AdapterChoice;
  stream @7 :Bool;
}

struct InferenceResponse {
  requestId @0 :UInt64;
  text @1 :Text;
  promptTokens @2 :UInt32;
  completionTokens @3 :UInt32;
  finish @4 :FinishReason;
  fellBackToLocal @5 :Bool;  # split inference could not use its peer
  note @6 :Text;
}

struct TokenChunk {
  requestId @0 :UInt64;
  index @1 :UInt32;
  tokenId @2 :UInt32;
  text @3 :Text;
  last @4 :Bool;
  finish @5 :FinishReason;   # meaningful when last
}

enum HiddenKind {
  activations @0;            # output of the sender's last layer
  logits @1;                 # final logits from the peer
}

struct HiddenStates {
  requestId @0 :UInt64;
  kind @1 :HiddenKind;
  layer @2 :UInt32;          # first layer the receiver runs (activations)
  position @3 :UInt32;       # first token position in this chunk
  shape @4 :List(UInt64);    # e.g. [tokens, hidden]
  data @5 :Data;             # float32 LE, product(shape) elements
}

struct ErrorReply {
  code @0 :ErrorCode;
  message @1 :Text;
  inReplyTo @2 :UInt16;      # Envelope.body discriminant of the refused message, 0xffff if unknown
}

struct Envelope {
  version @0 :UInt16;
  round @1 :UInt64;          # 0 outside rounds
  sender @2 :UInt32;         # node id; 0 = coordinator
  body :union {
    register @3 :Register;
    registerAck @4 :RegisterAck;
    heartbeat @5 :Heartbeat;
    roundPlan @6 :RoundPlan;
    advertiseKeys @7 :AdvertiseKeys;
    keysBroadcast @8 :KeysBroadcast;
    shareKeys @9 :ShareKeys;
    sharesDelivery @10 :SharesDelivery;
    maskedInput @11 :MaskedInput;
    unmaskRequest @12 :UnmaskRequest;
    unmaskResponse @13 :UnmaskResponse;
    plainUpdate @14 :PlainUpdate;
    globalModel @15 :GlobalModel;
    metrics @16 :Metrics;
    inferenceRequest @17 :InferenceRequest;
    inferenceResponse @18 :InferenceResponse;
    tokenChunk @19 :TokenChunk;
    hiddenStates @20 :HiddenStates;
    error @21 :ErrorReply;
    consistencyCheck @23 :ConsistencyCheck;
    survivorSignature @24 :SurvivorSignature;
  }
  # Attempt of `round` (1-based) on round messages, both ways: a retried round
  # keeps its id, and a late message of a failed attempt must not count in the
  # next one. 0 outside rounds.
  attempt @22 :UInt32;
}
