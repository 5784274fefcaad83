#include "fetcher/secret.h"

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

}  // namespace
}  // namespace irsafs
