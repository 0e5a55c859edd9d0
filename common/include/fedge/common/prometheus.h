// A writer of Prometheus' text exposition format, version 0.0.4 (what
// `GET /metrics` answers on `fedge node` and `fedge coordinator`):
//
//   # HELP fedge_rounds_completed_total Rounds that produced a new global adapter.
//   # TYPE fedge_rounds_completed_total counter
//   fedge_rounds_completed_total 3
//   # HELP fedge_nodes Nodes known to the coordinator, by state.
//   # TYPE fedge_nodes gauge
//   fedge_nodes{state="live"} 3
//
// Each family is written at once (HELP, TYPE, then its samples), so a family
// never appears twice. Names follow Prometheus' rules and are checked: metric
// names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* not
// starting with "__"; a counter's name ends in "_total" (the convention that
// Prometheus' client libraries follow), and "le" is the histogram's own label.
// Label values are escaped (backslash, double quote, newline), so any text
// (a node's self-chosen name, say) is safe in one. Values print as the
// shortest text that reads back to the same double; NaN and infinities as
// Prometheus spells them (NaN, +Inf, -Inf).
//
// Not thread-safe: build one per scrape. Every check failure throws
// fedge::Error(kInvalidInput) naming the metric and what is wrong: they are
// programming errors of the caller, caught by its tests.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fedge::prometheus {

// The Content-Type of a scrape's answer.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

using Labels = std::vector<std::pair<std::string, std::string>>;

struct Sample {
  Labels labels;
  double value = 0;
};

// One histogram series: counts per bucket and the sum of what was observed.
// `upper_bounds` must be finite and strictly increasing; the +Inf bucket is
// implied. Not thread-safe (the owner guards it).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);

  const std::vector<double>& upper_bounds() const { return bounds_; }
  // Observations per bucket, NOT cumulative: counts()[i] fell in
  // (upper_bounds()[i-1], upper_bounds()[i]]; the last entry is the +Inf bucket.
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class TextWriter {
 public:
  void counter(std::string_view name, std::string_view help, double value);
  void counter(std::string_view name, std::string_view help, const std::vector<Sample>& samples);
  void gauge(std::string_view name, std::string_view help, double value);
  void gauge(std::string_view name, std::string_view help, const std::vector<Sample>& samples);
  // Writes NAME_bucket{le=...} (cumulative), NAME_sum and NAME_count per series.
  void histogram(std::string_view name, std::string_view help, const Histogram& series);
  void histogram(std::string_view name, std::string_view help,
                 const std::vector<std::pair<Labels, Histogram>>& series);

  const std::string& text() const { return out_; }

 private:
  void family(std::string_view name, std::string_view help, std::string_view type);
  void samples(std::string_view name, const std::vector<Sample>& samples, std::string_view reserved_label = {});
  void line(std::string_view name, const Labels& labels, double value);

  std::string out_;
  std::set<std::string, std::less<>> families_;
};

bool is_metric_name(std::string_view name);
bool is_label_name(std::string_view name);  // also false for reserved "__..." names
// `\` -> `\\`, `"` -> `\"`, newline -> `\n` (a label value's escaping).
std::string escape_label_value(std::string_view value);
// `\` -> `\\`, newline -> `\n` (a HELP text's escaping).
std::string escape_help(std::string_view help);
// Shortest round-trip decimal; "NaN", "+Inf", "-Inf".
std::string format_value(double value);

}  // namespace fedge::prometheus
