#!/usr/bin/env bash
# Runs a simulation scenario twice, in one process and under
# `mpirun --oversubscribe -n 3` (rank 0 the coordinator process, ranks 1-2
# node hosts), and fails unless both metrics.csv are byte-identical
# (docs/SIMULATOR.md, "Across machines"). Both runs use one libtorch thread
# per process: float sums depend on the thread count.
# Usage: scripts/sim-mpi-check.sh [SCENARIO]   (default: the quickstart)
#   FEDGE_BUILD_DIR=build   where fedge was built
# Prints a skip line and exits 0 when fedge was built without MPI.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${FEDGE_BUILD_DIR:-build}"
scenario="${1:-sims/scenarios/quickstart.toml}"
if ! grep -q '^FEDGE_WITH_MPI:BOOL=ON' "$build_dir/CMakeCache.txt" 2>/dev/null; then
  echo "sim-mpi-check: skipped: $build_dir was configured without MPI (FEDGE_WITH_MPI=OFF or no OpenMPI found)"
  exit 0
fi
# CI containers run as root and often forbid process_vm_readv (OpenMPI's
# single-copy shared memory); neither changes the results.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fedge="$build_dir/bin/fedge"
start=$SECONDS
"$fedge" --threads 1 sim "$scenario" --out "$out/alone" >"$out/alone.log" 2>&1 || { tail -40 "$out/alone.log"; exit 1; }
alone_s=$((SECONDS - start))
start=$SECONDS
mpirun --oversubscribe -n 3 "$fedge" --threads 1 sim "$scenario" --out "$out/mpi" >"$out/mpi.log" 2>&1 ||
  { tail -40 "$out/mpi.log"; exit 1; }
mpi_s=$((SECONDS - start))
if ! cmp "$out/alone/metrics.csv" "$out/mpi/metrics.csv"; then
  echo "sim-mpi-check: $scenario: metrics.csv differs between one process and mpirun -n 3" >&2
  diff "$out/alone/metrics.csv" "$out/mpi/metrics.csv" | head -20 >&2
  exit 1
fi
echo "sim-mpi-check: $scenario: metrics.csv identical in one process (${alone_s} s) and under mpirun -n 3 (${mpi_s} s)"
