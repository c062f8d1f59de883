#include "corral/objects/node_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include <fmt/format.h>
#include <zlib.h>

#include "corral/base/files.h"
#include "corral/base/ids.h"

namespace corral::objects {
namespace {

constexpr std::string_view kPartial = ".tmp.";

// Calls fn(name) for every entry of `dir` but "." and "..".
template <typename Fn>
void ForEachEntry(const std::string& dir, Fn fn) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name != "." && name != "..") fn(std::string(name));
  }
  closedir(d);
}

// Moves `path` to `to` only if no process has it open or mapped, not even a reader that has
// dropped its reference but still holds an array in the mapping: writing over the pages of a
// file in use would change that array. A write lease is granted only while the file has no
// other open description (a mapping holds one), and is held across the rename so that nobody
// opens the file in between (an open would wait for the lease to be given up, and then find the
// file moved). False if the file is in use or leases are unavailable (then it is deleted instead).
// The kernel tells a lease holder that someone wants the file with SIGIO, whose default action
// ends the process; the lease is held for a rename only, so the signal is of no use here.
bool MoveIfUnused(const std::string& path, const std::string& to) {
  static const bool kSigioIgnored = signal(SIGIO, SIG_IGN) != SIG_ERR;
  (void)kSigioIgnored;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  bool moved = fcntl(fd, F_SETLEASE, F_WRLCK) == 0 && rename(path.c_str(), to.c_str()) == 0;
  fcntl(fd, F_SETLEASE, F_UNLCK);
  close(fd);
  return moved;
}

}  // namespace

std::string NodeStore::DefaultDir(const std::string& node_id, const std::string& state_dir) {
  struct stat st{};
  if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK | X_OK) == 0)
    return "/dev/shm/corral-" + Hex(node_id).substr(0, 16);
  return state_dir + "/objects";
}

uint64_t NodeStore::DefaultCapacity(const std::string& dir) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  uint64_t cap = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 10 * 3 : 0;
  struct statvfs fs{};
  if (statvfs(dir.c_str(), &fs) == 0) {
    uint64_t room = static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize;
    if (room > 0 && (cap == 0 || room < cap)) cap = room;
  }
  return cap;
}

namespace {

// Sums the sizes that the names of the pool's files start with ("<size>-..."); calls fn(name, size).
template <typename Fn>
uint64_t ForEachPooled(const std::string& pool, Fn fn) {
  uint64_t total = 0;
  ForEachEntry(pool, [&](const std::string& name) {
    uint64_t size = std::strtoull(name.c_str(), nullptr, 10);
    total += size;
    fn(name, size);
  });
  return total;
}

// Creates `dir` (0700) or takes over one this user owns, emptied.
Status PrivateEmptyDir(std::string& dir, const char* flag) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return MakeStatus(Code::kFailedPrecondition, "cannot create the directory {} ({}): {}", dir, flag,
                      std::strerror(errno));
  struct stat st{};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
    return MakeStatus(Code::kFailedPrecondition,
                      "{} is not a directory this user owns (a link, or another user's); pass another with {}", dir,
                      flag);
  if ((st.st_mode & 0077) != 0 && chmod(dir.c_str(), 0700) != 0)
    return MakeStatus(Code::kFailedPrecondition, "cannot make {} private (chmod 0700): {}", dir, std::strerror(errno));
  ForEachEntry(dir, [&](const std::string& name) {
    std::string path = dir + "/" + name;
    if (unlink(path.c_str()) != 0 && errno == EISDIR) {  // a pool from an earlier run
      ForEachEntry(path, [&](const std::string& inner) { unlink((path + "/" + inner).c_str()); });
      rmdir(path.c_str());
    }
  });
  return Status::Ok();
}

}  // namespace

Result<NodeStore> NodeStore::Open(std::string dir, const std::string& node_id, std::string spill_dir) {
  if (dir.empty() || spill_dir.empty()) return Err(Code::kInvalidArgument, "the object store needs two directories");
  if (Status s = PrivateEmptyDir(dir, "--object-store-dir"); !s.ok()) return Err(s);
  if (Status s = PrivateEmptyDir(spill_dir, "--spill-dir"); !s.ok()) return Err(s);
  NodeStore store(std::move(dir), std::move(spill_dir));
  if (Status s = WriteFile(store.dir_ + "/.node", Hex(node_id) + "\n", 0600); !s.ok()) return Err(s);
  if (mkdir(store.PoolDir().c_str(), 0700) != 0)
    return Err(Code::kFailedPrecondition, fmt::format("cannot create {}: {}", store.PoolDir(), std::strerror(errno)));
  return store;
}

std::string NodeStore::FileName(std::string_view id, uint32_t attempt) {
  return fmt::format("{}-{}", Hex(id), attempt);
}

bool NodeStore::Delete(std::string_view id, uint32_t attempt) {
  if (id.empty()) return false;
  std::string path = Path(id, attempt);
  struct stat st{};
  bool pooled = false;
  if (pool_capacity_ > 0 && stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) >= kMinPooledBytes &&
      static_cast<uint64_t>(st.st_size) <= pool_capacity_) {
    std::string name = fmt::format("{}-{}", st.st_size, FileName(id, attempt));
    pooled = MoveIfUnused(path, PoolDir() + "/" + name);
    if (pooled) TrimPool(name);
  }
  bool in_memory = pooled || unlink(path.c_str()) == 0;
  bool spilled = unlink(SpillPath(id, attempt).c_str()) == 0;
  return in_memory || spilled;
}

Status NodeStore::Spill(std::string_view id, uint32_t attempt) const {
  std::string from = Path(id, attempt), to = SpillPath(id, attempt), tmp = to + ".tmp.spill";
  int in = open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in < 0) return MakeStatus(Code::kNotFound, "object {} is not in memory here", Hex(id));
  int out = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    int err = errno;
    close(in);
    return MakeStatus(Code::kResourceExhausted, "cannot spill to {}: {}", spill_dir_, std::strerror(err));
  }
  struct stat st{};
  fstat(in, &st);
  off_t done = 0;
  int err = 0;
  while (done < st.st_size) {
    ssize_t n = sendfile(out, in, &done, static_cast<size_t>(st.st_size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
  }
  close(in);
  if (close(out) != 0 && err == 0) err = errno;
  if (err != 0 || rename(tmp.c_str(), to.c_str()) != 0) {
    if (err == 0) err = errno;
    unlink(tmp.c_str());
    return MakeStatus(Code::kResourceExhausted, "cannot spill object {} ({} bytes) to {}: {}", Hex(id),
                      static_cast<long long>(st.st_size), spill_dir_, std::strerror(err));
  }
  unlink(from.c_str());  // complete on disk first: a reader finds one or the other
  return Status::Ok();
}

Result<std::string> NodeStore::Read(std::string_view id, uint32_t attempt, uint64_t offset, uint64_t length,
                                    uint64_t* size) const {
  int fd = open(Path(id, attempt).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) fd = open(SpillPath(id, attempt).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return Err(Code::kNotFound, fmt::format("object {} is not in this node's store ({})", Hex(id),
                                            std::strerror(errno)));
  struct stat st{};
  fstat(fd, &st);
  *size = static_cast<uint64_t>(st.st_size);
  std::string out;
  if (offset < *size) {
    out.resize(std::min<uint64_t>(length, *size - offset));
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        close(fd);
        return Err(Code::kInternal, fmt::format("reading object {}: {}", Hex(id), n < 0 ? std::strerror(err)
                                                                                   : "the file is shorter than it was"));
      }
      done += static_cast<size_t>(n);
    }
  }
  close(fd);
  return out;
}

void NodeStore::TrimPool(const std::string& keep) const {
  // A file's ctime is when it was renamed into the pool: the longest kept go first, since the
  // sizes a program writes now are those it freed last.
  struct Pooled {
    timespec freed;
    uint64_t size;
    std::string name;
  };
  std::string pool = PoolDir();
  std::vector<Pooled> others;
  uint64_t gone = 0;  // sizes of files a writer took meanwhile: no longer in the pool
  uint64_t total = ForEachPooled(pool, [&](const std::string& name, uint64_t size) {
    struct stat st{};
    if (name == keep) return;
    if (stat((pool + "/" + name).c_str(), &st) == 0) others.push_back({st.st_ctim, size, name});
    else gone += size;
  });
  total -= std::min(total, gone);
  std::sort(others.begin(), others.end(), [](const Pooled& a, const Pooled& b) {
    return std::tie(a.freed.tv_sec, a.freed.tv_nsec) < std::tie(b.freed.tv_sec, b.freed.tv_nsec);
  });
  for (size_t i = 0; i < others.size() && total > pool_capacity_; ++i)
    if (unlink((pool + "/" + others[i].name).c_str()) == 0 || errno == ENOENT) total -= others[i].size;
}

uint64_t NodeStore::PoolBytes() const {
  return ForEachPooled(PoolDir(), [](const std::string&, uint64_t) {});
}

uint64_t NodeStore::EmptyPool() {
  std::string pool = PoolDir();
  return ForEachPooled(pool, [&](const std::string& name, uint64_t) { unlink((pool + "/" + name).c_str()); });
}

bool NodeStore::TakePooled(const std::string& dir, uint64_t size, const std::string& to) {
  std::string pool = dir + "/.free";
  std::vector<std::pair<uint64_t, std::string>> fitting, smaller;
  ForEachPooled(pool, [&](const std::string& name, uint64_t n) {
    if (n >= size && n <= 2 * size + kMinPooledBytes) fitting.emplace_back(n, name);
    else if (n < size) smaller.emplace_back(n, name);
  });
  std::sort(fitting.begin(), fitting.end());
  std::sort(smaller.begin(), smaller.end(), std::greater<>());
  auto& candidates = fitting.empty() ? smaller : fitting;
  for (size_t i = 0; i < candidates.size() && i < 4; ++i)
    if (rename((pool + "/" + candidates[i].second).c_str(), to.c_str()) == 0) return true;
  return false;
}

int NodeStore::SweepPartial(std::optional<pid_t> pid) {
  int removed = 0;
  ForEachEntry(dir_, [&](const std::string& name) {
    size_t at = name.find(kPartial);
    if (at == std::string::npos) return;
    char* end = nullptr;
    long writer = std::strtol(name.c_str() + at + kPartial.size(), &end, 10);
    if (end == nullptr || *end != '\0' || writer <= 0) return;
    bool gone = pid ? writer == *pid : (kill(static_cast<pid_t>(writer), 0) != 0 && errno == ESRCH);
    if (gone && unlink((dir_ + "/" + name).c_str()) == 0) ++removed;
  });
  return removed;
}

std::vector<NodeStore::Entry> NodeStore::List(int min_age_s) const {
  std::vector<Entry> out;
  time_t newest = time(nullptr) - min_age_s;
  for (bool spilled : {false, true})
    ForEachEntry(spilled ? spill_dir_ : dir_, [&](const std::string& name) {
      struct stat st{};
      if (min_age_s > 0 && (stat(((spilled ? spill_dir_ : dir_) + "/" + name).c_str(), &st) != 0 || st.st_mtime > newest))
        return;
      // "<hex id>-<attempt>", nothing else (partial files, `.node`).
      size_t dash = name.rfind('-');
      if (dash == std::string::npos || dash == 0 || name.find('.') != std::string::npos) return;
      auto id = FromHex(std::string_view(name).substr(0, dash));
      char* end = nullptr;
      unsigned long attempt = std::strtoul(name.c_str() + dash + 1, &end, 10);
      if (!id || end == name.c_str() + dash + 1 || *end != '\0' || attempt > UINT32_MAX) return;
      out.push_back({std::move(*id), static_cast<uint32_t>(attempt), spilled});
    });
  return out;
}

void NodeStore::RemoveAll() {
  EmptyPool();
  rmdir(PoolDir().c_str());
  for (const std::string& d : {dir_, spill_dir_}) {
    ForEachEntry(d, [&](const std::string& name) { unlink((d + "/" + name).c_str()); });
    rmdir(d.c_str());
  }
}

uint32_t Crc32(std::string_view data, uint32_t crc) {
  // zlib's own (several bytes per step): a byte-at-a-time table ran at a sixth of its speed here.
  while (!data.empty()) {
    uInt n = static_cast<uInt>(std::min<size_t>(data.size(), 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, reinterpret_cast<const Bytef*>(data.data()), n));
    data.remove_prefix(n);
  }
  return crc;
}

}  // namespace corral::objects
