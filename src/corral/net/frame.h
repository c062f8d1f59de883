// Frames: how messages travel on every Corral connection (TCP, TLS, Unix socket).
//
//   frame   = header payload
//   header  = 'C' 'R' version:u8 flags:u8 payload_length:u32le      (8 bytes)
//   payload = { message_length:u32le message_bytes }*                (one or more messages)
//
// A sender that has several messages queued puts them all in one frame and one write (coalescing);
// an idle sender sends a frame with one message at once. A decoder rejects a bad magic, an unknown
// version, a payload longer than the limit, or a message running past its frame: the connection
// is then closed with that reason. Pure functions and value types; no I/O. Not synchronised.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "corral/base/status.h"

namespace corral::net {

inline constexpr size_t kFrameHeaderBytes = 8;
inline constexpr uint8_t kFrameVersion = 1;
// Default largest payload: a 64 MiB value plus room for its envelope.
inline constexpr size_t kDefaultMaxFrameBytes = (64u << 20) + (1u << 20);

// Builds frames. Messages are appended in place; Take() seals the frame and returns its bytes.
class FrameBuilder {
 public:
  bool empty() const { return buf_.empty(); }
  size_t size() const { return buf_.size(); }
  size_t message_count() const { return count_; }
  // Reserves `n` bytes for one message and returns where to write them.
  char* AppendMessage(size_t n);
  void AppendMessage(std::string_view bytes);
  // The sealed frame; the builder is empty afterwards.
  std::string Take();

 private:
  std::string buf_;  // header placeholder + payload
  size_t count_ = 0;
};

// Parses frames from a byte stream. Feed it whatever has arrived; it calls `on_message` for each
// complete message and returns how many input bytes it consumed (a partial frame is left for the
// next call, with more bytes). An error means the stream is corrupt and must be closed.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_payload_bytes = kDefaultMaxFrameBytes) : max_(max_payload_bytes) {}

  Result<size_t> Decode(std::string_view input, const std::function<void(std::string_view)>& on_message);
  // Once a header has been seen, how many bytes the whole frame needs (to size the read buffer).
  size_t pending_frame_bytes() const { return pending_; }
  void set_max_payload(size_t bytes) { max_ = bytes; }
  uint64_t frames() const { return frames_; }
  uint64_t messages() const { return messages_; }

 private:
  size_t max_;
  size_t pending_ = 0;
  uint64_t frames_ = 0;
  uint64_t messages_ = 0;
};

}  // namespace corral::net
