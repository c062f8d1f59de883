// Fuzz target for the frame decoder and the message parsers behind it: arbitrary bytes, fed in
// arbitrary pieces, must never crash, hang or read out of bounds; they decode or fail cleanly.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "corral/client.pb.h"
#include "corral/net/frame.h"
#include "corral/node.pb.h"
#include "corral/worker.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool quiet = (google::protobuf::SetLogHandler(nullptr), true);  // parse errors are expected
  (void)quiet;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // The last byte picks how the input is split into reads (the first is 'C' in every valid frame).
  size_t step = size ? (data[size - 1] % 31) + 1 : 1;
  corral::net::FrameDecoder decoder(1 << 16);
  std::string buffer;
  auto on_message = [](std::string_view m) {
    corral::proto::ClientToHead c;
    c.ParseFromArray(m.data(), static_cast<int>(m.size()));
    corral::proto::AgentToHead a;
    a.ParseFromArray(m.data(), static_cast<int>(m.size()));
    corral::proto::WorkerToAgent w;
    w.ParseFromArray(m.data(), static_cast<int>(m.size()));
    corral::proto::CallerToAgent call;  // the agent's call port (the direct path)
    call.ParseFromArray(m.data(), static_cast<int>(m.size()));
    corral::proto::AgentToCaller answer;
    answer.ParseFromArray(m.data(), static_cast<int>(m.size()));
  };
  for (size_t at = 0; at < input.size(); at += step) {
    buffer.append(input.substr(at, step));
    auto used = decoder.Decode(buffer, on_message);
    if (!used) return 0;
    buffer.erase(0, *used);
  }
  return 0;
}
