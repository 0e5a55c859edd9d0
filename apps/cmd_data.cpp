// `fedge data synth`: writes the synthetic multi-site data set.
#include <cstdio>
#include <memory>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedge/training/synth_data.h"

namespace fedge::apps {

void add_data_command(CLI::App& app, const GlobalOptions&, CommandBody& chosen) {
  auto* data = app.add_subcommand("data", "Make or inspect data sets");
  data->require_subcommand(1);
  auto options = std::make_shared<training::SynthOptions>();
  auto out = std::make_shared<std::string>();
  auto* synth = data->add_subcommand(
      "synth", "Write synthetic multi-site oil-well production data (CSV, text and instruction JSONL per site) "
               "plus a public corpus of the same domain");
  synth->add_option("--out", *out, "output folder")->required();
  synth->add_option("--sites", options->sites, "number of sites")->check(CLI::Range(1, 100000));
  synth->add_option("--days", options->days, "days of production per site")->check(CLI::Range(2, 100000));
  synth->add_option("--wells", options->wells_per_site, "wells per site")->check(CLI::Range(1, 1000));
  synth->add_option("--eval-fraction", options->eval_fraction, "share of each site's last days held out")
      ->check(CLI::Range(0.01, 0.99));
  synth->add_option("--public-records", options->public_records, "records in the public corpus")
      ->check(CLI::Range(0, 10000000));
  synth->add_option("--seed", options->seed, "random seed");
  synth->callback([&chosen, options, out] {
    chosen = [options, out] {
      auto dataset = training::make_synth_dataset(*options);
      training::write_synth_dataset(dataset, *out);
      std::size_t train = 0, eval = 0;
      for (const auto& site : dataset.sites) {
        train += site.train_text.size();
        eval += site.eval_text.size();
      }
      std::printf("wrote %zu sites (%zu train, %zu eval records) and a public corpus of %zu records to %s\n",
                  dataset.sites.size(), train, eval, dataset.public_corpus.size(), out->c_str());
      return 0;
    };
  });
}

}  // namespace fedge::apps
