#include "fedge/training/synth_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"

namespace fedge::training {
namespace {

// Sites share one report format (the task) with small site-specific twists in
// wording, order and units; the public corpus words the same facts in other,
// generic ways. Placeholders: {date} {well} {l} {g} {w} {wc} {status}.
constexpr const char* kSitePhrasings[] = {
    "{date} {well}: liquid {l} bbl, gas {g} mcf, water {w} bbl, water cut {wc}%, status {status}.",
    "{date} {well}: liquid {l} bbl; gas {g} mcf; water {w} bbl; water cut {wc}%; status {status}.",
    "{date} {well}: liquid {l} bbl, gas {g} mcf, water {w} bbl, WC {wc}%, status {status}.",
    "{date} well {well}: liquid {l} bbl, gas {g} mcf, water {w} bbl, water cut {wc}%, flag {status}.",
    "{date} {well}: liquid {l} bbl, water {w} bbl, gas {g} mcf, water cut {wc}%, status {status}.",
    "{date} {well}: liquid {l} barrels, gas {g} mcf, water {w} barrels, water cut {wc}%, status {status}.",
    "{date} {well} - liquid {l} bbl, gas {g} mcf, water {w} bbl, water cut {wc}%, status {status}.",
    "{date} {well}: liquid {l} bbl, gas {g} mcf, water {w} bbl, cut {wc}%, status {status}.",
};
constexpr int kSitePhrasingCount = sizeof(kSitePhrasings) / sizeof(kSitePhrasings[0]);

constexpr const char* kPublicPhrasings[] = {
    "Date {date}. Well {well}. Liquid {l} bbl. Gas {g} mcf. Water {w} bbl. Water cut {wc}%. Status {status}.",
    "{well} reported {l} bbl liquid, {g} mcf gas and {w} bbl water on {date}; water cut {wc}%, status {status}.",
    "{date} {well} liquid {l} gas {g} water {w} cut {wc}% {status}",
};

constexpr int kPublicThreshold = 50;

// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
std::string date_string(int days_since_epoch) {
  int z = days_since_epoch + 719468;
  int era = (z >= 0 ? z : z - 146096) / 146097;
  int doe = z - era * 146097;
  int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int mp = (5 * doy + 2) / 153;
  int day = doy - (153 * mp + 2) / 5 + 1;
  int month = mp < 10 ? mp + 3 : mp - 9;
  int year = yoe + era * 400 + (month <= 2);
  char text[16];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02d", year, month, day);
  return text;
}

constexpr int kFirstDay = 19723;  // 2024-01-01

int water_cut_percent(const ProductionRow& row) {
  return row.liquid_bbl > 0 ? static_cast<int>(std::lround(100.0 * row.water_bbl / row.liquid_bbl)) : 0;
}

std::string status_of(const ProductionRow& row, int threshold) {
  return water_cut_percent(row) >= threshold ? "high water" : "normal";
}

std::string fill(std::string_view phrasing, const ProductionRow& row, int threshold) {
  return render_template(phrasing,
                         {{"date", row.date},
                          {"well", row.well},
                          {"l", std::to_string(row.liquid_bbl)},
                          {"g", std::to_string(row.gas_mcf)},
                          {"w", std::to_string(row.water_bbl)},
                          {"wc", std::to_string(water_cut_percent(row))},
                          {"status", status_of(row, threshold)}},
                         "synthetic phrasing");
}

Record status_question(const ProductionRow& row, int threshold) {
  return record_from_chat({{"user", row.well + " " + row.date + ": liquid " + std::to_string(row.liquid_bbl) +
                                        " bbl, water " + std::to_string(row.water_bbl) + " bbl. Status?"},
                           {"assistant", status_of(row, threshold)}});
}

std::string well_prefix(Rng& rng) {
  std::string prefix(2, 'A');
  for (char& c : prefix) c = static_cast<char>('A' + rng.below(26));
  return prefix;
}

// Daily rows for `wells` wells over `days` days: each well declines from its
// own rate with noise while its water cut creeps up; `scale` is the site's rate.
std::vector<ProductionRow> simulate_wells(Rng& rng, const std::string& prefix, int wells, int days, double scale,
                                          double gas_oil_ratio, int first_day) {
  struct Well {
    std::string name;
    double rate, decline, cut, cut_drift;
  };
  std::vector<Well> state;
  for (int w = 0; w < wells; ++w) {
    char name[16];
    std::snprintf(name, sizeof(name), "%s-%02d", prefix.c_str(), static_cast<int>(1 + rng.below(60)));
    state.push_back({name, scale * (0.6 + 0.8 * rng.uniform()), 0.001 + 0.005 * rng.uniform(),
                     0.1 + 0.5 * rng.uniform(), 0.003 * rng.uniform()});
  }
  std::vector<ProductionRow> rows;
  for (int d = 0; d < days; ++d) {
    for (auto& well : state) {
      double liquid = well.rate * std::exp(-well.decline * d) * (1.0 + 0.08 * rng.normal());
      double cut = std::clamp(well.cut + well.cut_drift * d + 0.03 * rng.normal(), 0.0, 0.98);
      ProductionRow row;
      row.date = date_string(first_day + d);
      row.well = well.name;
      row.liquid_bbl = std::max(1, static_cast<int>(std::lround(liquid)));
      row.water_bbl = static_cast<int>(std::lround(row.liquid_bbl * cut));
      row.gas_mcf = static_cast<int>(std::lround((row.liquid_bbl - row.water_bbl) * gas_oil_ratio));
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

SiteData make_site(const SynthOptions& options, int index) {
  Rng rng(options.seed, "synth/site/" + std::to_string(index));
  SiteData site;
  char name[16];
  std::snprintf(name, sizeof(name), "site_%02d", index);
  site.name = name;
  site.well_prefix = well_prefix(rng);
  site.phrasing = index % kSitePhrasingCount;
  site.water_cut_threshold = 35 + static_cast<int>(rng.below(31));
  double scale = 80.0 + 820.0 * rng.uniform();
  double gas_oil_ratio = 0.8 + 2.2 * rng.uniform();
  site.rows = simulate_wells(rng, site.well_prefix, options.wells_per_site, options.days, scale, gas_oil_ratio,
                             kFirstDay + static_cast<int>(rng.below(200)));
  // Time split: the last days of the site are its held-out evaluation set.
  int eval_days = std::max(1, static_cast<int>(std::lround(options.days * options.eval_fraction)));
  std::size_t first_eval = static_cast<std::size_t>(options.days - eval_days) * options.wells_per_site;
  for (std::size_t i = 0; i < site.rows.size(); ++i) {
    const auto& row = site.rows[i];
    Record text{"", fill(kSitePhrasings[site.phrasing], row, site.water_cut_threshold)};
    Record question = status_question(row, site.water_cut_threshold);
    bool eval = i >= first_eval;
    (eval ? site.eval_text : site.train_text).push_back(std::move(text));
    (eval ? site.eval_instruct : site.train_instruct).push_back(std::move(question));
  }
  return site;
}

std::vector<Record> make_public_corpus(const SynthOptions& options) {
  Rng rng(options.seed, "synth/public");
  std::vector<Record> corpus;
  const int wells = 40;
  int days = std::max(1, options.public_records / wells);
  auto rows = simulate_wells(rng, "PB", wells, days, 300.0, 1.5, kFirstDay - 400);
  for (std::size_t i = 0; i < rows.size() && static_cast<int>(corpus.size()) < options.public_records; ++i) {
    const char* phrasing = kPublicPhrasings[rng.below(std::size(kPublicPhrasings))];
    corpus.push_back({"", fill(phrasing, rows[i], kPublicThreshold)});
    // One in four rows also as a status question, so the base knows the format.
    if (rng.below(4) == 0) corpus.push_back(status_question(rows[i], kPublicThreshold));
  }
  return corpus;
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw Error(ErrorKind::kIo, path.string() + ": cannot write (check permissions and disk space)");
}

void write_fresh_jsonl(const std::filesystem::path& path, const std::vector<Record>& records) {
  std::filesystem::remove(path);
  write_jsonl(path, records);
}

}  // namespace

std::string production_csv_template() {
  return "Date {date}. Well {well}. Liquid {liquid_bbl} bbl. Gas {gas_mcf} mcf. Water {water_bbl} bbl.";
}

SynthDataset make_synth_dataset(const SynthOptions& options) {
  if (options.sites < 1 || options.sites > 100000) {
    throw Error(ErrorKind::kInvalidInput, "synthetic data: --sites must be in [1, 100000]");
  }
  if (options.days < 2 || options.wells_per_site < 1 || options.eval_fraction <= 0 || options.eval_fraction >= 1) {
    throw Error(ErrorKind::kInvalidInput,
                "synthetic data: need days >= 2, wells_per_site >= 1 and eval_fraction in (0, 1)");
  }
  SynthDataset dataset;
  dataset.options = options;
  for (int s = 0; s < options.sites; ++s) dataset.sites.push_back(make_site(options, s));
  dataset.public_corpus = make_public_corpus(options);
  return dataset;
}

void write_synth_dataset(const SynthDataset& dataset, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir / "public");
  write_fresh_jsonl(dir / "public" / "corpus.jsonl", dataset.public_corpus);
  nlohmann::json manifest = {{"generator", "fedge data synth"},
                             {"seed", dataset.options.seed},
                             {"days", dataset.options.days},
                             {"wells_per_site", dataset.options.wells_per_site},
                             {"eval_fraction", dataset.options.eval_fraction},
                             {"public_records", dataset.public_corpus.size()},
                             {"sites", nlohmann::json::array()}};
  for (const auto& site : dataset.sites) {
    auto site_dir = dir / site.name;
    std::filesystem::create_directories(site_dir);
    std::string csv = "date,well,liquid_bbl,gas_mcf,water_bbl\n";
    for (const auto& row : site.rows) {
      csv += row.date + "," + row.well + "," + std::to_string(row.liquid_bbl) + "," + std::to_string(row.gas_mcf) +
             "," + std::to_string(row.water_bbl) + "\n";
    }
    write_text_file(site_dir / "production.csv", csv);
    write_fresh_jsonl(site_dir / "train.jsonl", site.train_text);
    write_fresh_jsonl(site_dir / "eval.jsonl", site.eval_text);
    write_fresh_jsonl(site_dir / "instruct_train.jsonl", site.train_instruct);
    write_fresh_jsonl(site_dir / "instruct_eval.jsonl", site.eval_instruct);
    manifest["sites"].push_back({{"name", site.name},
                                 {"well_prefix", site.well_prefix},
                                 {"phrasing", site.phrasing},
                                 {"water_cut_threshold", site.water_cut_threshold},
                                 {"train_records", site.train_text.size()},
                                 {"eval_records", site.eval_text.size()}});
  }
  write_text_file(dir / "manifest.json", manifest.dump(2) + "\n");
}

}  // namespace fedge::training
