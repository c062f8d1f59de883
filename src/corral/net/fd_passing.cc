#include "corral/net/fd_passing.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace corral::net {

bool SendTaggedFd(int sock, uint64_t tag, int fd, std::string_view note) {
  if (note.size() > kMaxFdNote) return false;
  char body[sizeof tag + kMaxFdNote];
  std::memcpy(body, &tag, sizeof tag);
  std::memcpy(body + sizeof tag, note.data(), note.size());
  size_t len = sizeof tag + note.size();
  iovec iov{body, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(len)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool ReceiveTaggedFds(int sock, const std::function<void(uint64_t tag, int fd, std::string_view note)>& f) {
  for (;;) {
    uint64_t tag = 0;
    char body[sizeof tag + kMaxFdNote];
    iovec iov{body, sizeof body};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    if (n == 0) return false;  // (a seqpacket socket reads 0 only once its peer closed)
    int fd = -1;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int got;
        std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
        if (fd < 0) fd = got;
        else close(got);  // (one per message is all a sender of ours puts in)
      }
    }
    if (n < static_cast<ssize_t>(sizeof tag) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
      if (fd >= 0) close(fd);  // not one of ours
      continue;
    }
    std::memcpy(&tag, body, sizeof tag);
    f(tag, fd, std::string_view(body + sizeof tag, static_cast<size_t>(n) - sizeof tag));
  }
}

}  // namespace corral::net
