// Whole-file I/O for model files: a read-only memory map (safetensors and
// GGUF weights are read in place: the page cache is the only copy) and an
// atomic, durable write (temporary file, fsync, rename, fsync of the
// directory), so a reader never sees half a file and a written file survives
// power loss.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedge {

class MappedFile {
 public:
  // Throws Error(kNotFound) for a missing file, Error(kInvalidInput) for one
  // that is not a regular file, Error(kIo) when the OS refuses; `what` names
  // the kind of file in messages ("GGUF file").
  static MappedFile open(const std::filesystem::path& path, std::string_view what);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(map_), size_}; }

 private:
  void* map_ = nullptr;  // nullptr for an empty file
  std::size_t size_ = 0;
};

// Writes the pieces one after the other into `path` atomically and durably:
// into a temporary file beside it, fsync, rename over `path`, fsync of the
// directory (without it the rename itself may be lost at power loss, leaving
// the old file or none). When it returns, the new file is on disk. Throws
// Error(kIo) naming the file; the temporary file is removed on failure.
void write_file_atomically(const std::filesystem::path& path, const std::vector<std::span<const std::byte>>& pieces);
void write_file_atomically(const std::filesystem::path& path, std::string_view text);

// Flushes the entries of directory `dir` (files or folders created, renamed or
// removed in it) to disk, so that they survive power loss. Throws Error(kIo)
// naming the directory.
void fsync_directory(const std::filesystem::path& dir);

}  // namespace fedge
