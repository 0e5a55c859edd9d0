#include "fedge/coordinator/allow_list.h"

#include <charconv>
#include <fstream>
#include <string>
#include <string_view>

#include "fedge/common/error.h"
#include "fedge/protocol/keys.h"

namespace fedge::coordinator {
namespace {

constexpr std::string_view kSpace = " \t\r\n";
constexpr std::string_view kNodeWord = "node=";

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

// The id of a `node=<id>` word; throws naming the line otherwise.
protocol::NodeId parse_node_word(std::string_view word, const std::string& where) {
  const std::string_view digits = word.substr(kNodeWord.size());
  std::uint64_t id = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || id == 0 || id > 0xffffffffULL) {
    throw Error(ErrorKind::kInvalidInput, where + ": '" + std::string(word) +
                                              "' must name a node id from 1 to 4294967295 (e.g. node=3), "
                                              "or remove it to bind the key at its first registration");
  }
  return static_cast<protocol::NodeId>(id);
}

}  // namespace

std::map<protocol::NodeId, protocol::Key32> allow_list_node_ids(const std::filesystem::path& file) {
  protocol::load_allow_list(file);  // the format, the keys and duplicates, as the CURVE handshake reads them
  std::ifstream in(file);
  if (!in) throw Error(ErrorKind::kIo, "cannot read allow-list " + file.string());
  std::map<protocol::NodeId, protocol::Key32> ids;
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string_view text = trim(raw);
    const std::string_view key = text.substr(0, text.find_first_of(kSpace));
    if (!protocol::is_z85_key(key)) continue;  // a comment or a blank line
    const std::string_view rest = trim(text.substr(key.size()));
    const std::string_view word = rest.substr(0, rest.find_first_of(kSpace));
    if (word.substr(0, kNodeWord.size()) != kNodeWord) continue;  // no id named
    const std::string where = file.string() + ":" + std::to_string(line);
    const protocol::NodeId id = parse_node_word(word, where);
    if (!ids.emplace(id, protocol::z85_to_key(key, "allow-listed key")).second) {
      throw Error(ErrorKind::kInvalidInput, where + ": node " + std::to_string(id) +
                                                " is named by an earlier line too; one node id has one key");
    }
  }
  return ids;
}

}  // namespace fedge::coordinator
