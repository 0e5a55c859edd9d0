// A simulation under an MPI launcher: `mpirun -n H+1 fedge sim SCENARIO --out DIR`
// (or `srun`) runs rank 0 as the coordinator process and ranks 1..H as node
// hosts, with no addresses to pass (docs/SIMULATOR.md, "Across machines").
// fedge built without MPI (CMake FEDGE_WITH_MPI=OFF) still has these
// functions: mpi_built() is false and MpiSession refuses to start.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace fedge::sims {

// Whether this fedge was built with MPI (CMake option FEDGE_WITH_MPI).
bool mpi_built();

// What the launcher's environment says about this process: set by OpenMPI's
// mpirun (OMPI_COMM_WORLD_SIZE/RANK), MPICH's Hydra and Slurm's PMI-2
// (PMI_SIZE/RANK) and PMIx launchers such as `srun --mpi=pmix` (PMIX_RANK;
// their size comes from MPI itself, so `size` is then 0). Nothing when no
// launcher started this process. A value that is not a number in range is an
// Error(kInvalidInput) naming the variable.
struct MpiLaunch {
  int rank = 0;
  int size = 0;          // 0: unknown until MPI starts
  std::string variable;  // the variable that told, for messages
};
std::optional<MpiLaunch> mpi_launch_from_env();

// MPI for the life of this object: MPI_Init_thread (only the main thread
// calls MPI) and MPI_Finalize. One per process; throws Error(kInvalidInput)
// when fedge was built without MPI.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // This process's host name as MPI sees it.
  std::string processor_name() const;
  // Ends every rank of the job with `code` (MPI_Abort): the launcher reports
  // which rank aborted. For a run that failed; MPI_Finalize would wait for
  // ranks that will never get there.
  [[noreturn]] void abort(int code);

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace fedge::sims
