#include "corral/net/frame.h"

#include <gtest/gtest.h>

#include <vector>

namespace corral::net {
namespace {

std::vector<std::string> DecodeAll(FrameDecoder& d, std::string_view bytes, size_t* used = nullptr) {
  std::vector<std::string> out;
  auto r = d.Decode(bytes, [&](std::string_view m) { out.emplace_back(m); });
  EXPECT_TRUE(r.has_value()) << r.error().ToString();
  if (used) *used = r.value_or(0);
  return out;
}

TEST(Frame, ManyMessagesInOneFrame) {
  FrameBuilder b;
  b.AppendMessage("one");
  b.AppendMessage("");
  b.AppendMessage("three");
  EXPECT_EQ(b.message_count(), 3u);
  std::string frame = b.Take();
  EXPECT_TRUE(b.empty());
  FrameDecoder d;
  auto msgs = DecodeAll(d, frame);
  EXPECT_EQ(msgs, (std::vector<std::string>{"one", "", "three"}));
  EXPECT_EQ(d.frames(), 1u);
  EXPECT_EQ(d.messages(), 3u);
}

TEST(Frame, PartialInputIsKeptForLater) {
  FrameBuilder b;
  b.AppendMessage("hello");
  std::string frame = b.Take();
  b.AppendMessage("world");
  frame += b.Take();
  FrameDecoder d;
  for (size_t cut = 0; cut < frame.size(); ++cut) {
    FrameDecoder fresh;
    size_t used = 0;
    auto first = DecodeAll(fresh, std::string_view(frame).substr(0, cut), &used);
    auto rest = DecodeAll(fresh, std::string_view(frame).substr(used), nullptr);
    first.insert(first.end(), rest.begin(), rest.end());
    EXPECT_EQ(first, (std::vector<std::string>{"hello", "world"})) << "cut at " << cut;
  }
}

TEST(Frame, RejectsGarbage) {
  FrameDecoder d;
  auto r = d.Decode("GET / HTTP/1.1\r\n\r\n", [](std::string_view) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("magic"), std::string::npos);
}

TEST(Frame, RejectsWrongVersion) {
  FrameBuilder b;
  b.AppendMessage("x");
  std::string frame = b.Take();
  frame[2] = 9;
  FrameDecoder d;
  auto r = d.Decode(frame, [](std::string_view) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("version 9"), std::string::npos);
}

TEST(Frame, RejectsOversizedFrameFromHeaderAlone) {
  FrameBuilder b;
  b.AppendMessage(std::string(100, 'x'));
  std::string frame = b.Take();
  FrameDecoder d(/*max_payload_bytes=*/64);
  auto r = d.Decode(std::string_view(frame).substr(0, kFrameHeaderBytes), [](std::string_view) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Code::kResourceExhausted);
}

TEST(Frame, RejectsMessageRunningPastFrame) {
  FrameBuilder b;
  b.AppendMessage("abcd");
  std::string frame = b.Take();
  frame[8] = 50;  // message length larger than the payload
  FrameDecoder d;
  EXPECT_FALSE(d.Decode(frame, [](std::string_view) {}).has_value());
}

}  // namespace
}  // namespace corral::net
