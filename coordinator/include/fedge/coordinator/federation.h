// The coordinator's round core is federation/'s CoordinatorCore
// (fedge/federation/coordinator_core.h); this header names it in the
// coordinator's namespace for the coordinator's users (the simulator), which
// reach federation/ only through the coordinator.
#pragma once

#include "fedge/federation/coordinator_core.h"
#include "fedge/federation/size_caps.h"

namespace fedge::coordinator {

using federation::CoordinatorActions;
using federation::CoordinatorCore;
using federation::coordinator_size_caps;
using federation::CoordinatorEvent;
using federation::DpConfig;
using federation::FederationConfig;
using federation::FederationFinished;
using federation::MessageRefused;
using federation::NodeReportedError;
using federation::NodeLost;
using federation::NodeRegistered;
using federation::Outgoing;
using federation::ResumeState;
using federation::RoundCompleted;
using federation::RoundFailed;
using federation::RoundStage;
using federation::RoundStarted;
using federation::RoundStats;
using federation::StageCount;
using federation::stage_name;
using federation::validate;

}  // namespace fedge::coordinator
