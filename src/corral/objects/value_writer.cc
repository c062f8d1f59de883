#include "corral/objects/value_writer.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

namespace corral::objects {
namespace {

constexpr unsigned kMaxCopyThreads = 4;

Status WriteAll(int fd, const std::vector<std::string_view>& parts) {
  size_t first = 0, skip = 0;  // the next part to write, and how much of it is written already
  while (first < parts.size()) {
    iovec iov[512];
    int n = 0;
    for (size_t i = first; i < parts.size() && n < 512; ++i, ++n) {
      size_t off = i == first ? skip : 0;
      iov[n] = {const_cast<char*>(parts[i].data()) + off, parts[i].size() - off};
    }
    ssize_t wrote = writev(fd, iov, n);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return MakeStatus(Code::kResourceExhausted, "{}", std::strerror(errno));
    }
    auto left = static_cast<size_t>(wrote);
    while (first < parts.size()) {
      size_t rest = parts[first].size() - skip;
      if (left < rest) {
        skip += left;
        break;
      }
      left -= rest;
      ++first;
      skip = 0;
    }
  }
  return Status::Ok();
}

// Copies the bytes of `parts` that fall in [from, to) of the value to `base` + their offset.
void CopyRange(char* base, const std::vector<std::string_view>& parts, uint64_t from, uint64_t to) {
  uint64_t at = 0;
  for (std::string_view p : parts) {
    uint64_t end = at + p.size();
    uint64_t lo = std::max(at, from), hi = std::min(end, to);
    if (lo < hi) std::memcpy(base + lo, p.data() + (lo - at), hi - lo);
    if (end >= to) break;
    at = end;
  }
}

}  // namespace

Status WriteValue(int fd, const std::vector<std::string_view>& parts, bool over_existing) {
  uint64_t total = 0;
  for (std::string_view p : parts) total += p.size();
  if (!over_existing || total == 0) return WriteAll(fd, parts);
  void* map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (map == MAP_FAILED) return WriteAll(fd, parts);
  char* base = static_cast<char*>(map);
  unsigned threads = 1;
  if (total >= kParallelCopyBytes)
    threads = static_cast<unsigned>(std::clamp<uint64_t>(
        std::min<uint64_t>(std::thread::hardware_concurrency(), total / (kParallelCopyBytes / 2)), 1, kMaxCopyThreads));
  // Slices on page boundaries, so no two threads fault or dirty the same page; `threads` of them
  // cover the whole value (the last may be shorter).
  uint64_t slice = ((total + threads - 1) / threads + 4095) & ~uint64_t{4095};
  std::vector<std::thread> helpers;
  uint64_t started_to = std::min<uint64_t>(total, slice);  // [0, slice) is this thread's
  try {
    for (; started_to < total; started_to = std::min<uint64_t>(total, started_to + slice))
      helpers.emplace_back(CopyRange, base, std::cref(parts), started_to, std::min<uint64_t>(total, started_to + slice));
  } catch (const std::system_error&) {  // no thread to be had: this one copies the rest
  }
  CopyRange(base, parts, 0, std::min<uint64_t>(total, slice));
  CopyRange(base, parts, started_to, total);
  for (auto& t : helpers) t.join();
  munmap(map, total);
  return Status::Ok();
}

}  // namespace corral::objects
