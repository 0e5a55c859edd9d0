// The node's round core is federation/'s RoundClient
// (fedge/federation/round_client.h); this header names it in the node's
// namespace for the node's users (the simulator), which reach federation/ only
// through the node.
#pragma once

#include "fedge/federation/round_client.h"
#include "fedge/federation/size_caps.h"

namespace fedge::node {

using federation::client_state_name;
using federation::ClientState;
using federation::InstallGlobal;
using federation::LocalUpdate;
using federation::node_size_caps;
using federation::NodeActions;
using federation::NodeClientConfig;
using federation::NodeIdentity;
using federation::RoundClient;
using federation::TrainCommand;

}  // namespace fedge::node
