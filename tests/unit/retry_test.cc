#include "fetcher/retry.h"

#include <gtest/gtest.h>

#include "core/config_service.h"
#include "fakes.h"

namespace irsafs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::FakeRandom;

TEST(RetryPolicy, FullJitterWindowGrowsUpToTheCap) {
  RetryPolicy p;  // base 1.5 s, growth 1.5, cap 8 s
  FakeRandom top(1.0);
  auto secs = [&](int n) { return std::chrono::duration<double>(p.backoff(n, top)).count(); };
  EXPECT_NEAR(secs(1), 1.5, 1e-6);
  EXPECT_NEAR(secs(2), 2.25, 1e-6);
  EXPECT_NEAR(secs(3), 3.375, 1e-6);
  EXPECT_NEAR(secs(5), 7.59375, 1e-6);
  EXPECT_NEAR(secs(6), 8.0, 1e-6);     // 11.4 s capped
  EXPECT_NEAR(secs(5000), 8.0, 1e-6);  // no overflow
  FakeRandom zero(0.0);
  EXPECT_EQ(p.backoff(5, zero), Duration::zero());  // full jitter reaches zero
  FakeRandom half(0.5);
  EXPECT_EQ(p.backoff(1, half), milliseconds(750));
  RetryPolicy doubling{.base = milliseconds(500), .growth = 2.0, .cap = seconds(20)};
  EXPECT_EQ(doubling.backoff(3, top), seconds(2));
}

// The mount's hold-off between failed fetches is the same rule: 1 s doubling to 60 s, keeping
// at least half of each window (ServiceOptions::hold_off).
TEST(RetryPolicy, TheHoldOffKeepsHalfItsWindow) {
  const RetryPolicy p = ServiceOptions{}.hold_off;
  FakeRandom zero(0.0), top(1.0);
  EXPECT_EQ(p.backoff(1, zero), milliseconds(500));
  EXPECT_EQ(p.backoff(1, top), seconds(1));
  EXPECT_EQ(p.backoff(3, zero), seconds(2));
  EXPECT_EQ(p.backoff(3, top), seconds(4));
  EXPECT_EQ(p.backoff(7, top), seconds(60));  // 64 s capped
  EXPECT_EQ(p.backoff(7, zero), seconds(30));
}

TEST(RetryPolicy, RetryAfterSetsThePaceWithJitterOnTop) {
  RetryPolicy p;
  FakeRandom half(0.5);
  EXPECT_EQ(p.paced(seconds(2), half), seconds(3));
  FakeRandom zero(0.0);
  EXPECT_EQ(p.paced(seconds(2), zero), seconds(2));
  EXPECT_EQ(p.paced(std::chrono::hours(5), zero), p.retry_after_cap);
}

TEST(RetryableStatus, Classes) {
  for (long s : {408L, 429L, 500L, 502L, 503L, 504L, 599L}) EXPECT_TRUE(is_retryable_status(s)) << s;
  for (long s : {200L, 301L, 400L, 401L, 403L, 404L, 409L}) EXPECT_FALSE(is_retryable_status(s)) << s;
}

}  // namespace
}  // namespace irsafs
