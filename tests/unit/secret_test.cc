#include "common/secret.h"

#include <gtest/gtest.h>

namespace irsafs {
namespace {

TEST(Secret, WipesOnDemandAndOnMove) {
  Secret s(std::string(64, 'k'));
  EXPECT_EQ(s.reveal(), std::string(64, 'k'));
  Secret t(std::move(s));
  EXPECT_TRUE(s.empty());  // NOLINT(bugprone-use-after-move): moved-from must be empty
  EXPECT_EQ(t.reveal().size(), 64u);
  t.wipe();
  EXPECT_TRUE(t.empty());
}

// Issue 9 (suspected, confirmed): a short token lives in the std::string object itself (the
// small-string buffer). Moving it into a Secret copied the bytes and left them in the source.
TEST(Secret, ShortTokensAreLeftInMovedFromSmallStringBuffers) {
  std::string token = "tok-12345";  // fits the small-string buffer
  ASSERT_LT(token.size(), 15u);
  const char* buffer = token.data();
  const std::size_t room = token.capacity();
  Secret s(std::move(token));
  EXPECT_EQ(s.reveal(), "tok-12345");
  for (std::size_t i = 0; i < room; ++i) EXPECT_EQ(buffer[i], '\0') << "byte " << i << " left behind";
}

}  // namespace
}  // namespace irsafs
