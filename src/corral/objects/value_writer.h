// WriteValue: how a process lays a value's bytes into its file in the node's store (see
// node_store.h for the files, python/corral/_store.py for the layout of a value).
//
// Over pages the file already has (a freed file taken from the pool, at least as large as the
// value), the bytes are copied through a shared mapping populated in one call, by several threads
// for a large value: a write() looks up and locks each 4 KiB page on its own and runs on one core,
// and the copy into mapped pages is what a large put costs. Into a new file they are written with
// writev(): tmpfs must allocate and zero every page anyway, and its write path does that faster than
// page faults on a mapping (decision 39 has the figures).
// Thread-safe; blocks for as long as the copy takes (the binding releases the GIL around it).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "corral/base/status.h"

namespace corral::objects {

// Writes `parts`, one after another from offset 0, into `fd` (open for reading and writing).
// `over_existing`: the file already holds at least that many bytes of pages (else it is empty).
Status WriteValue(int fd, const std::vector<std::string_view>& parts, bool over_existing);

// Values from this size on are copied by more than one thread (when the machine has the cores).
inline constexpr uint64_t kParallelCopyBytes = 16u << 20;

}  // namespace corral::objects
