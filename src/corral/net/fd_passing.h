// Handing an open descriptor to another process over a Unix socket (SCM_RIGHTS), tagged with a
// number the two sides agree on. The agent hands each caller's result connection to the actor's
// worker this way, over a socket pair it made for that worker (decision 46).
//
// `sock` is one end of a SOCK_SEQPACKET pair: each send is one message, so a tag and its
// descriptor stay together. Both functions never block. Thread-safe (no state of their own).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

namespace corral::net {

constexpr size_t kMaxFdNote = 256;

// Sends `tag` with `fd` (or, with fd -1, the tag alone) and a `note` of up to kMaxFdNote bytes,
// now. The sender keeps its own `fd`. False if it could not go without waiting (the receiver's
// queue is full, or it closed), or the note is too long.
bool SendTaggedFd(int sock, uint64_t tag, int fd, std::string_view note = {});

// Receives everything queued on `sock` now: f(tag, fd, note) for each message, fd -1 where none
// came. The descriptors are the receiver's (close-on-exec set). Returns false once the other end
// closed.
bool ReceiveTaggedFds(int sock, const std::function<void(uint64_t tag, int fd, std::string_view note)>& f);

}  // namespace corral::net
