#include "corral/base/call_table.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

namespace corral {

struct CallTable::Header {
  std::atomic<uint32_t> lock;  // 0: free; else who holds it (1 worker, 2 agent)
  uint32_t count;              // entries [0, count) are in use
};

struct CallTable::Entry {
  char id[kIdBytes];
  int64_t refused_at;  // 0: claimed; else when the agent refused it (ns, the agent's clock)
  uint32_t seq;
  uint32_t pad;
};

static_assert(std::atomic<uint32_t>::is_always_lock_free, "the lock is shared between processes");

namespace {

constexpr size_t kHeaderBytes = 64;
constexpr uint32_t kWorker = 1, kAgent = 2;
constexpr auto kAgentPatience = std::chrono::milliseconds(10);

}  // namespace

static size_t TableBytes() { return kHeaderBytes + CallTable::kCapacity * 32; }

Result<CallTable> CallTable::Create(int* fd) {
  static_assert(sizeof(Entry) == 32);
  *fd = memfd_create("corral-calls", MFD_CLOEXEC);
  if (*fd < 0) return Err(Code::kUnavailable, fmt::format("memfd_create: {}", strerror(errno)));
  if (ftruncate(*fd, static_cast<off_t>(TableBytes())) != 0) {
    int e = errno;
    close(*fd);
    *fd = -1;
    return Err(Code::kUnavailable, fmt::format("cannot size the call table: {}", strerror(e)));
  }
  auto t = Map(*fd);
  if (!t) {
    close(*fd);
    *fd = -1;
  }
  return t;  // (a new file reads as zeros: an empty table, unlocked)
}

Result<CallTable> CallTable::Map(int fd) {
  size_t size = TableBytes();
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Err(Code::kUnavailable, fmt::format("cannot map the call table: {}", strerror(errno)));
  return CallTable(p, size);
}

CallTable::CallTable(CallTable&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}

CallTable& CallTable::operator=(CallTable&& other) noexcept {
  if (this != &other) {
    if (base_) munmap(base_, size_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

CallTable::~CallTable() {
  if (base_) munmap(base_, size_);
}

CallTable::Header* CallTable::header() const { return static_cast<Header*>(base_); }

CallTable::Entry* CallTable::entries() const {
  return reinterpret_cast<Entry*>(static_cast<char*>(base_) + kHeaderBytes);
}

bool CallTable::Lock(bool wait) {
  uint32_t me = wait ? kWorker : kAgent;
  auto deadline = std::chrono::steady_clock::now() + kAgentPatience;
  for (uint32_t spins = 0;; ++spins) {
    uint32_t free = 0;
    if (header()->lock.compare_exchange_weak(free, me, std::memory_order_acquire)) return true;
    if (spins % 64 == 63) {
      if (!wait && std::chrono::steady_clock::now() > deadline) return false;
      sched_yield();  // (the holder may be off its core)
    }
  }
}

void CallTable::Unlock() { header()->lock.store(0, std::memory_order_release); }

CallTable::Entry* CallTable::FindLocked(std::string_view id) {
  Entry* e = entries();
  uint32_t n = std::min(header()->count, kCapacity);
  for (uint32_t i = 0; i < n; ++i)
    if (std::memcmp(e[i].id, id.data(), kIdBytes) == 0) return &e[i];
  return nullptr;
}

CallTable::Claimed CallTable::Claim(std::string_view id, uint32_t seq) {
  if (!base_ || id.size() != kIdBytes) return Claimed::kRefused;
  Lock(/*wait=*/true);
  Claimed out;
  if (Entry* e = FindLocked(id)) {
    out = Claimed::kRefused;  // refused, or a second copy of a call taken already
    if (e->refused_at != 0) *e = entries()[--header()->count];  // (met once: its refusal is done)
  } else if (header()->count >= kCapacity) {
    out = Claimed::kFull;
  } else {
    Entry& n = entries()[header()->count++];
    std::memcpy(n.id, id.data(), kIdBytes);
    n.refused_at = 0;
    n.seq = seq;
    out = Claimed::kYes;
  }
  Unlock();
  return out;
}

bool CallTable::Refuse(std::string_view id, int64_t now_ns, int64_t keep_ns) {
  if (!base_ || id.size() != kIdBytes) return false;
  if (!Lock(/*wait=*/false)) return true;
  Entry* e = entries();
  for (uint32_t i = 0; i < header()->count;) {  // forget old refusals (of calls that never came)
    if (e[i].refused_at != 0 && now_ns - e[i].refused_at > keep_ns) e[i] = e[--header()->count];
    else ++i;
  }
  bool held = false;
  if (Entry* found = FindLocked(id)) {
    held = found->refused_at == 0;
  } else if (header()->count < kCapacity) {
    Entry& n = e[header()->count++];
    std::memcpy(n.id, id.data(), kIdBytes);
    n.refused_at = now_ns == 0 ? 1 : now_ns;
    n.seq = 0;
  } else {
    held = true;  // no room to refuse it: it may still come, so it is not sent again
  }
  Unlock();
  return held;
}

bool CallTable::Release(std::string_view id) {
  if (!base_ || id.size() != kIdBytes) return false;
  if (!Lock(/*wait=*/false)) return true;
  bool was = false;
  if (Entry* e = FindLocked(id); e && e->refused_at == 0) {
    *e = entries()[--header()->count];
    was = true;
  }
  Unlock();
  return was;
}

std::optional<uint32_t> CallTable::Find(std::string_view id) {
  if (!base_ || id.size() != kIdBytes || !Lock(/*wait=*/false)) return std::nullopt;
  std::optional<uint32_t> seq;
  if (Entry* e = FindLocked(id); e && e->refused_at == 0) seq = e->seq;
  Unlock();
  return seq;
}

std::vector<std::pair<std::string, uint32_t>> CallTable::ClaimedLocked() {
  std::vector<std::pair<std::string, uint32_t>> out;
  Entry* e = entries();
  for (uint32_t i = 0; i < std::min(header()->count, kCapacity); ++i)
    if (e[i].refused_at == 0) out.emplace_back(std::string(e[i].id, kIdBytes), e[i].seq);
  return out;
}

std::vector<std::pair<std::string, uint32_t>> CallTable::ListClaimed() {
  if (!base_ || !Lock(/*wait=*/false)) return {};
  auto out = ClaimedLocked();
  Unlock();
  return out;
}

std::vector<std::pair<std::string, uint32_t>> CallTable::TakeClaimed() {
  if (!base_) return {};
  auto out = ClaimedLocked();
  header()->count = 0;
  header()->lock.store(0, std::memory_order_release);
  return out;
}

}  // namespace corral
