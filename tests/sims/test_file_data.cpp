// Your own data in the simulator ([data] source = "files"): the record files
// (JSONL, CSV, fortune), every bad record or setting named by file and line,
// and the split of a tiny two-site data set checked record by record.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <string>

#include "fedge/common/error.h"
#include "fedge/sims/file_data.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"
#include "fedge/training/data_files.h"
#include "test_util.h"

using namespace fedge::sims;
using fedge::training::LocatedRecord;
using fedge::training::parse_records;
using fedge::training::RecordFormat;

namespace {

namespace fs = std::filesystem;

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string error_of_records(const std::string& text, const std::string& name, RecordFormat format,
                             const std::string& key = "") {
  try {
    parse_records(text, name, format, key);
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error for " << name << ":\n" << text);
  return "";
}

std::vector<std::string> completions(const std::vector<fedge::training::Record>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.completion);
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Two sites: a.jsonl with six text records, b.csv with four.
struct TwoSites {
  fedge::testing::TempDir dir{"fedge_filedata_"};
  TwoSites() {
    write(dir.path / "a.jsonl", "{\"text\": \"a1\"}\n{\"text\": \"a2\"}\n\n{\"text\": \"a3\"}\n"
                                "{\"text\": \"a4\"}\n{\"text\": \"a5\"}\n{\"text\": \"a6\"}\n");
    write(dir.path / "b.csv", "id,text\n1,b1\n2,\"b2, quoted\"\n3,b3\n4,b4\n");
  }
  fs::path scenario(const std::string& data, const std::string& rest = "") const {
    write(dir.path / "s.toml", "seed = 7\nlevels = [6]\n[model]\nbase = \"tiny-random\"\nlora_rank = 2\n"
                               "targets = [\"q\"]\nseq_len = 32\n[nodes]\ncount = 2\n[partition]\nkind = \"by-site\"\n"
                               "[data]\nsource = \"files\"\n" + data + rest);
    return dir.path / "s.toml";
  }
};

std::string scenario_error(const TwoSites& t, const std::string& data, const std::string& rest = "") {
  try {
    load_scenario(t.scenario(data, rest));
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error for [data] " << data);
  return "";
}

std::string load_error(const Scenario& s) {
  try {
    split_file_sites(load_file_sites(s.data, s.scenario_seed), s.nodes, s.partition);
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error loading the sites");
  return "";
}

}  // namespace

TEST_CASE("data files: JSONL, CSV and fortune records with their lines") {
  auto j = parse_records("{\"text\": \"t\", \"source\": \"x\"}\n\n{\"prompt\": \"p\", \"completion\": \"c\", \"source\": \"y\"}\n",
                         "a.jsonl", RecordFormat::kJsonl, "source");
  REQUIRE(j.size() == 2);
  CHECK(j[0].record.completion == "t");
  CHECK(j[0].record.prompt.empty());
  CHECK(j[0].line == 1);
  CHECK(j[0].key == "x");
  CHECK(j[1].record.prompt == "p");
  CHECK(j[1].record.completion == "c");
  CHECK(j[1].line == 3);
  CHECK(j[1].key == "y");

  auto c = parse_records("site,prompt,completion\r\nn,\"Q, one\",A1\r\ns,Q2,\"say \"\"hi\"\"\"\r\n", "b.csv",
                         RecordFormat::kCsv, "site");
  REQUIRE(c.size() == 2);
  CHECK(c[0].record.prompt == "Q, one");
  CHECK(c[0].record.completion == "A1");
  CHECK(c[0].key == "n");
  CHECK(c[1].record.completion == "say \"hi\"");
  CHECK(c[1].line == 3);

  auto f = parse_records("First line\n\tsecond line\n%\n%\nOne more.\n\t\t-- Someone\n%\nLast, no final %\n", "science",
                         RecordFormat::kFortune);
  REQUIRE(f.size() == 3);
  CHECK(f[0].record.completion == "First line\n\tsecond line");
  CHECK(f[0].line == 1);
  CHECK(f[1].record.completion == "One more.\n\t\t-- Someone");
  CHECK(f[1].line == 5);
  CHECK(f[2].record.completion == "Last, no final %");
  CHECK(f[2].line == 8);

  CHECK(fedge::training::record_format_of("x/a.jsonl") == RecordFormat::kJsonl);
  CHECK(fedge::training::record_format_of("b.csv") == RecordFormat::kCsv);
  CHECK(fedge::training::record_format_of("/usr/share/games/fortunes/science") == RecordFormat::kFortune);
  CHECK_THROWS_WITH(fedge::training::record_format_of("c.txt"), Catch::Contains("c.txt") && Catch::Contains("'.txt'"));
}

TEST_CASE("bad data records are errors naming file and line") {
  using Catch::Contains;
  using Catch::StartsWith;
  CHECK_THAT(error_of_records("{\"text\": \"ok\"}\n{\"text\": \"no end\"\n", "a.jsonl", RecordFormat::kJsonl),
             StartsWith("a.jsonl:2: not valid JSON"));
  CHECK_THAT(error_of_records("{\"txt\": \"typo\"}\n", "a.jsonl", RecordFormat::kJsonl),
             StartsWith("a.jsonl:1: expected a 'text', 'prompt'/'completion' or 'messages' field"));
  CHECK_THAT(error_of_records("{\"prompt\": \"p\"}\n", "a.jsonl", RecordFormat::kJsonl),
             StartsWith("a.jsonl:1: a prompt record needs both 'prompt' and 'completion'"));
  CHECK_THAT(error_of_records("{\"text\": 5}\n", "a.jsonl", RecordFormat::kJsonl),
             StartsWith("a.jsonl:1: field 'text' must be a string"));
  CHECK_THAT(error_of_records("{\"text\": \"a\", \"source\": \"s\"}\n{\"text\": \"b\"}\n", "a.jsonl",
                              RecordFormat::kJsonl, "source"),
             StartsWith("a.jsonl:2: field 'source' (the site column) is missing"));
  CHECK_THAT(error_of_records("id,text\n1,a\n2,b,extra\n", "b.csv", RecordFormat::kCsv),
             StartsWith("b.csv:3: expected 2 fields (as the header), got 3"));
  CHECK_THAT(error_of_records("id,text\n1,\"open\n2,b\n", "b.csv", RecordFormat::kCsv),
             StartsWith("b.csv:2: unterminated quoted field 2"));
  CHECK_THAT(error_of_records("id,text\n1,\n", "b.csv", RecordFormat::kCsv),
             StartsWith("b.csv:2: column 'text' (field 2) is empty"));
  CHECK_THAT(error_of_records("id,body\n1,a\n", "b.csv", RecordFormat::kCsv),
             StartsWith("b.csv:1: the header needs a 'text' column, or 'prompt' and 'completion' columns; it has 'id', 'body'"));
  CHECK_THAT(error_of_records("prompt,x\nq,a\n", "b.csv", RecordFormat::kCsv),
             StartsWith("b.csv:1: the header has a 'prompt' column but no 'completion' column"));
  CHECK_THAT(error_of_records("text\na\n", "b.csv", RecordFormat::kCsv, "site"),
             StartsWith("b.csv:1: the header has no 'site' column (the site column)"));
  CHECK_THAT(error_of_records("text\n", "b.csv", RecordFormat::kCsv), StartsWith("b.csv: no records in the file (csv)"));
  for (auto format : {RecordFormat::kJsonl, RecordFormat::kCsv, RecordFormat::kFortune}) {
    CHECK_THAT(error_of_records("", "empty", format), StartsWith("empty: empty file (no records)"));
  }
  CHECK_THAT(error_of_records("%\n  \n%\n", "f", RecordFormat::kFortune), StartsWith("f: empty file") || StartsWith("f: no records"));
  CHECK_THAT(error_of_records("a\n%\n", "f", RecordFormat::kFortune, "site"), Contains("fortune file has no columns"));
  CHECK_THROWS_AS(fedge::training::read_records("/nonexistent/a.jsonl", RecordFormat::kJsonl), fedge::Error);
}

TEST_CASE("scenario data settings: files named by their key and line") {
  using Catch::Contains;
  TwoSites t;
  const std::string at = (t.dir.path / "s.toml").string();
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\", \"missing.csv\"]\n"),
             Catch::StartsWith(at + ":14:") && Contains("data.files") && Contains("missing.csv") && Contains("does not exist"));
  CHECK_THAT(scenario_error(t, "file = \"gone.jsonl\"\nsite_column = \"s\"\n"),
             Contains("data.file") && Contains("gone.jsonl"));
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\"]\nfile = \"b.csv\"\n"), Contains("either files"));
  CHECK_THAT(scenario_error(t, ""), Contains("data.source") && Contains("either files"));
  CHECK_THAT(scenario_error(t, "file = \"b.csv\"\n"), Contains("data.file") && Contains("site_column"));
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\"]\nsite_column = \"s\"\n"), Contains("data.site_column"));
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\"]\nsites = 3\n"), Contains("data.sites") && Contains("synthetic"));
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\", \"./a.jsonl\"]\n"), Contains("twice"));
  write(t.dir.path / "c.txt", "x\n");
  CHECK_THAT(scenario_error(t, "files = [\"c.txt\"]\n"), Contains("data.files") && Contains("'.txt'"));
  CHECK_THAT(scenario_error(t, "files = [\"a.jsonl\"]\nformat = \"xml\"\n"), Contains("data.format"));
  // The synthetic generator refuses the file keys.
  fedge::testing::TempDir other;
  write(other.path / "s.toml", "[data]\nfiles = [\"a.jsonl\"]\n");
  CHECK_THROWS_WITH(load_scenario(other.path / "s.toml"), Contains("data.files") && Contains("source = \"files\""));

  auto s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\"]\neval_fraction = 0.25\n"));
  CHECK(s.data.from_files());
  REQUIRE(s.data.files.size() == 2);
  CHECK(s.data.files[0] == t.dir.path / "a.jsonl");  // relative to the scenario file
  CHECK(s.data.eval_fraction == 0.25);
}

TEST_CASE("sites too small for the split are errors naming the site") {
  using Catch::Contains;
  TwoSites t;
  write(t.dir.path / "one.jsonl", "{\"text\": \"alone\"}\n");
  auto s = load_scenario(t.scenario("files = [\"a.jsonl\", \"one.jsonl\"]\n"));
  CHECK_THAT(load_error(s), Contains("site 'one.jsonl'") && Contains("has 1 record(s)"));
  // b.csv keeps 3 of its 4 records to train on; node 1 needs 4.
  s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\"]\neval_fraction = 0.25\n"));
  s.partition.min_per_node = 4;
  CHECK_THAT(load_error(s), Contains("by-site split: node 1 would hold 3 training record(s) from 'b.csv'") &&
                                Contains("min_per_node = 4"));
  s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\"]\neval_fraction = 0.99\n"));
  CHECK_THAT(load_error(s), Contains("site 'a.jsonl'") && Contains("holds out all 6"));
}

TEST_CASE("a tiny two-site data set splits exactly: by file and by site column alike") {
  TwoSites t;
  auto s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\"]\neval_fraction = 0.34\n"));
  auto sites = load_file_sites(s.data, s.scenario_seed);
  REQUIRE(sites.size() == 2);
  CHECK(sites[0].name == "a.jsonl");
  CHECK(sites[1].name == "b.csv");
  // round(0.34 * 6) = 2 and round(0.34 * 4) = 1 held out, by a seeded shuffle.
  // (Which ones is pinned here: a change of the shuffle or its seeds shows.)
  CHECK(sorted(completions(sites[0].eval)) == std::vector<std::string>{"a3", "a4"});
  CHECK(sorted(completions(sites[0].train)) == std::vector<std::string>{"a1", "a2", "a5", "a6"});
  CHECK(completions(sites[1].eval) == std::vector<std::string>{"b4"});
  CHECK(sorted(completions(sites[1].train)) == std::vector<std::string>{"b1", "b2, quoted", "b3"});

  // by-site: node k holds site k, training and held-out alike.
  auto nodes = split_file_sites(sites, s.nodes, s.partition);
  REQUIRE(nodes.size() == 2);
  CHECK(sorted(completions(nodes[0].train)) == sorted(completions(sites[0].train)));
  CHECK(sorted(completions(nodes[0].eval)) == std::vector<std::string>{"a3", "a4"});
  CHECK(sorted(completions(nodes[1].train)) == sorted(completions(sites[1].train)));
  CHECK(completions(nodes[1].eval) == std::vector<std::string>{"b4"});

  // iid over the same sites: every record once, and each node a share of both sites.
  s.partition.kind = PartitionKind::kIid;
  auto iid = split_file_sites(sites, s.nodes, s.partition);
  std::vector<std::string> all;
  for (const auto& n : iid) {
    auto c = completions(n.train);
    all.insert(all.end(), c.begin(), c.end());
    CHECK(std::count_if(c.begin(), c.end(), [](const std::string& x) { return x[0] == 'a'; }) == 2);
  }
  CHECK(sorted(all) == std::vector<std::string>{"a1", "a2", "a5", "a6", "b1", "b2, quoted", "b3"});

  // The same records in one file with a site column give the same sites and split.
  write(t.dir.path / "all.csv", "source,text\na.jsonl,a1\na.jsonl,a2\nb.csv,b1\na.jsonl,a3\na.jsonl,a4\n"
                                "b.csv,\"b2, quoted\"\na.jsonl,a5\nb.csv,b3\na.jsonl,a6\nb.csv,b4\n");
  auto one = load_scenario(t.scenario("file = \"all.csv\"\nsite_column = \"source\"\neval_fraction = 0.34\n"));
  auto by_column = load_file_sites(one.data, one.scenario_seed);
  REQUIRE(by_column.size() == 2);
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(by_column[k].name == sites[k].name);
    CHECK(completions(by_column[k].train) == completions(sites[k].train));
    CHECK(completions(by_column[k].eval) == completions(sites[k].eval));
  }
}

TEST_CASE("max_records_per_site keeps a seeded sample of each site") {
  TwoSites t;
  auto s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\"]\nmax_records_per_site = 4\neval_fraction = 0.25\n"));
  auto sites = load_file_sites(s.data, s.scenario_seed);
  CHECK(sites[0].train.size() + sites[0].eval.size() == 4);
  CHECK(sites[0].eval.size() == 1);
  CHECK(sites[1].train.size() + sites[1].eval.size() == 4);  // b.csv has 4: all kept
  auto again = load_file_sites(s.data, s.scenario_seed);
  CHECK(completions(again[0].train) == completions(sites[0].train));
}

TEST_CASE("fedge sim on plain-text files reports perplexity and no accuracy") {
  TwoSites t;
  write(t.dir.path / "quotes", "Be kind.\n%\nKnow thyself.\n%\nNothing in excess.\n%\nMeasure twice.\n");
  auto s = load_scenario(t.scenario("files = [\"a.jsonl\", \"b.csv\", \"quotes\"]\neval_fraction = 0.25\n",
                                    "[training]\ncentral_steps = 2\nlocal_only_steps = 2\nbatch_size = 2\n[serving]\nrequests_per_node = 2\n"
                                    "max_new_tokens = 2\n"));
  s.nodes = 3;
  s.levels = {3, 6};
  RunOptions o;
  o.threads = 1;
  o.progress = [](const std::string&) {};
  auto r = run_scenario(s, o);
  REQUIRE(r.levels.size() == 2);
  for (const auto& l : r.levels) {
    CHECK_FALSE(l.mean_accuracy.has_value());
    CHECK(std::isfinite(l.mean_perplexity));
    CHECK(l.mean_perplexity > 1.0);
    CHECK(l.ttft_p50_ms > 0);  // the held-out texts served as prompts
  }
  const std::string table = summary_markdown(r);
  CHECK(table.find("accuracy") == std::string::npos);
  CHECK(table.find("| level | perplexity | TTFT p50/p95 ms |") != std::string::npos);
  CHECK(table.find("|---|---|---|---|---|---|---|---|---|---|---|---|\n") != std::string::npos);  // 12 columns
}
