#!/usr/bin/env bash
# Installs every Debian 12 package fedge needs, and nothing when all are there.
# Usage: scripts/install-deps.sh [--bench]   (--bench adds python3-torch, the
# reference the benchmarks compare against)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  ccache                                  # the portable and later builds reuse the main build's objects
  libtorch-dev libopenblas0-openmp        # without OpenBLAS libtorch falls back to ~14x slower BLAS
  libeigen3-dev libzmq3-dev cppzmq-dev libcapnp-dev capnproto
  libspdlog-dev catch2 libsodium-dev libssl-dev libtomlplusplus-dev libcli11-dev
  nlohmann-json3-dev libsqlite3-dev libpcre2-dev libcpp-httplib-dev
  gnuplot-nox
  openmpi-bin libopenmpi-dev              # `mpirun -n H+1 fedge sim` (optional: CMake FEDGE_WITH_MPI)
  curl                                    # scripts/federation-demo.sh asks a node's API
  fortunes                                # real text for fedge sim: sims/scenarios/fortunes-by-site.toml
  python3-prometheus-client               # the reference parser the /metrics tests read the text with
  nodejs                                  # the npm test clients: @huggingface/jinja (chat templates), openai
  chromium                                # the browser tests of the pages (scripts/test-browser.sh)
  clang libclang-rt-14-dev libomp-14-dev  # scripts/fuzz.sh: libFuzzer, ASan, UBSan, clang's OpenMP
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch)
fi
# npm runs the pinned npm test clients (@huggingface/jinja for the chat
# templates, the official openai client: scripts/install-openai-client.sh).
# A NodeSource nodejs brings its own npm, which Debian's npm package would
# conflict with; Debian's nodejs needs the npm package.
command -v npm >/dev/null || packages+=(npm)

# The reference Jinja renderer the chat template test compares with, pinned in
# tests/chat_templates/package.json and package-lock.json, installed next to
# them (not globally). Needs the npm registry; without it the test's own
# `npm ci` tries again.
install_chat_template_reference() {
  local dir="tests/chat_templates"
  [[ -f "$dir/node_modules/@huggingface/jinja/package.json" ]] && return 0
  command -v npm >/dev/null || return 0
  echo "install-deps: npm ci in $dir (@huggingface/jinja, the chat template reference)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "install-deps: npm ci in $dir failed; the chat template test will try again" >&2
}
cd "$(dirname "$0")/.."

# Installed for this machine's architecture (or architecture-free): a plain
# `dpkg-query -W PACKAGE` also matches the arm64 build that
# scripts/build-aarch64.sh installs beside it (multiarch), which this build
# cannot use.
arch="$(dpkg --print-architecture)"
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Abbrev} ${Architecture}\n' "$package" 2>/dev/null | grep -qE "^ii +($arch|all)$"; then
    missing+=("$package")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  install_chat_template_reference
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_chat_template_reference
