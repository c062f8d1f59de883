#include "corral/base/log.h"

#include <gtest/gtest.h>

namespace corral {
namespace {

TEST(Printable, KeepsTextAndEscapesWhatCouldBreakALine) {
  EXPECT_EQ(Printable("GET /api/v1/nodes"), "GET /api/v1/nodes");
  EXPECT_EQ(Printable("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
  EXPECT_EQ(Printable("back\\slash"), "back\\\\slash");  // an escape cannot be faked either
  EXPECT_EQ(Printable("K\xc3\xb6ln \xe2\x82\xac \xf0\x9f\x90\x8e"), "K\xc3\xb6ln \xe2\x82\xac \xf0\x9f\x90\x8e");
}

TEST(Printable, InvalidUtf8BecomesEscapes) {
  EXPECT_EQ(Printable("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(Printable("\xc3"), "\\xc3");                  // truncated sequence
  EXPECT_EQ(Printable("\xc0\xaf"), "\\xc0\\xaf");         // overlong '/'
  EXPECT_EQ(Printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(Printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(Printable(std::string_view("a\0b", 3)), "a\\x00b");
}

}  // namespace
}  // namespace corral
