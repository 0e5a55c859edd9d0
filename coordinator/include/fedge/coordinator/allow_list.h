// The node ids the coordinator's allow-list names. The file is
// protocol/keys.h's allow-list (one Z85 CURVE public key per line, optionally
// followed by whitespace and a free-text name; '#' lines are comments); a line
// may start its name with `node=<id>`, and then its key registers as that node
// id only, and that id only with that key:
//
//   rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7 node=3 site-a jetson
//   Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID site-b
//
// A key without `node=` is bound to the id it first registers with. Either
// way the binding is kept in the store across restarts; naming another key
// for an id (or another id for a key) is how an operator moves a node.
#pragma once

#include <filesystem>
#include <map>

#include "fedge/protocol/messages.h"

namespace fedge::coordinator {

// The ids named by `file`'s lines, with their keys. The file is checked as
// protocol::load_allow_list checks it first. Throws Error(kInvalidInput)
// naming file:line for a `node=` that is not an id in 1..4294967295 and for
// an id named twice; Error(kNotFound) for a missing file.
std::map<protocol::NodeId, protocol::Key32> allow_list_node_ids(const std::filesystem::path& file);

}  // namespace fedge::coordinator
