#include "core/config_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>

#include "common/validator.h"
#include "fakes.h"
#include "http/metrics.h"

namespace irsafs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using testing::FakeClock;
using testing::FakeRandom;
using testing::ManualLauncher;

constexpr const char* kV1 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n";
constexpr const char* kV2 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n\n[profile b]\nregion = x\n";

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() { make({}); }

  void make(ServiceOptions o) {
    o.read_deadline = seconds(10);
    o.write_quiet = milliseconds(100);
    if (o.refresh_interval == Duration::zero()) o.refresh_interval = refresh_;
    svc = std::make_unique<ConfigService>(o, launcher, clock, random);
    svc->set_content_listener([this](const ContentPtr& now, const ContentPtr& before) {
      events.push_back("publish v" + std::to_string(now->version) + (before ? " over v" + std::to_string(before->version) : ""));
    });
  }

  // A reader; its outcome lands in outcomes[id].
  std::optional<ReadOutcome> read(WaiterId id) {
    return svc->read(id, [this, id](const ReadOutcome& o) {
      events.push_back("reply " + std::to_string(id));
      outcomes[id] = o;
    });
  }

  FakeClock clock;
  FakeRandom random{0.0};
  ManualLauncher launcher;
  Duration refresh_{};
  std::unique_ptr<ConfigService> svc;
  std::map<WaiterId, ReadOutcome> outcomes;
  std::vector<std::string> events;
};

TEST_F(ServiceTest, NothingHappensUntilTheFirstRead) {
  svc->tick();
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(svc->status()["state"], "empty");
  EXPECT_EQ(svc->status()["upstream_requests"], 0);
}

TEST_F(ServiceTest, ConcurrentReadersShareOneFetchAndTheSameBytes) {
  for (WaiterId id = 1; id <= 500; ++id) EXPECT_FALSE(read(id));
  ASSERT_EQ(launcher.pending.size(), 1u);  // coalesced
  EXPECT_EQ(svc->status()["state"], "fetching");
  EXPECT_EQ(svc->status()["waiting_readers"], 500);
  launcher.succeed(kV1);
  ASSERT_EQ(outcomes.size(), 500u);
  for (auto& [id, o] : outcomes) {
    ASSERT_TRUE(o.content) << id;
    EXPECT_EQ(o.content->bytes, kV1);
    EXPECT_EQ(o.content->version, 1u);
  }
  // The adapter hears of the new version before any waiter is answered.
  EXPECT_EQ(events.front(), "publish v1");
  // Later readers get the content at once, no fetch.
  auto now = read(501);
  ASSERT_TRUE(now && now->content);
  EXPECT_EQ(now->content->bytes, kV1);
  EXPECT_TRUE(launcher.pending.empty());
  const auto st = svc->status();
  EXPECT_EQ(st["state"], "ready");
  EXPECT_EQ(st["source"], "irsa-svc");
  EXPECT_EQ(st["bytes"], std::string(kV1).size());
  EXPECT_EQ(st["sha256"], sha256_hex(kV1));
  EXPECT_EQ(st["upstream_requests"], 1);
}

TEST_F(ServiceTest, AFailureIsFannedOutToEveryWaiterThenHeldOff) {
  for (WaiterId id = 1; id <= 3; ++id) read(id);
  launcher.fail("irsa-svc: HTTP 503: busy");
  ASSERT_EQ(outcomes.size(), 3u);
  for (auto& [id, o] : outcomes) {
    EXPECT_FALSE(o.content);
    EXPECT_EQ(o.error, EIO);
    EXPECT_THAT(o.why, HasSubstr("HTTP 503"));
  }
  const auto st = svc->status();
  EXPECT_EQ(st["state"], "error");
  EXPECT_THAT(st["last_error"].get<std::string>(), HasSubstr("HTTP 503"));
  // A new reader waits: no fetch before the hold-off (1 s * U(0.5,1) = 0.5 s here) ends.
  EXPECT_FALSE(read(4));
  EXPECT_TRUE(launcher.pending.empty());
  ASSERT_TRUE(svc->next_wakeup());
  clock.advance(milliseconds(499));
  svc->tick();
  EXPECT_TRUE(launcher.pending.empty());
  clock.advance(milliseconds(1));
  svc->tick();
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  ASSERT_TRUE(outcomes[4].content);
}

TEST_F(ServiceTest, HoldOffGrowsWithConsecutiveFailures) {
  random.set(0.999999);
  read(1);
  launcher.fail("x");
  TimePoint t = clock.now();
  read(2);
  EXPECT_NEAR(std::chrono::duration<double>(*svc->next_wakeup() - t).count(), 1.0, 1e-3);
  clock.advance(seconds(1));
  svc->tick();
  launcher.fail("x");
  t = clock.now();
  read(3);
  EXPECT_NEAR(std::chrono::duration<double>(*svc->next_wakeup() - t).count(), 2.0, 1e-3);
}

TEST_F(ServiceTest, NoReaderWaitsBeyondTheDeadline) {
  // A reader waiting out a hold-off (no fetch running) gets EIO at its deadline.
  read(1);
  launcher.fail("HTTP 503");
  read(2);
  clock.advance(seconds(10));
  svc->tick();
  ASSERT_EQ(outcomes.count(2), 1u);
  EXPECT_EQ(outcomes[2].error, EIO);
  EXPECT_THAT(outcomes[2].why, HasSubstr("deadline"));
}

TEST_F(ServiceTest, ReadersOfARunningFetchGetItsOutcomeEvenAMomentPastTheirDeadline) {
  read(1);
  clock.advance(seconds(5));
  read(2);
  clock.advance(seconds(5));  // reader 1's deadline; the fetch (same deadline) is about to end
  svc->tick();
  EXPECT_EQ(outcomes.count(1), 0u);
  launcher.fail("irsa-svc: HTTP 500 (gave up: deadline)");
  EXPECT_THAT(outcomes[1].why, HasSubstr("HTTP 500"));
  EXPECT_THAT(outcomes[2].why, HasSubstr("HTTP 500"));
}

TEST_F(ServiceTest, AReaderWaitingOutAHoldOffIsNotHeldByTheLaterFetch) {
  read(1);
  launcher.fail("HTTP 503");  // hold-off 0.5 s (U = 0)
  read(2);
  clock.advance(seconds(2));
  svc->tick();  // the hold-off is over: a new fetch starts 2 s after reader 2 arrived
  ASSERT_EQ(launcher.pending.size(), 1u);
  clock.advance(seconds(8));
  svc->tick();
  EXPECT_EQ(outcomes[2].error, EIO);  // at its own deadline
  EXPECT_THAT(outcomes[2].why, HasSubstr("deadline"));
}

TEST_F(ServiceTest, AFetchThatOverrunsItsDeadlineDoesNotHoldReadersForever) {
  read(1);
  clock.advance(seconds(11));  // deadline 10 s + 1 s of grace
  svc->tick();
  EXPECT_EQ(outcomes[1].error, EIO);
  EXPECT_THAT(outcomes[1].why, HasSubstr("deadline"));
}

TEST_F(ServiceTest, CancelTakesBackAParkedReaderOnce) {
  read(1);
  read(2);
  EXPECT_TRUE(svc->cancel(1));
  EXPECT_FALSE(svc->cancel(1));
  launcher.succeed(kV1);
  EXPECT_EQ(outcomes.count(1), 0u);
  EXPECT_TRUE(outcomes[2].content);
  EXPECT_FALSE(svc->cancel(2));  // already answered
}

TEST_F(ServiceTest, RefreshReplacesAtomicallyAndAFailedRefreshKeepsTheContent) {
  read(1);
  launcher.succeed(kV1);
  const ContentPtr v1 = svc->current();
  svc->refresh_now();
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(svc->status()["refreshing"], true);
  // Readers keep the current content while the refresh runs.
  EXPECT_EQ(read(2)->content, v1);
  launcher.fail("HTTP 500");
  EXPECT_EQ(svc->current(), v1);
  auto st = svc->status();
  EXPECT_EQ(st["state"], "ready");
  EXPECT_THAT(st["last_error"].get<std::string>(), HasSubstr("HTTP 500"));
  svc->refresh_now();
  launcher.succeed(kV2);
  const ContentPtr v2 = svc->current();
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(v2->bytes, kV2);
  EXPECT_EQ(v1->bytes, kV1);  // the old snapshot is untouched for readers that hold it
  EXPECT_EQ(events.back(), "publish v2 over v1");
  // The same bytes again make no new version.
  svc->refresh_now();
  launcher.succeed(kV2);
  EXPECT_EQ(svc->current(), v2);
}

TEST_F(ServiceTest, RefreshIntervalSchedulesTheNextFetch) {
  refresh_ = seconds(30);
  make({});
  read(1);
  launcher.succeed(kV1);
  EXPECT_EQ(*svc->next_wakeup(), clock.now() + seconds(30));
  clock.advance(seconds(30));
  svc->tick();
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV2);
  EXPECT_EQ(svc->current()->bytes, kV2);
  EXPECT_NE(svc->status()["next_refresh_at"], nullptr);
}

TEST_F(ServiceTest, SeedingWithoutAnyReadNeverFetches) {
  EXPECT_EQ(svc->truncate(7, 0), 0);
  EXPECT_EQ(svc->write(7, 0, "[profile a]\nrole_arn"), 0);
  EXPECT_EQ(svc->write(7, 20, " = arn:aws:iam::1:role/a\n"), 0);
  // A reader arriving mid-write waits for the writer, not for irsa-svc.
  EXPECT_FALSE(read(1));
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(svc->flush(7), 0);
  ASSERT_TRUE(outcomes[1].content);
  EXPECT_EQ(outcomes[1].content->bytes, kV1);
  EXPECT_EQ(svc->status()["source"], "write");
  svc->refresh_now();  // a written config is never replaced by a fetch
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(svc->status()["upstream_requests"], 0);
}

TEST_F(ServiceTest, AQuietWriterIsCommittedWithoutAFlush) {
  svc->write(3, 0, kV1);
  EXPECT_FALSE(svc->current());
  clock.advance(milliseconds(100));
  svc->tick();
  ASSERT_TRUE(svc->current());
  EXPECT_EQ(svc->current()->bytes, kV1);
}

TEST_F(ServiceTest, SplitWritesAreNotJudgedByAValidLookingPrefix) {
  const std::string text = kV2;
  svc->write(3, 0, text.substr(0, 40));  // a valid config on its own
  clock.advance(milliseconds(50));
  svc->tick();
  EXPECT_FALSE(svc->current());
  svc->write(3, 40, text.substr(40));
  clock.advance(milliseconds(100));
  svc->tick();
  EXPECT_EQ(svc->current()->bytes, text);
}

TEST_F(ServiceTest, ADifferentTextOverServedContentIsPublishedAtOnce) {
  read(1);
  launcher.succeed(kV1);
  // The same text, arriving in pieces: every piece is a prefix of the content, nothing changes.
  const std::string same = kV1;
  svc->truncate(5, 0);
  svc->write(5, 0, same.substr(0, 12));
  EXPECT_EQ(svc->current()->version, 1u);
  svc->write(5, 12, same.substr(12));
  EXPECT_EQ(svc->current()->version, 1u);
  // A different valid text is served as soon as it is written (the writer reads it back).
  clock.advance(milliseconds(10));
  svc->truncate(6, 0);
  EXPECT_EQ(svc->write(6, 0, kV2), 0);
  EXPECT_EQ(svc->current()->bytes, kV2);
  EXPECT_EQ(svc->current()->source, ContentSource::kWrite);
  // Its session still ends normally, without another version; writer 5's older session does
  // not bring the old text back.
  clock.advance(milliseconds(100));
  svc->tick();
  EXPECT_EQ(svc->current()->version, 2u);
  EXPECT_EQ(svc->current()->bytes, kV2);
  EXPECT_EQ(svc->status()["writes"]["committed"], 1);
}

TEST_F(ServiceTest, InvalidWritesAreRefusedAndLeaveTheContentUnchanged) {
  read(1);
  launcher.succeed(kV1);
  EXPECT_EQ(svc->write(3, 0, "<!DOCTYPE html>\n"), EINVAL);
  EXPECT_EQ(svc->current()->bytes, kV1);
  // Complete but invalid at commit: a line without '='.
  EXPECT_EQ(svc->write(4, 0, "[profile a]\njunk"), 0);
  EXPECT_EQ(svc->flush(4), EINVAL);
  EXPECT_EQ(svc->current()->bytes, kV1);
  const auto st = svc->status();
  EXPECT_EQ(st["writes"]["rejected"], 2);
  EXPECT_EQ(st["source"], "irsa-svc");
  EXPECT_EQ(svc->flush(4), std::nullopt);  // the session is gone
}

TEST_F(ServiceTest, RewritingTheSameTextChangesNothing) {
  svc->write(1, 0, kV1);
  svc->flush(1);
  const ContentPtr v1 = svc->current();
  for (std::uint64_t w = 2; w < 10; ++w) {
    svc->truncate(w, 0);
    svc->write(w, 0, kV1);
  }
  clock.advance(milliseconds(100));
  svc->tick();
  EXPECT_EQ(svc->current(), v1);
  EXPECT_EQ(events, (std::vector<std::string>{"publish v1"}));
}

TEST_F(ServiceTest, WritersDoNotMixTheirTexts) {
  svc->truncate(1, 0);
  svc->truncate(2, 0);
  svc->write(1, 0, std::string(kV2).substr(0, 30));
  svc->write(2, 0, kV1);
  svc->write(1, 30, std::string(kV2).substr(30));
  EXPECT_EQ(svc->flush(2), 0);
  EXPECT_EQ(svc->current()->bytes, kV1);
  EXPECT_EQ(svc->flush(1), 0);
  EXPECT_EQ(svc->current()->bytes, kV2);
}

TEST_F(ServiceTest, SeedingRacingAFetchWinsAndTheFetchIsDiscarded) {
  read(1);
  ASSERT_EQ(launcher.pending.size(), 1u);
  svc->write(9, 0, kV2);
  svc->flush(9);
  ASSERT_TRUE(outcomes[1].content);
  EXPECT_EQ(outcomes[1].content->bytes, kV2);
  launcher.succeed(kV1);  // arrives late
  EXPECT_EQ(svc->current()->bytes, kV2);
  EXPECT_EQ(svc->status()["source"], "write");
  EXPECT_EQ(svc->status()["upstream_requests"], 1);
}

TEST_F(ServiceTest, AnInvalidSeedLetsWaitingReadersFallBackToAFetch) {
  svc->write(9, 0, "[profile a]\n");
  read(1);
  EXPECT_TRUE(launcher.pending.empty());
  svc->write(9, 12, "garbage line\n");  // complete invalid line: refused at once
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  EXPECT_EQ(outcomes[1].content->bytes, kV1);
}

TEST_F(ServiceTest, ReadOnlyRefusesWrites) {
  ServiceOptions o;
  o.writable = false;
  make(o);
  EXPECT_EQ(svc->write(1, 0, kV1), EROFS);
  EXPECT_EQ(svc->truncate(1, 0), EROFS);
}

TEST_F(ServiceTest, WritesBeyondTheSizeCapAreRefused) {
  EXPECT_EQ(svc->write(1, kMaxConfigBytes, "x"), EFBIG);
  EXPECT_EQ(svc->truncate(1, kMaxConfigBytes + 1), EFBIG);
}

TEST_F(ServiceTest, ShutdownFailsWaitersAndStartsNoFetch) {
  read(1);
  svc->shutdown();
  EXPECT_EQ(outcomes[1].error, EIO);
  auto late = read(2);
  ASSERT_TRUE(late);
  EXPECT_EQ(late->error, EIO);
  svc->refresh_now();
  EXPECT_EQ(launcher.pending.size(), 1u);  // only the one started before shutdown
}

TEST_F(ServiceTest, PrefetchStartsAtOnceAndOnlyOnce) {
  svc->prefetch();
  svc->prefetch();
  EXPECT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  svc->prefetch();
  EXPECT_TRUE(launcher.pending.empty());
}

TEST_F(ServiceTest, StatusNeverHoldsTheContent) {
  svc->write(1, 0, "[profile secret]\naws_secret_access_key = SUPERSECRET\n");
  svc->flush(1);
  EXPECT_EQ(svc->status().dump().find("SUPERSECRET"), std::string::npos);
}

// --- issue 9 -----------------------------------------------------------------------------

// The ticker's invariant: right after tick(), nothing it could do is due, so the next wake-up is
// strictly in the future (or there is none). A time in the past makes it spin a core.
#define EXPECT_TICKER_SLEEPS()                                                              \
  do {                                                                                      \
    svc->tick();                                                                            \
    const auto wake = svc->next_wakeup();                                                   \
    EXPECT_TRUE(!wake || *wake > clock.now())                                               \
        << "next_wakeup() is " << std::chrono::duration<double>(*wake - clock.now()).count() \
        << " s from now: the ticker would spin";                                            \
  } while (0)

// Item 3: after a failure, a read past the hold-off starts a fetch; the end of the hold-off
// (now past) was still offered while that fetch ran.
TEST_F(ServiceTest, TickerSpinsOnAPastHoldOffWhileAFetchRuns) {
  read(1);
  launcher.fail("HTTP 500");
  EXPECT_TICKER_SLEEPS();
  clock.advance(seconds(2));  // past the hold-off
  read(2);
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_TICKER_SLEEPS();
  clock.advance(seconds(3));
  EXPECT_TICKER_SLEEPS();
  launcher.fail("HTTP 500");
  EXPECT_TICKER_SLEEPS();
}

// Item 3: a refresh falls due while a fetch (SIGHUP) runs: tick() does not start it, so
// next_wakeup() must not offer it either.
TEST_F(ServiceTest, TickerSpinsOnAPastRefreshWhileFetching) {
  refresh_ = seconds(30);
  make({});
  read(1);
  launcher.succeed(kV1);
  clock.advance(seconds(29));
  svc->refresh_now();
  ASSERT_EQ(launcher.pending.size(), 1u);
  clock.advance(seconds(5));  // the interval's refresh is due now, the SIGHUP one still runs
  EXPECT_TICKER_SLEEPS();
  EXPECT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  EXPECT_TICKER_SLEEPS();
  EXPECT_TRUE(launcher.pending.empty());
}

// Item 3: the same invariant through the failure paths of a refresh and a waiting reader whose
// deadline has passed while the fetch that covers it still runs.
TEST_F(ServiceTest, TickerSleepsInEveryStateOfAFailingRefresh) {
  refresh_ = seconds(2);
  make({});
  read(1);
  launcher.succeed(kV1);
  for (int i = 0; i < 5; ++i) {
    clock.advance(seconds(3));
    EXPECT_TICKER_SLEEPS();
    ASSERT_EQ(launcher.pending.size(), 1u);
    clock.advance(seconds(1));
    EXPECT_TICKER_SLEEPS();
    launcher.fail("HTTP 500");
    EXPECT_TICKER_SLEEPS();
  }
}

// Item 4: a text written while a fetch runs: the fetch is cancelled, and its failure (it may end
// before the cancel reaches it) does not schedule a refresh.
TEST_F(ServiceTest, ASeededMountKeepsCallingIrsaSvcAfterARefreshFailure) {
  refresh_ = seconds(2);
  make({});
  read(1);
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(svc->write(9, 0, kV2), 0);
  EXPECT_EQ(svc->flush(9), 0);
  EXPECT_EQ(svc->current()->source, ContentSource::kWrite);
  EXPECT_EQ(launcher.cancels, 1) << "the running fetch must be cancelled";
  launcher.fail("HTTP 500", 3);  // ended before the cancel took effect
  EXPECT_EQ(svc->status()["next_refresh_at"], nullptr);
  for (int i = 0; i < 20; ++i) {
    clock.advance(seconds(1));
    svc->tick();
  }
  EXPECT_TRUE(launcher.pending.empty()) << "irsa-svc called again for a written mount";
  EXPECT_EQ(svc->current()->bytes, kV2);
  const auto st = svc->status();
  EXPECT_EQ(st["failures"], 0);
  EXPECT_EQ(st["last_error"], nullptr);
}

// Item 4: also a refresh (of fetched content) running when a different text is written.
TEST_F(ServiceTest, AWriteCancelsTheRefreshRunningWhenItIsPublished) {
  refresh_ = seconds(2);
  make({});
  read(1);
  launcher.succeed(kV1);
  clock.advance(seconds(2));
  svc->tick();
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(svc->write(9, 0, kV2), 0);  // over served content: published at once
  EXPECT_EQ(svc->current()->source, ContentSource::kWrite);
  EXPECT_EQ(launcher.cancels, 1);
  launcher.cancelled();
  for (int i = 0; i < 20; ++i) {
    clock.advance(seconds(1));
    svc->tick();
  }
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(svc->status()["last_error"], nullptr);
}

// Item 5: an error text that is not UTF-8 (cut inside a character, or raw bytes) must not
// break .status: nlohmann's dump throws type_error 316 on it.
TEST_F(ServiceTest, StatusFailsAfterAnErrorThatIsNotUtf8) {
  read(1);
  launcher.fail("HTTP 500: " + std::string(119, 'E') + "\xC3");
  EXPECT_NO_THROW(svc->status().dump());
  EXPECT_THAT(svc->status()["last_error"].get<std::string>(), HasSubstr("EEEE"));
  clock.advance(seconds(5));
  read(2);
  launcher.fail("HTTP 500: \xff\xfe binary");
  EXPECT_NO_THROW(svc->status().dump());
}

// Item 8: a truncate is a write session like any other; it must wake the ticker so that the
// session is committed once quiet.
TEST_F(ServiceTest, ATruncateDoesNotWakeTheTicker) {
  int wakes = 0;
  svc->set_wake_hook([&wakes] { ++wakes; });
  read(1);
  launcher.succeed(kV2);
  wakes = 0;
  const std::string prefix = std::string(kV2).substr(0, std::string(kV1).size());
  ASSERT_EQ(prefix, kV1);
  EXPECT_EQ(svc->truncate(4, prefix.size()), 0);
  EXPECT_GE(wakes, 1) << "the ticker sleeps on while a session waits to be committed";
  const auto wake = svc->next_wakeup();
  ASSERT_TRUE(wake);
  clock.advance(*wake - clock.now());
  svc->tick();
  EXPECT_EQ(svc->current()->bytes, kV1);  // the prefix, published once quiet
  EXPECT_EQ(svc->status()["writes"]["pending"], 0);
}

// Item 8: O_RDONLY|O_TRUNC reaches the service as a truncate to 0 with no write after it. That
// is not a rejected write, and it changes nothing.
TEST_F(ServiceTest, AnOpenWithOTruncAndNoWriteIsCountedAsARejectedWrite) {
  read(1);
  launcher.succeed(kV1);
  EXPECT_EQ(svc->truncate(4, 0), 0);
  clock.advance(milliseconds(100));
  svc->tick();
  auto st = svc->status();
  EXPECT_EQ(st["writes"]["pending"], 0);
  EXPECT_EQ(st["writes"]["rejected"], 0);
  EXPECT_EQ(st["last_error"], nullptr);
  EXPECT_EQ(st["state"], "ready");
  EXPECT_EQ(svc->current()->bytes, kV1);
  // Also when the close still sends FLUSH.
  EXPECT_EQ(svc->truncate(5, 0), 0);
  EXPECT_EQ(svc->flush(5), 0);
  EXPECT_EQ(svc->status()["writes"]["rejected"], 0);
  // A writer that did write an empty text... is still refused when its text is invalid.
  EXPECT_EQ(svc->truncate(6, 0), 0);
  EXPECT_EQ(svc->write(6, 0, "[profile a]\njunk"), 0);
  EXPECT_EQ(svc->flush(6), EINVAL);
  EXPECT_EQ(svc->status()["writes"]["rejected"], 1);
}

// Item 8: a fresh mount whose reader waits on a writer that truncated and wrote nothing falls
// back to a fetch.
TEST_F(ServiceTest, AnEmptyTruncateSessionDoesNotHoldAWaitingReader) {
  svc->truncate(4, 0);
  read(1);
  EXPECT_TRUE(launcher.pending.empty());  // waits for the writer first
  clock.advance(milliseconds(100));
  svc->tick();
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  EXPECT_EQ(outcomes[1].content->bytes, kV1);
}

// A config of about `bytes`, many profiles.
std::string big_config(std::size_t bytes, const std::string& tag) {
  std::string text;
  for (int i = 0; text.size() < bytes; ++i) {
    text += "[profile " + tag + "-" + std::to_string(i) + "]\nrole_arn = arn:aws:iam::111111111111:role/" + tag +
            "-" + std::to_string(i) + "\nregion = us-east-1\n\n";
  }
  return text;
}

// Item 12: a 1 MiB text written in 4 KiB pieces over served content. Every write re-validated
// the whole text under the lock (quadratic: 12 s in the daemon), and each valid-looking piece
// was published (81 versions). Now: linear, and published whole, once.
TEST_F(ServiceTest, QuadraticValidationOfAWriteSessionUnderTheLock) {
  read(1);
  launcher.succeed(kV1);
  const std::string text = big_config(kMaxConfigBytes - 5000, "big");
  ASSERT_NE(text.size() % 4096, 0u);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(svc->truncate(7, 0), 0);
  for (std::size_t off = 0; off < text.size(); off += 4096) {
    ASSERT_EQ(svc->write(7, off, std::string_view(text).substr(off, 4096)), 0) << off;
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(svc->current());
  EXPECT_EQ(svc->current()->bytes, text) << "the last (short) piece publishes the whole text";
  EXPECT_EQ(svc->current()->version, 2u) << "intermediate versions were published";
  clock.advance(milliseconds(100));
  svc->tick();
  EXPECT_EQ(svc->current()->version, 2u);
  EXPECT_EQ(svc->status()["writes"]["committed"], 1);
  // O(size): a few milliseconds; quadratic took seconds. Generous for sanitizers.
  EXPECT_LT(took, 2.0) << "256 writes of 4 KiB took " << took << " s";
}

// Item 12: pieces that are not whole pages (a writer writing line by line): a different text
// is published again only once it has doubled, so O(log n) versions, and whole at the end.
TEST_F(ServiceTest, ATextWrittenLineByLineIsPublishedAFewTimesNotAtEveryLine) {
  read(1);
  launcher.succeed(kV1);
  const std::string text = big_config(200 * 1024, "line");
  EXPECT_EQ(svc->truncate(7, 0), 0);
  std::size_t off = 0;
  while (off < text.size()) {
    const std::size_t eol = text.find('\n', off) + 1;
    ASSERT_EQ(svc->write(7, off, std::string_view(text).substr(off, eol - off)), 0);
    off = eol;
  }
  EXPECT_LE(svc->current()->version, 20u);
  clock.advance(milliseconds(100));
  svc->tick();
  EXPECT_EQ(svc->current()->bytes, text);
  EXPECT_EQ(svc->status()["writes"]["committed"], 1);
}

// Item 12: a rewrite inside a session (not an append) is judged again whole.
TEST_F(ServiceTest, AnOverwriteInsideASessionIsJudgedAgain) {
  svc->write(3, 0, "[profile a]\nregion = x\n");
  EXPECT_EQ(svc->write(3, 12, "junk line\n"), EINVAL);
  svc->write(4, 0, "[profile a]\nregion = x\n");
  EXPECT_EQ(svc->write(4, 0, "[profile b]"), 0);
  EXPECT_EQ(svc->flush(4), 0);
  EXPECT_EQ(svc->current()->bytes, "[profile b]\nregion = x\n");
}

// --- issue 11: refresh() behind /refresh ---------------------------------------------------

class ServiceRefreshTest : public ServiceTest {
 protected:
  using Kind = RefreshResult::Kind;

  // A refresh() whose answers land in answers[i], i counting the calls from 0.
  std::size_t refresh() {
    const std::size_t i = calls++;
    svc->refresh([this, i](RefreshResult r) { answers[i].push_back(std::move(r)); });
    return i;
  }
  // Version 1 (kV1) is served, fetched for a reader; the clock is then past any sharing.
  void serve_v1() {
    read(100);
    launcher.succeed(kV1);
    ASSERT_EQ(svc->current()->version, 1u);
    clock.advance(seconds(5));
  }
  // Each of the first n calls answered exactly once; returns the answers.
  std::vector<RefreshResult> answered_once(std::size_t n) {
    std::vector<RefreshResult> out;
    for (std::size_t i = 0; i < n; ++i) {
      const auto it = answers.find(i);
      if (it == answers.end()) {
        ADD_FAILURE() << "refresh " << i << " not answered";
        continue;
      }
      EXPECT_EQ(it->second.size(), 1u) << "refresh " << i << " answered " << it->second.size() << " times";
      out.push_back(it->second.front());
    }
    return out;
  }

  std::size_t calls = 0;
  std::map<std::size_t, std::vector<RefreshResult>> answers;
};

TEST_F(ServiceRefreshTest, ConcurrentRefreshesShareOneFetch) {
  serve_v1();
  for (int i = 0; i < 3; ++i) refresh();
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_TRUE(answers.empty()) << "answered before the fetch ended";
  EXPECT_EQ(svc->status()["refreshing"], true);
  launcher.succeed(kV2);
  for (const RefreshResult& r : answered_once(3)) {
    EXPECT_EQ(r.kind, Kind::kOk);
    EXPECT_EQ(r.version, 2u);
    EXPECT_TRUE(r.changed);
    EXPECT_EQ(r.bytes, std::string(kV2).size());
    EXPECT_EQ(r.sha256, sha256_hex(kV2));
    EXPECT_TRUE(r.why.empty());
  }
}

TEST_F(ServiceRefreshTest, AThousandRefreshesMakeOneFetchAndEveryOneIsAnswered) {
  serve_v1();
  for (int i = 0; i < 600; ++i) refresh();
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV2, 1);
  for (int i = 0; i < 400; ++i) refresh();  // right after it ended: its outcome, no new fetch
  EXPECT_TRUE(launcher.pending.empty());
  const auto all = answered_once(1000);
  ASSERT_EQ(all.size(), 1000u);
  for (const RefreshResult& r : all) {
    EXPECT_EQ(r.kind, Kind::kOk);
    EXPECT_EQ(r.version, 2u);
  }
  const auto st = svc->status();
  EXPECT_EQ(st["fetches"], 2);            // the reader's and one refresh
  EXPECT_EQ(st["upstream_requests"], 2);  // 1 + 1
  EXPECT_EQ(st["refreshes"]["http"], 1000);
}

TEST_F(ServiceRefreshTest, ARefreshWithinOneSecondOfTheLastSharesItsOutcomeThenFetchesAgain) {
  serve_v1();
  refresh();
  launcher.succeed(kV2);
  clock.advance(milliseconds(999));
  refresh();  // shares the outcome at once
  EXPECT_TRUE(launcher.pending.empty());
  ASSERT_EQ(answers.count(1), 1u);
  EXPECT_EQ(answers[1].front().kind, Kind::kOk);
  EXPECT_EQ(answers[1].front().version, 2u);
  EXPECT_TRUE(answers[1].front().changed);  // that fetch's outcome
  clock.advance(milliseconds(1));
  refresh();  // 1 s after: a fetch of its own
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(answers.count(2), 0u);
  launcher.succeed(kV2);
  const auto all = answered_once(3);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].kind, Kind::kOk);
  EXPECT_EQ(all[2].version, 2u);
  EXPECT_FALSE(all[2].changed);
  EXPECT_EQ(svc->status()["fetches"], 3);
}

TEST_F(ServiceRefreshTest, AFetchNoRefreshWaitedForIsNotShared) {
  read(1);
  launcher.succeed(kV1);  // a reader's first fetch ends now
  refresh();
  EXPECT_EQ(launcher.pending.size(), 1u) << "a refresh right after a reader's fetch must fetch again";
  EXPECT_TRUE(answers.empty());
}

TEST_F(ServiceRefreshTest, SuccessSaysWhetherTheContentChanged) {
  serve_v1();
  std::vector<std::uint64_t> current_when_answered;
  auto probe = [&](RefreshResult r) {
    // Answered without the service's lock held, after the new version is current.
    current_when_answered.push_back(svc->current()->version);
    EXPECT_EQ(svc->status()["version"], r.version);
    answers[calls++].push_back(std::move(r));
  };
  svc->refresh(probe);
  launcher.succeed(kV1);  // the same bytes
  clock.advance(seconds(2));
  svc->refresh(probe);
  launcher.succeed(kV2);
  const auto all = answered_once(2);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].kind, Kind::kOk);
  EXPECT_FALSE(all[0].changed);
  EXPECT_EQ(all[0].version, 1u);
  EXPECT_EQ(all[0].bytes, std::string(kV1).size());
  EXPECT_EQ(all[0].sha256, sha256_hex(kV1));
  EXPECT_EQ(all[1].kind, Kind::kOk);
  EXPECT_TRUE(all[1].changed);
  EXPECT_EQ(all[1].version, 2u);
  EXPECT_EQ(all[1].bytes, std::string(kV2).size());
  EXPECT_EQ(all[1].sha256, sha256_hex(kV2));
  EXPECT_EQ(current_when_answered, (std::vector<std::uint64_t>{1, 2}));
}

TEST_F(ServiceRefreshTest, AFailedRefreshKeepsTheContentAndSaysWhy) {
  serve_v1();
  refresh();
  launcher.fail("irsa-svc: HTTP 503: busy");
  const auto all = answered_once(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, Kind::kFailed);
  EXPECT_THAT(all[0].why, HasSubstr("HTTP 503"));
  EXPECT_FALSE(all[0].changed);
  EXPECT_EQ(all[0].version, 1u);  // still served
  EXPECT_EQ(all[0].sha256, sha256_hex(kV1));
  EXPECT_EQ(svc->current()->bytes, kV1);
  EXPECT_EQ(svc->status()["state"], "ready");
}

TEST_F(ServiceRefreshTest, ASeededMountAnswersConflictWithoutAFetch) {
  ASSERT_EQ(svc->write(9, 0, kV1), 0);
  ASSERT_EQ(svc->flush(9), 0);
  ASSERT_EQ(svc->current()->source, ContentSource::kWrite);
  refresh();
  clock.advance(seconds(5));
  refresh();
  EXPECT_TRUE(launcher.pending.empty());
  for (const RefreshResult& r : answered_once(2)) {
    EXPECT_EQ(r.kind, Kind::kConflict);
    EXPECT_THAT(r.why, HasSubstr("write"));
    EXPECT_EQ(r.version, 1u);
  }
  EXPECT_EQ(svc->status()["fetches"], 0);
}

TEST_F(ServiceRefreshTest, ShutdownAnswersPendingRefreshes) {
  serve_v1();
  refresh();
  refresh();
  ASSERT_EQ(launcher.pending.size(), 1u);
  svc->shutdown();
  for (const RefreshResult& r : answered_once(2)) {
    EXPECT_EQ(r.kind, Kind::kShuttingDown);
    EXPECT_THAT(r.why, HasSubstr("shutting down"));
  }
  launcher.cancelled();  // the fetch ends afterwards: no second answer
  clock.advance(seconds(5));
  refresh();  // after shutdown: at once, no fetch
  EXPECT_TRUE(launcher.pending.empty());
  const auto all = answered_once(3);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].kind, Kind::kShuttingDown);
}

TEST_F(ServiceRefreshTest, AWritePublishedDuringARefreshAnswersConflict) {
  serve_v1();
  refresh();
  refresh();
  ASSERT_EQ(launcher.pending.size(), 1u);
  ASSERT_EQ(svc->write(9, 0, kV2), 0);  // a different text over served content: published at once
  ASSERT_EQ(svc->current()->source, ContentSource::kWrite);
  EXPECT_EQ(launcher.cancels, 1);
  // Answered at once, not when the cancelled fetch gets round to ending.
  for (const RefreshResult& r : answered_once(2)) {
    EXPECT_EQ(r.kind, Kind::kConflict);
    EXPECT_THAT(r.why, HasSubstr("write"));
  }
  launcher.succeed(kV1);  // ended before the cancel reached it
  answered_once(2);       // still once each
  EXPECT_EQ(svc->current()->bytes, kV2);
  refresh();
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(answered_once(3)[2].kind, Kind::kConflict);
}

TEST_F(ServiceRefreshTest, ARefreshJoinsTheFirstFetchStartedByAReader) {
  read(1);
  ASSERT_EQ(launcher.pending.size(), 1u);
  refresh();
  refresh();
  EXPECT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  ASSERT_TRUE(outcomes[1].content);
  for (const RefreshResult& r : answered_once(2)) {
    EXPECT_EQ(r.kind, Kind::kOk);
    EXPECT_EQ(r.version, 1u);
    EXPECT_TRUE(r.changed);
  }
  refresh();  // the fetch was awaited by refreshes: shared for 1 s
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(answered_once(3)[2].version, 1u);
}

TEST_F(ServiceRefreshTest, AFailedFirstFetchFailsItsRefreshesAndReaders) {
  read(1);
  refresh();
  launcher.fail("irsa-svc: HTTP 500");
  EXPECT_EQ(outcomes[1].error, EIO);
  const auto all = answered_once(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, Kind::kFailed);
  EXPECT_THAT(all[0].why, HasSubstr("HTTP 500"));
  EXPECT_EQ(all[0].version, 0u);
  EXPECT_TRUE(all[0].sha256.empty());
}

TEST_F(ServiceRefreshTest, ARefreshNeverWaitsPastTheFetchDeadline) {
  serve_v1();
  refresh();
  ASSERT_EQ(svc->next_wakeup(), clock.now() + seconds(10) + seconds(1));  // deadline + grace
  clock.advance(seconds(11) - milliseconds(1));
  svc->tick();
  EXPECT_TRUE(answers.empty());
  clock.advance(milliseconds(1));
  EXPECT_TICKER_SLEEPS();
  const auto all = answered_once(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, Kind::kFailed);
  EXPECT_THAT(all[0].why, HasSubstr("deadline"));
  launcher.succeed(kV2);  // very late
  answered_once(1);
}

TEST_F(ServiceRefreshTest, StatusCountsSuccessesAndRefreshesByTrigger) {
  refresh_ = seconds(30);
  make({});
  auto st = svc->status();
  EXPECT_EQ(st["fetch_successes"], 0);
  EXPECT_EQ(st["refreshes"], (nlohmann::ordered_json{{"signal", 0}, {"http", 0}, {"interval", 0}}));
  read(1);
  launcher.succeed(kV1);  // a first fetch: no refresh
  clock.advance(seconds(5));
  svc->refresh_now();
  launcher.fail("HTTP 500");
  clock.advance(seconds(5));
  refresh();
  refresh();
  launcher.succeed(kV2);
  clock.advance(seconds(30));
  svc->tick();  // the interval's refresh
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV2);
  st = svc->status();
  EXPECT_EQ(st["fetches"], 4);
  EXPECT_EQ(st["fetch_successes"], 3);
  EXPECT_EQ(st["failures"], 1);
  EXPECT_EQ(st["refreshes"]["signal"], 1);
  EXPECT_EQ(st["refreshes"]["http"], 2);
  EXPECT_EQ(st["refreshes"]["interval"], 1);
  // The names /metrics reads.
  const std::string metrics = render_metrics(st);
  EXPECT_THAT(metrics, HasSubstr("irsafs_fetches_total{outcome=\"success\"} 3\n"));
  EXPECT_THAT(metrics, HasSubstr("irsafs_fetches_total{outcome=\"failure\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("irsafs_refreshes_total{trigger=\"signal\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("irsafs_refreshes_total{trigger=\"http\"} 2\n"));
  EXPECT_THAT(metrics, HasSubstr("irsafs_refreshes_total{trigger=\"interval\"} 1\n"));
}

}  // namespace
}  // namespace irsafs
