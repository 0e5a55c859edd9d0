// Shared helpers for the tokenizer tests: the hand-made fixtures under
// tests/tokenizer/data and fresh temporary directories.
#pragma once

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/tokenizer.h"

namespace fixtures {

using fedge::inference::TokenId;
using fedge::inference::Tokenizer;
using Json = nlohmann::ordered_json;

inline std::filesystem::path data_dir() {
  return std::filesystem::path(FEDGE_SOURCE_DIR) / "tests" / "tokenizer" / "data";
}

inline std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string text(const std::string& name) { return read(data_dir() / name); }
inline Json json(const std::string& name) { return Json::parse(text(name)); }
inline Tokenizer load(const char* name) { return Tokenizer::from_json(text(name), name); }
inline Tokenizer load(const Json& j) { return Tokenizer::from_json(j.dump(), "test.json"); }

inline void write(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

// A fresh directory under the system temp dir, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("fedge_tok_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace fixtures
