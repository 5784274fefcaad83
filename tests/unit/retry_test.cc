#include "fetcher/retry.h"

#include <gtest/gtest.h>

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

TEST(RetryPolicy, RetryAfterSetsThePaceWithJitterOnTop) {
  RetryPolicy p;
  FakeRandom half(0.5);
  EXPECT_EQ(p.paced(seconds(2), half), seconds(3));
  FakeRandom zero(0.0);
  EXPECT_EQ(p.paced(seconds(2), zero), seconds(2));
  EXPECT_EQ(p.paced(std::chrono::hours(5), zero), p.retry_after_cap);
}

TEST(RetryAfter, ParsesSecondsAndHttpDates) {
  const WallTime now = std::chrono::system_clock::from_time_t(784111777);  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(parse_retry_after("120", now), seconds(120));
  EXPECT_EQ(parse_retry_after(" 0 ", now), seconds(0));
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), seconds(10));
  EXPECT_EQ(parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now), seconds(60));
  EXPECT_EQ(parse_retry_after("Sun Nov  6 08:49:40 1994", now), seconds(3));
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Duration::zero());  // past
  EXPECT_FALSE(parse_retry_after("soon", now));
  EXPECT_FALSE(parse_retry_after("-5", now));
  EXPECT_FALSE(parse_retry_after("", now));
  EXPECT_TRUE(parse_retry_after("99999999999999999999999", now));  // huge: clamped by the caller
}

TEST(RetryableStatus, Classes) {
  for (long s : {408L, 429L, 500L, 502L, 503L, 504L, 599L}) EXPECT_TRUE(is_retryable_status(s)) << s;
  for (long s : {200L, 301L, 400L, 401L, 403L, 404L, 409L}) EXPECT_FALSE(is_retryable_status(s)) << s;
}

}  // namespace
}  // namespace irsafs
