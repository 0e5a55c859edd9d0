// A synthetic multi-site data set that behaves like real multi-site data:
// daily oil-well production logs (date, well, liquid, gas and water volumes)
// at N sites. Sites share the task (the same quantities, the same status rule
// shape) but differ in their own ways: well names, value ranges, water-cut
// thresholds, and how their reports are phrased. With little data per site,
// pooling helps and local-only training overfits. A "public" corpus of the same
// domain, phrased generically, serves to pretrain the base model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "fedge/training/records.h"

namespace fedge::training {

struct SynthOptions {
  int sites = 8;
  int days = 12;               // days of production logged per site: little data
  int wells_per_site = 3;
  double eval_fraction = 0.5;  // the last days of each site are held out
  int public_records = 6000;   // lines of the public pretraining corpus
  std::uint64_t seed = 0;
};

struct ProductionRow {
  std::string date;  // YYYY-MM-DD
  std::string well;
  int liquid_bbl = 0;
  int gas_mcf = 0;
  int water_bbl = 0;
};

struct SiteData {
  std::string name;            // "site_03"
  std::string well_prefix;     // "KX"
  int phrasing = 0;            // which of the site phrasings its reports use
  int water_cut_threshold = 0; // percent; at or above it a well is "high water"
  std::vector<ProductionRow> rows;        // all days, in date order
  std::vector<Record> train_text, eval_text;            // reports
  std::vector<Record> train_instruct, eval_instruct;    // "status?" questions
};

struct SynthDataset {
  SynthOptions options;
  std::vector<SiteData> sites;
  std::vector<Record> public_corpus;
};

SynthDataset make_synth_dataset(const SynthOptions& options);

// Writes DIR/manifest.json, DIR/public/corpus.jsonl and per site
// DIR/site_XX/{production.csv, train.jsonl, eval.jsonl, instruct_train.jsonl,
// instruct_eval.jsonl}.
void write_synth_dataset(const SynthDataset& dataset, const std::filesystem::path& dir);

// The CSV template that renders production.csv rows as the public corpus does.
std::string production_csv_template();

}  // namespace fedge::training
