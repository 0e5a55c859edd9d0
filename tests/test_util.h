// Small helpers shared by the Catch2 tests.
#pragma once

#include <cstddef>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace fedge::testing {

// A fresh directory under the system temp folder, removed with everything in it
// when the object goes away; random names keep parallel test processes apart.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "fedge_test_") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

template <typename T>
std::span<const std::byte> as_bytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace fedge::testing
