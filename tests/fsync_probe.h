// Sees which files and directories a test's code flushes to disk, and in what
// order: this header defines fsync() and fdatasync() for the whole test
// executable (the executable's definition wins over libc's, for the static
// fedge libraries and for shared ones such as libsqlite3 alike), records the
// path behind each file descriptor while a FsyncProbe is alive, and then makes
// the real system call. Power loss itself cannot be tested here; the order of
// the flushes is what decides what survives it.
//
// Include it in exactly ONE source file of a test executable.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace fedge::testing {

namespace fsync_probe_detail {
inline std::mutex mutex;
inline bool recording = false;
inline std::vector<std::filesystem::path> flushed;

inline void note(int fd) {
  std::lock_guard lock(mutex);
  if (!recording) return;
  char target[PATH_MAX];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  flushed.emplace_back(n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?");
}
}  // namespace fsync_probe_detail

// Records every fsync/fdatasync of this process (any thread) from construction
// until paths() is called or the probe goes away. One probe at a time.
class FsyncProbe {
 public:
  FsyncProbe() {
    std::lock_guard lock(fsync_probe_detail::mutex);
    fsync_probe_detail::flushed.clear();
    fsync_probe_detail::recording = true;
  }
  ~FsyncProbe() {
    std::lock_guard lock(fsync_probe_detail::mutex);
    fsync_probe_detail::recording = false;
  }
  FsyncProbe(const FsyncProbe&) = delete;
  FsyncProbe& operator=(const FsyncProbe&) = delete;

  // The flushed paths so far, oldest first (a file flushed before its rename
  // shows its temporary name).
  std::vector<std::filesystem::path> paths() const {
    std::lock_guard lock(fsync_probe_detail::mutex);
    return fsync_probe_detail::flushed;
  }
};

}  // namespace fedge::testing

extern "C" int fsync(int fd) {
  fedge::testing::fsync_probe_detail::note(fd);
  return static_cast<int>(::syscall(SYS_fsync, fd));
}

extern "C" int fdatasync(int fd) {
  fedge::testing::fsync_probe_detail::note(fd);
  return static_cast<int>(::syscall(SYS_fdatasync, fd));
}
