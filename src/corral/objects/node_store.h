// NodeStore: a node's shared-memory object store, as seen by the agent that owns it.
//
// The store is a directory on a memory file system (`/dev/shm/corral-<node>` by default), one file
// per stored object, named `<hex id>-<attempt>` (`attempt` is the attempt of the task that made a
// result, 0 for a put: two attempts of one task never write the same file). The process that makes
// a value writes it there itself (`<name>.tmp.<pid>`, then a rename: a reader never sees a part of
// a value) and readers on the machine map the file read-only: a value crosses no socket and is
// copied once, by its writer. The agent deletes a file when the head says nothing references the
// object; a reader that still maps it keeps its pages (the kernel frees them with the last mapping),
// so a crashed reader leaks nothing and a deletion never pulls memory from under a reader.
//
// A deleted value's file that no process has open or mapped is kept for the next writer, up to the
// pool's capacity (the files kept longest make room), in `<dir>/.free` as `<size>-<old name>`: a writer takes one by renaming it to
// its partial name and writes over its pages, which tmpfs then need not allocate and zero (decision 32). The agent empties the pool
// when the machine runs low on memory.
//
// Files a writer left half-written when it died are removed by SweepPartial. Python writes and
// maps the files (python/corral/_store.py); this class is the agent's side: create, delete, read
// for a reader on another node, sweep, and spill: a value moved to the spill directory (on disk)
// keeps its name there, and readers that do not find it in memory map it from there. It is
// complete there before it leaves memory, so a reader always finds one of the two.
// Thread-safe (no state but the directories).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/base/status.h"

namespace corral::objects {

// The most bytes of an object one read for another node carries (a message, well under a frame).
inline constexpr uint64_t kMaxChunkBytes = 8u << 20;

class NodeStore {
 public:
  // The default directory for a node: /dev/shm/corral-<first 16 hex digits of the node id> where
  // /dev/shm is a writable directory, else <state_dir>/objects.
  static std::string DefaultDir(const std::string& node_id, const std::string& state_dir);
  // The default capacity: 30% of the machine's memory, at most what the file system holding `dir` has.
  static uint64_t DefaultCapacity(const std::string& dir);
  // Creates `dir` (mode 0700) or takes over an existing one owned by this user, and empties it:
  // objects from an earlier run of the node are unknown to the head. Writes `.node` (the node id in
  // hex): how a driver on this machine tells its node's store from a same-named one elsewhere.
  static Result<NodeStore> Open(std::string dir, const std::string& node_id, std::string spill_dir);

  const std::string& dir() const { return dir_; }
  const std::string& spill_dir() const { return spill_dir_; }
  static std::string FileName(std::string_view id, uint32_t attempt);
  std::string Path(std::string_view id, uint32_t attempt) const { return dir_ + "/" + FileName(id, attempt); }

  std::string SpillPath(std::string_view id, uint32_t attempt) const {
    return spill_dir_ + "/" + FileName(id, attempt);
  }
  // Removes the object's file (in memory and spilled), or keeps its pages in the pool. False if
  // neither was there.
  bool Delete(std::string_view id, uint32_t attempt);
  // Freed files of at least kMinPooledBytes are kept up to `bytes` in all (0: none are); a file
  // freed when the pool is full pushes out those kept longest.
  void SetPoolCapacity(uint64_t bytes) { pool_capacity_ = bytes; }
  static constexpr uint64_t kMinPooledBytes = 1u << 20;
  std::string PoolDir() const { return dir_ + "/.free"; }
  uint64_t PoolBytes() const;
  // Frees the pool's memory; the bytes it held.
  uint64_t EmptyPool();
  // Renames a file of the pool of store `dir` to `to` for a writer of `size` bytes: the smallest
  // that holds them and is at most twice as large (+1 MiB), else the largest smaller one. False if
  // there is none (or other writers took them first). Python's writers choose the same way.
  static bool TakePooled(const std::string& dir, uint64_t size, const std::string& to);
  // Moves the object from memory to the spill directory. A full disk leaves it in memory.
  Status Spill(std::string_view id, uint32_t attempt) const;
  // Up to `length` bytes of the object from `offset` (in memory, else spilled); its whole size in *size.
  Result<std::string> Read(std::string_view id, uint32_t attempt, uint64_t offset, uint64_t length,
                           uint64_t* size) const;
  // Removes the partial files of writer `pid`, or (nullopt) of every writer no longer running.
  // Returns how many it removed.
  int SweepPartial(std::optional<pid_t> pid = std::nullopt);
  // The complete values in the store, in memory and spilled, last written at least `min_age_s`
  // seconds ago (partial files are not listed).
  struct Entry {
    std::string id;
    uint32_t attempt = 0;
    bool spilled = false;
  };
  std::vector<Entry> List(int min_age_s = 0) const;
  // Removes the directory and everything in it (the agent is stopping).
  void RemoveAll();

 private:
  NodeStore(std::string dir, std::string spill_dir) : dir_(std::move(dir)), spill_dir_(std::move(spill_dir)) {}
  // Removes the pool's files kept longest, but `keep`, until the pool is within its capacity.
  void TrimPool(const std::string& keep) const;
  std::string dir_;
  std::string spill_dir_;
  uint64_t pool_capacity_ = 0;
};

// zlib's CRC-32 (IEEE 802.3), as Python's zlib.crc32 computes it: what a reader checks a part with.
uint32_t Crc32(std::string_view data, uint32_t crc = 0);

}  // namespace corral::objects
