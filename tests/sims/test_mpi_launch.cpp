// How `fedge sim` tells that an MPI launcher started it: the launchers'
// variables, and a clear error for values no launcher sets.
#include "fedge/sims/mpi.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

using fedge::sims::mpi_launch_from_env;

namespace {

// Sets the launcher variables for one test and puts back what was there.
class LauncherEnv {
 public:
  LauncherEnv() {
    for (const char* name : kNames) {
      const char* value = std::getenv(name);
      saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
      ::unsetenv(name);
    }
  }
  ~LauncherEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name, value->c_str(), 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  void set(const char* name, const char* value) { ::setenv(name, value, 1); }

 private:
  static constexpr const char* kNames[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK",
                                           "PMIX_RANK"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

}  // namespace

TEST_CASE("no MPI launcher variables: not an MPI launch") {
  LauncherEnv env;
  CHECK_FALSE(mpi_launch_from_env());
}

TEST_CASE("OpenMPI, PMI-2 and PMIx launchers are recognised") {
  LauncherEnv env;
  SECTION("OpenMPI's mpirun") {
    env.set("OMPI_COMM_WORLD_SIZE", "3");
    env.set("OMPI_COMM_WORLD_RANK", "2");
    auto launch = mpi_launch_from_env();
    REQUIRE(launch);
    CHECK(launch->size == 3);
    CHECK(launch->rank == 2);
    CHECK(launch->variable == "OMPI_COMM_WORLD_SIZE");
  }
  SECTION("MPICH's Hydra or Slurm's PMI-2") {
    env.set("PMI_SIZE", "4");
    env.set("PMI_RANK", "0");
    auto launch = mpi_launch_from_env();
    REQUIRE(launch);
    CHECK(launch->size == 4);
    CHECK(launch->rank == 0);
  }
  SECTION("PMIx (srun --mpi=pmix): the rank only, the size from MPI") {
    env.set("PMIX_RANK", "1");
    auto launch = mpi_launch_from_env();
    REQUIRE(launch);
    CHECK(launch->size == 0);
    CHECK(launch->rank == 1);
  }
}

TEST_CASE("MPI launcher variables that no launcher sets are refused, naming the variable") {
  LauncherEnv env;
  SECTION("not a number") {
    env.set("OMPI_COMM_WORLD_SIZE", "three");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("OMPI_COMM_WORLD_SIZE") && Catch::Contains("three"));
  }
  SECTION("trailing garbage") {
    env.set("PMI_SIZE", "2x");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("PMI_SIZE"));
  }
  SECTION("a size of 0 or below") {
    env.set("OMPI_COMM_WORLD_SIZE", "0");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("OMPI_COMM_WORLD_SIZE") && Catch::Contains(">= 1"));
  }
  SECTION("a negative rank") {
    env.set("PMIX_RANK", "-1");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("PMIX_RANK"));
  }
  SECTION("too large for an int") {
    env.set("OMPI_COMM_WORLD_SIZE", "99999999999999999999");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("OMPI_COMM_WORLD_SIZE"));
  }
  SECTION("a rank outside the size") {
    env.set("OMPI_COMM_WORLD_SIZE", "2");
    env.set("OMPI_COMM_WORLD_RANK", "2");
    CHECK_THROWS_WITH(mpi_launch_from_env(), Catch::Contains("rank 2 of 2"));
  }
  SECTION("a hostile length is cut in the message") {
    const std::string huge(100000, '7');
    env.set("PMI_SIZE", (huge + "x").c_str());
    try {
      mpi_launch_from_env();
      FAIL("no error");
    } catch (const std::exception& e) {
      CHECK(std::string(e.what()).size() < 400);
    }
  }
}
