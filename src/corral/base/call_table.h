// CallTable: which direct calls an actor's worker took from its callers' channels, shared between
// that worker and its agent in a small memory-mapped file (decision 50).
//
// A caller on the actor's machine sends its calls to the worker itself, on its call channel; the
// agent never sees them arrive. The table is where the two agree on each such call:
//
// - the worker claims a call before it runs it (Claim);
// - the agent, asked by the head whether a call a caller lost track of is held here, either finds
//   it claimed (held: its end will come) or refuses it (Refuse), after which the worker drops it if
//   it reads it later; one lock makes the two exclusive, so a call is run here or sent again by the
//   head, never both;
// - the agent releases a call when the worker's report of its end arrives (Release), finds a claimed
//   call to cancel it (Find), and takes what is still claimed when the worker dies (TakeClaimed):
//   those calls may have run, and end with the worker as calls it sent itself do.
//
// Ids are the 16-byte task ids clients make (MakeTaskId). The lock is a word in the mapping; each
// hold is a few hundred instructions with no system call. The worker waits for it; the agent tries
// for a bounded time (a worker stopped while holding it, as a whole laptop is, must not stop the
// agent's thread) and treats a miss conservatively (see each operation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "corral/base/status.h"

namespace corral {

class CallTable {
 public:
  static constexpr size_t kIdBytes = 16;
  static constexpr uint64_t kHandOverTag = 0;  // its tag on the agent's hand-over socket (channels: from 1)
  static constexpr uint32_t kCapacity = 2048;  // claimed and refused calls at once

  // The agent's side: a new table in an anonymous memory file, which `*fd` gets (to hand to the
  // worker; the caller closes it).
  static Result<CallTable> Create(int* fd);
  // The worker's side: maps the table the agent handed over (the descriptor may be closed after).
  static Result<CallTable> Map(int fd);

  CallTable(CallTable&& other) noexcept;
  CallTable& operator=(CallTable&& other) noexcept;
  CallTable(const CallTable&) = delete;
  CallTable& operator=(const CallTable&) = delete;
  ~CallTable();

  enum class Claimed { kYes, kRefused, kFull };  // (Claim's answer)
  // Worker: `id` is about to run as `seq` (the number a cancel names it by). kRefused: the agent
  // refused it (or it was claimed already): drop it. kFull: try again after the agent caught up.
  Claimed Claim(std::string_view id, uint32_t seq);

  // Agent: true if `id` is claimed (held here). Otherwise it is refused from now on and false is
  // returned. A lock that could not be had counts as held (the head then waits for the call's end).
  // Refusals older than `keep_ns` before `now_ns` are forgotten meanwhile.
  bool Refuse(std::string_view id, int64_t now_ns, int64_t keep_ns);
  // Agent: the worker reported `id`'s end: false if it is not claimed (a report to drop). A lock
  // that could not be had counts as claimed, and the entry stays (then taken at the worker's death
  // with the others; the head ignores the end of a call that ended).
  bool Release(std::string_view id);
  // Agent: the seq of claimed call `id`, if it is.
  std::optional<uint32_t> Find(std::string_view id);
  // Agent: the claimed calls (id, seq) now (none if the lock could not be had).
  std::vector<std::pair<std::string, uint32_t>> ListClaimed();
  // Agent, after the worker died: the claimed calls, taking the lock whoever held it.
  std::vector<std::pair<std::string, uint32_t>> TakeClaimed();

 private:
  struct Entry;
  struct Header;
  CallTable(void* base, size_t size) : base_(base), size_(size) {}
  Header* header() const;
  Entry* entries() const;
  bool Lock(bool wait);
  void Unlock();
  Entry* FindLocked(std::string_view id);
  std::vector<std::pair<std::string, uint32_t>> ClaimedLocked();

  void* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace corral
