// Prints a sample of every kind the writer makes, hostile label values
// included, for the reference parser (check_prometheus.py) to read.
#include <cstdio>
#include <limits>

#include "fedge/common/prometheus.h"

int main() {
  using namespace fedge::prometheus;
  TextWriter w;
  w.counter("fedge_requests_total", "Requests by outcome.",
            {{{{"outcome", "completed"}}, 12}, {{{"outcome", "failed"}}, 0}});
  w.gauge("fedge_node_info", "Hostile names: \\ and\nnewline.",
          {{{{"name", "a\"b\\c\nd} x=\"1\""}, {"id", "7"}}, 1}});
  w.gauge("fedge_special_values", "NaN and infinities.",
          {{{{"v", "nan"}}, std::numeric_limits<double>::quiet_NaN()},
           {{{"v", "inf"}}, std::numeric_limits<double>::infinity()},
           {{{"v", "small"}}, 1e-300}});
  Histogram h({0.5, 1, 5});
  for (double x : {0.1, 0.5, 0.7, 3.0, 100.0}) h.observe(x);
  w.histogram("fedge_round_duration_seconds", "Round durations.", {{{{"outcome", "completed"}}, h}});
  w.gauge("fedge_empty", "A family without samples.", std::vector<Sample>{});
  std::fputs(w.text().c_str(), stdout);
  return 0;
}
