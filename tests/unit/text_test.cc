#include "common/text.h"

#include <gtest/gtest.h>

#include <string>

namespace irsafs {
namespace {

TEST(Text, InvalidUtf8At) {
  EXPECT_EQ(invalid_utf8_at(""), std::nullopt);
  EXPECT_EQ(invalid_utf8_at("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::nullopt);
  EXPECT_EQ(invalid_utf8_at("ab\xff"), 2u);
  EXPECT_EQ(invalid_utf8_at("ab\xc3"), 2u);               // truncated
  EXPECT_EQ(invalid_utf8_at("\xc0\xaf"), 0u);             // overlong
  EXPECT_EQ(invalid_utf8_at("x\xed\xa0\x80"), 1u);        // surrogate
  EXPECT_EQ(invalid_utf8_at("\xf4\x90\x80\x80"), 0u);     // above U+10FFFF
}

// Issue 9, item 5: messages are cut on a character boundary, and what is not UTF-8 is replaced.
TEST(Text, PrintableCutsOnACharacterBoundaryAndReplacesWhatIsNotUtf8) {
  const std::string e119 = std::string(119, 'E');
  EXPECT_EQ(printable(e119 + "\xc3\xa9", 120), e119 + "...");
  EXPECT_EQ(printable(e119 + "\xc3\xa9", 121), e119 + "\xc3\xa9");
  EXPECT_EQ(printable("a\xff" "b"), "a\xef\xbf\xbd" "b");
  EXPECT_EQ(printable("a\x01\x7f\xc2\x85z"), "a???z");
  EXPECT_EQ(printable("\xc3"), "\xef\xbf\xbd");
  for (const std::string& in : {std::string("\xe2\x82"), std::string("x\xf0\x9f\x98"), e119 + "\xe2\x82\xac"}) {
    for (std::size_t max : {std::size_t{0}, std::size_t{1}, std::size_t{120}, std::string::npos}) {
      EXPECT_EQ(invalid_utf8_at(printable(in, max)), std::nullopt);
    }
  }
}

}  // namespace
}  // namespace irsafs
