#include "fedge/common/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "fedge/common/error.h"

namespace fedge {
namespace {

[[noreturn]] void fail(ErrorKind kind, const std::string& what, int err) {
  throw Error(kind, what + ": " + std::strerror(err));
}

}  // namespace

MappedFile MappedFile::open(const std::filesystem::path& path, std::string_view what) {
  const std::string name = std::string(what) + " '" + path.string() + "'";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(err == ENOENT ? ErrorKind::kNotFound : ErrorKind::kIo, "cannot open " + name, err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(ErrorKind::kIo, "cannot stat " + name, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::kInvalidInput, path.string() + ": not a regular file");
  }
  MappedFile file;
  file.size_ = static_cast<std::size_t>(st.st_size);
  if (file.size_ > 0) {  // mmap of length 0 fails; callers report an empty file
    void* map = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(ErrorKind::kIo, "cannot mmap " + name, err);
    }
    file.map_ = map;
  }
  ::close(fd);  // the mapping keeps the file alive
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : map_(std::exchange(other.map_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = std::exchange(other.map_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

namespace {

void write_all(int fd, const std::byte* data, std::size_t size, const std::string& name) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorKind::kIo, "cannot write '" + name + "'", errno);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, const std::vector<std::span<const std::byte>>& pieces) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  const std::string tmp_name = tmp.string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::kIo, "cannot create '" + tmp_name + "'", errno);
  try {
    for (const auto& piece : pieces) write_all(fd, piece.data(), piece.size(), tmp_name);
    if (::fsync(fd) != 0) fail(ErrorKind::kIo, "cannot fsync '" + tmp_name + "'", errno);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "cannot close '" + tmp_name + "'", err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(ErrorKind::kIo, "cannot rename '" + tmp_name + "' to '" + path.string() + "'", err);
  }
  // The rename lives in the directory: until it is flushed, power loss may
  // undo it even though the file's bytes are on disk.
  fsync_directory(path.has_parent_path() ? path.parent_path() : std::filesystem::path("."));
}

void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  write_file_atomically(path, {std::as_bytes(std::span(text.data(), text.size()))});
}

void fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::kIo, "cannot open directory '" + dir.string() + "' to fsync it", errno);
  // EINVAL: a file system that cannot sync directories (some network ones);
  // there is nothing more to do there, as PostgreSQL's fsync_fname also decides.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int err = errno;
    ::close(fd);
    fail(ErrorKind::kIo, "cannot fsync directory '" + dir.string() + "'", err);
  }
  ::close(fd);
}

}  // namespace fedge
