#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "fedge/common/error.h"
#include "fedge/training/records.h"
#include "fedge/training/synth_data.h"

using namespace fedge::training;

TEST_CASE("synthetic data is reproducible from its seed", "[synth]") {
  SynthOptions options;
  options.sites = 3;
  options.days = 10;
  options.public_records = 100;
  options.seed = 42;
  auto a = make_synth_dataset(options);
  auto b = make_synth_dataset(options);
  REQUIRE(a.sites.size() == 3);
  for (std::size_t s = 0; s < a.sites.size(); ++s) {
    REQUIRE(a.sites[s].train_text.size() == b.sites[s].train_text.size());
    for (std::size_t i = 0; i < a.sites[s].train_text.size(); ++i) {
      CHECK(a.sites[s].train_text[i].completion == b.sites[s].train_text[i].completion);
    }
  }
  options.seed = 43;
  auto c = make_synth_dataset(options);
  CHECK(c.sites[0].train_text[0].completion != a.sites[0].train_text[0].completion);
}

TEST_CASE("sites share the task but differ in names, thresholds and phrasing", "[synth]") {
  SynthOptions options;
  options.sites = 8;
  options.days = 20;
  options.eval_fraction = 0.25;
  options.public_records = 200;
  auto data = make_synth_dataset(options);
  std::set<int> phrasings;
  std::set<std::string> prefixes;
  for (const auto& site : data.sites) {
    phrasings.insert(site.phrasing);
    prefixes.insert(site.well_prefix);
    CHECK(site.water_cut_threshold >= 35);
    CHECK(site.water_cut_threshold <= 65);
    // 20 days, 25% held out -> 15 train days and 5 eval days of 3 wells.
    CHECK(site.train_text.size() == 45);
    CHECK(site.eval_text.size() == 15);
    CHECK(site.train_instruct.size() == 45);
    for (const auto& row : site.rows) {
      CHECK(row.water_bbl <= row.liquid_bbl);
      CHECK(row.well.rfind(site.well_prefix + "-", 0) == 0);
    }
    // Every question is answered by the site's own threshold rule.
    for (std::size_t i = 0; i < site.train_instruct.size(); ++i) {
      const auto& row = site.rows[i];
      int cut = static_cast<int>(std::lround(100.0 * row.water_bbl / row.liquid_bbl));
      CHECK(site.train_instruct[i].completion == (cut >= site.water_cut_threshold ? "high water" : "normal"));
      CHECK(site.train_instruct[i].prompt.find(row.well) != std::string::npos);
    }
  }
  CHECK(phrasings.size() == 8);
  CHECK(prefixes.size() >= 7);
  CHECK(data.public_corpus.size() >= 200);
}

TEST_CASE("synthetic data set writes files that the readers accept", "[synth]") {
  SynthOptions options;
  options.sites = 2;
  options.days = 8;
  options.public_records = 50;
  auto data = make_synth_dataset(options);
  auto dir = std::filesystem::temp_directory_path() / "fedge_test_synth";
  std::filesystem::remove_all(dir);
  write_synth_dataset(data, dir);
  CHECK(std::filesystem::exists(dir / "manifest.json"));
  auto train = read_jsonl(dir / "site_01" / "train.jsonl");
  REQUIRE(train.size() == data.sites[1].train_text.size());
  CHECK(train[0].completion == data.sites[1].train_text[0].completion);
  auto questions = read_jsonl(dir / "site_00" / "instruct_eval.jsonl");
  CHECK(questions.size() == data.sites[0].eval_instruct.size());
  CHECK(questions[0].is_instruction());
  auto rows = read_csv(dir / "site_00" / "production.csv", production_csv_template());
  CHECK(rows.size() == data.sites[0].rows.size());
  CHECK(rows[0].completion.find("Well " + data.sites[0].rows[0].well) != std::string::npos);
  CHECK(read_jsonl(dir / "public" / "corpus.jsonl").size() == data.public_corpus.size());
  std::filesystem::remove_all(dir);
}

TEST_CASE("synthetic data rejects impossible options", "[synth]") {
  SynthOptions options;
  options.sites = 0;
  CHECK_THROWS_AS(make_synth_dataset(options), fedge::Error);
  options.sites = 2;
  options.eval_fraction = 1.0;
  CHECK_THROWS_AS(make_synth_dataset(options), fedge::Error);
}
