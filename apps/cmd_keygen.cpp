// `fedge keygen --out PREFIX`: writes a CurveZMQ key pair, PREFIX.key (secret,
// mode 0600) and PREFIX.pub (public, for the coordinator's allow-list).
// `--signing` also writes the node's long-term Ed25519 key for malicious-mode
// secure aggregation: PREFIX.sign (secret) and PREFIX.sign.pub (for the roster).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "fedge/privacy/crypto.h"
#include "fedge/protocol/keys.h"

namespace fedge::apps {

void add_keygen_command(CLI::App& app, const GlobalOptions&, CommandBody& chosen) {
  struct Options {
    std::string out;
    bool force = false;
    bool signing = false;
  };
  auto options = std::make_shared<Options>();
  auto* keygen = app.add_subcommand(
      "keygen", "Write a CurveZMQ key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub (public, Z85)");
  keygen->add_option("--out", options->out, "path prefix of the two files, e.g. keys/node1")->required();
  keygen->add_flag("--force", options->force, "replace existing key files");
  keygen->add_flag("--signing", options->signing,
                   "also write an Ed25519 signing key (PREFIX.sign, PREFIX.sign.pub) for secagg.mode = \"malicious\"");
  keygen->callback([&chosen, options] {
    chosen = [options] {
      const auto pair = protocol::generate_curve_keypair();
      protocol::write_key_files(options->out, pair, options->force);
      std::printf("wrote %s.key (secret) and %s.pub\npublic key: %s\n", options->out.c_str(), options->out.c_str(),
                  pair.public_z85.c_str());
      if (options->signing) {
        const auto signing = privacy::generate_signing_keypair();
        protocol::write_signing_key_files(options->out, signing.seed, signing.public_key, options->force);
        std::printf("wrote %s.sign (secret) and %s.sign.pub\nsigning public key (for the roster): %s\n",
                    options->out.c_str(), options->out.c_str(), protocol::key_to_z85(signing.public_key).c_str());
      }
      return 0;
    };
  });
}

}  // namespace fedge::apps
