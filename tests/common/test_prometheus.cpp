#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "fedge/common/error.h"
#include "fedge/common/prometheus.h"

using namespace fedge::prometheus;

TEST_CASE("prometheus: counters and gauges are written with HELP and TYPE, exactly", "[prometheus]") {
  TextWriter w;
  w.counter("fedge_rounds_completed_total", "Rounds that produced a new global adapter.", 3);
  w.gauge("fedge_nodes", "Nodes by state.", {{{{"state", "live"}}, 2}, {{{"state", "lost"}}, 1}});
  w.gauge("fedge_dp_epsilon", "Epsilon spent.", 0.25);
  CHECK(w.text() ==
        "# HELP fedge_rounds_completed_total Rounds that produced a new global adapter.\n"
        "# TYPE fedge_rounds_completed_total counter\n"
        "fedge_rounds_completed_total 3\n"
        "# HELP fedge_nodes Nodes by state.\n"
        "# TYPE fedge_nodes gauge\n"
        "fedge_nodes{state=\"live\"} 2\n"
        "fedge_nodes{state=\"lost\"} 1\n"
        "# HELP fedge_dp_epsilon Epsilon spent.\n"
        "# TYPE fedge_dp_epsilon gauge\n"
        "fedge_dp_epsilon 0.25\n");
}

TEST_CASE("prometheus: a family without samples still has its HELP and TYPE", "[prometheus]") {
  TextWriter w;
  w.gauge("fedge_round_last_metric", "Quality figures.", std::vector<Sample>{});
  CHECK(w.text() == "# HELP fedge_round_last_metric Quality figures.\n# TYPE fedge_round_last_metric gauge\n");
}

TEST_CASE("prometheus: hostile label values and HELP texts are escaped", "[prometheus]") {
  TextWriter w;
  w.gauge("fedge_node_info", "A node's \\ name\non two lines.",
          {{{{"name", "a\"b\\c\nd} x=\"1\""}, {"id", "7"}}, 1}});
  CHECK(w.text() ==
        "# HELP fedge_node_info A node's \\\\ name\\non two lines.\n"
        "# TYPE fedge_node_info gauge\n"
        "fedge_node_info{name=\"a\\\"b\\\\c\\nd} x=\\\"1\\\"\",id=\"7\"} 1\n");
  CHECK(escape_label_value("") == "");
  CHECK(escape_label_value("plain/ünïcode") == "plain/ünïcode");
  CHECK(escape_help("a\"b") == "a\"b");  // quotes stay as they are in HELP
}

TEST_CASE("prometheus: values print as the shortest round trip, NaN and infinities as Prometheus spells them",
          "[prometheus]") {
  CHECK(format_value(0) == "0");
  CHECK(format_value(42) == "42");
  CHECK(format_value(0.1) == "0.1");
  CHECK(format_value(-2.5) == "-2.5");
  CHECK(format_value(1e300) == "1e+300");
  CHECK(format_value(18446744073709551616.0) == "18446744073709551616");  // 2^64, exact
  CHECK(format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(std::stod(format_value(1.0 / 3.0)) == 1.0 / 3.0);
}

TEST_CASE("prometheus: histograms write cumulative buckets, +Inf, sum and count", "[prometheus]") {
  Histogram h({0.5, 1, 5});
  for (double x : {0.1, 0.5, 0.7, 3.0, 100.0}) h.observe(x);
  CHECK(h.count() == 5);
  CHECK(h.counts() == std::vector<std::uint64_t>{2, 1, 1, 1});
  TextWriter w;
  w.histogram("fedge_round_duration_seconds", "Round durations.", {{{{"outcome", "completed"}}, h}});
  CHECK(w.text() ==
        "# HELP fedge_round_duration_seconds Round durations.\n"
        "# TYPE fedge_round_duration_seconds histogram\n"
        "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"0.5\"} 2\n"
        "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"1\"} 3\n"
        "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"5\"} 4\n"
        "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"+Inf\"} 5\n"
        "fedge_round_duration_seconds_sum{outcome=\"completed\"} 104.3\n"
        "fedge_round_duration_seconds_count{outcome=\"completed\"} 5\n");
  CHECK_THROWS_WITH(Histogram({1, 1}), Catch::Contains("strictly increasing"));
  CHECK_THROWS_WITH(Histogram({1, std::numeric_limits<double>::infinity()}), Catch::Contains("finite"));
}

TEST_CASE("prometheus: names that break Prometheus' rules or conventions are refused, naming the metric",
          "[prometheus]") {
  CHECK(is_metric_name("fedge_a:b_1"));
  CHECK_FALSE(is_metric_name(""));
  CHECK_FALSE(is_metric_name("1abc"));
  CHECK_FALSE(is_metric_name("fedge-tokens"));
  CHECK_FALSE(is_metric_name("fedge tokens"));
  CHECK_FALSE(is_metric_name("fédge"));
  CHECK(is_label_name("state"));
  CHECK_FALSE(is_label_name("__name__"));
  CHECK_FALSE(is_label_name("a:b"));
  CHECK_FALSE(is_label_name("0a"));

  TextWriter w;
  CHECK_THROWS_WITH(w.gauge("fedge-bad", "x", 1), Catch::Contains("'fedge-bad'") && Catch::Contains("metric name"));
  CHECK_THROWS_WITH(w.counter("fedge_rounds", "x", 1), Catch::Contains("ends in _total"));
  CHECK_THROWS_WITH(w.gauge("fedge_rounds_total", "x", 1), Catch::Contains("only a counter"));
  CHECK_THROWS_WITH(w.gauge("fedge_x", "x", {{{{"bad-label", "v"}}, 1}}), Catch::Contains("'bad-label'"));
  CHECK_THROWS_WITH(w.gauge("fedge_y", "x", {{{{"__reserved", "v"}}, 1}}), Catch::Contains("'__reserved'"));
  CHECK_THROWS_WITH(w.gauge("fedge_z", "x", {{{{"a", "1"}, {"a", "2"}}, 1}}), Catch::Contains("twice"));
  CHECK_THROWS_WITH(w.histogram("fedge_h", "x", {{{{"le", "1"}}, Histogram({1})}}), Catch::Contains("reserved"));
  w.gauge("fedge_once", "x", 1);
  CHECK_THROWS_WITH(w.gauge("fedge_once", "x", 2), Catch::Contains("written twice"));
}
