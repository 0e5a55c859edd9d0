// secure_sum_in_process (aggregation/secagg.h): every party of one SecAgg+
// round in this process, messages handed over directly.
#include <string>

#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"

namespace fedge::aggregation {

SecAggResult secure_sum_in_process(std::uint64_t round, const SecAggParams& params,
                                   std::span<const std::vector<std::uint32_t>> inputs) {
  if (params.num_clients != inputs.size())
    throw Error(ErrorKind::kInvalidInput, "secure_sum_in_process: " + std::to_string(inputs.size()) +
                                              " inputs for a round of " + std::to_string(params.num_clients) +
                                              " clients");
  SecAggServer server(round, params, 1);
  std::vector<SecAggClient> clients;
  clients.reserve(inputs.size());
  for (ClientId id = 1; id <= params.num_clients; ++id) clients.emplace_back(server.setup(), id);
  for (auto& c : clients) server.receive(c.advertise_keys());
  for (const auto& keys : server.finish_advertise()) server.receive(clients[keys.recipient - 1].share_keys(keys));
  for (const auto& delivery : server.finish_share_keys())
    server.receive(clients[delivery.recipient - 1].masked_input(delivery, inputs[delivery.recipient - 1]));
  const UnmaskRequest request = server.finish_masked_input();
  for (ClientId id : request.survivors) server.receive(clients[id - 1].unmask(request));
  return server.finish_unmask();
}

}  // namespace fedge::aggregation
