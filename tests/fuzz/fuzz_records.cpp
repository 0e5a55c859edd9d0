// libFuzzer target for on-site training data (training/records.h): JSONL
// records (text, prompt/completion, chat) and CSV rows rendered through a
// template. Built and run by scripts/fuzz.sh (docs/FUZZING.md).
// The input is read twice: whole, as a JSONL file; and as a template (its
// first line) over a CSV file (the rest). Each read must return records or
// throw fedge::Error, with and without skip_bad. A JSONL record that is read
// must write as fedge's own JSONL line (write_jsonl's form) that reads back to
// the same record. Anything else (crash, other exception, sanitizer report) is
// a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/training/records.h"

namespace {

using namespace fedge::training;

void check(bool ok) {
  if (!ok) std::abort();
}

// write_jsonl's line for one record.
std::string jsonl_line(const Record& r) {
  const nlohmann::json line = r.is_instruction() ? nlohmann::json{{"prompt", r.prompt}, {"completion", r.completion}}
                                                 : nlohmann::json{{"text", r.completion}};
  return line.dump();
}

template <class Read>
void read_both_ways(Read read, bool round_trip) {
  for (bool skip_bad : {false, true}) {
    ReadReport report;
    try {
      const auto records = read(ReadOptions{skip_bad}, report);
      check(report.records == records.size());
      check(report.first_problems.size() <= 10 && report.first_problems.size() <= report.skipped);
      if (!round_trip) continue;
      for (const Record& r : records) {
        const auto again = parse_jsonl(jsonl_line(r), "again");
        check(again.size() == 1 && again[0].prompt == r.prompt && again[0].completion == r.completion);
      }
    } catch (const fedge::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  read_both_ways([&](const ReadOptions& o, ReadReport& r) { return parse_jsonl(text, "fuzz.jsonl", o, &r); }, true);
  const std::size_t newline = text.find('\n');
  const std::string_view text_template = text.substr(0, newline);
  const std::string_view csv = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
  read_both_ways([&](const ReadOptions& o, ReadReport& r) { return parse_csv(csv, "fuzz.csv", text_template, o, &r); },
                 false);
  return 0;
}
