#include "corral/net/frame.h"

#include <cstring>

namespace corral::net {
namespace {

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

char* FrameBuilder::AppendMessage(size_t n) {
  if (buf_.empty()) buf_.resize(kFrameHeaderBytes);
  size_t at = buf_.size();
  buf_.resize(at + 4 + n);
  PutU32(buf_.data() + at, static_cast<uint32_t>(n));
  ++count_;
  return buf_.data() + at + 4;
}

void FrameBuilder::AppendMessage(std::string_view bytes) {
  char* p = AppendMessage(bytes.size());
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
}

std::string FrameBuilder::Take() {
  if (buf_.empty()) return {};
  buf_[0] = 'C';
  buf_[1] = 'R';
  buf_[2] = static_cast<char>(kFrameVersion);
  buf_[3] = 0;
  PutU32(buf_.data() + 4, static_cast<uint32_t>(buf_.size() - kFrameHeaderBytes));
  count_ = 0;
  return std::move(buf_);
}

Result<size_t> FrameDecoder::Decode(std::string_view input,
                                    const std::function<void(std::string_view)>& on_message) {
  size_t used = 0;
  while (input.size() - used >= kFrameHeaderBytes) {
    const char* h = input.data() + used;
    if (h[0] != 'C' || h[1] != 'R')
      return Err(Code::kInvalidArgument, "bad frame magic: the peer does not speak the Corral protocol");
    if (static_cast<uint8_t>(h[2]) != kFrameVersion)
      return Err(Code::kInvalidArgument,
                 fmt::format("frame version {} is not supported (this side speaks {})",
                             static_cast<int>(static_cast<uint8_t>(h[2])), kFrameVersion));
    size_t payload = GetU32(h + 4);
    if (payload > max_)
      return Err(Code::kResourceExhausted,
                 fmt::format("frame of {} bytes exceeds the limit of {} bytes", payload, max_));
    pending_ = kFrameHeaderBytes + payload;
    if (input.size() - used < pending_) return used;
    const char* p = h + kFrameHeaderBytes;
    const char* end = p + payload;
    while (p < end) {
      if (end - p < 4) return Err(Code::kInvalidArgument, "truncated message length inside a frame");
      size_t n = GetU32(p);
      p += 4;
      if (n > static_cast<size_t>(end - p))
        return Err(Code::kInvalidArgument,
                   fmt::format("message of {} bytes runs past the end of its frame", n));
      ++messages_;
      on_message(std::string_view(p, n));
      p += n;
    }
    used += pending_;
    pending_ = 0;
    ++frames_;
  }
  return used;
}

}  // namespace corral::net
