#include "fetcher/fetcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sstream>

#include "common/text.h"
#include "fakes.h"

namespace irsafs {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::FakeClock;
using testing::FakeRandom;
using testing::ScriptedTransport;

constexpr const char* kToken = "http://127.0.0.1:8899/access-token";
constexpr const char* kEndpoint = "https://irsa/map_iam_roles_to_pod_sa";

class FetcherTest : public ::testing::Test {
 protected:
  FetchSettings settings() {
    FetchSettings s;
    s.endpoint = kEndpoint;
    s.token_url = kToken;
    s.run_id = "run-1";
    s.deadline = seconds(60);
    return s;
  }
  FetchResult fetch() {
    Fetcher f(settings(), transport, clock, random);
    return f.fetch();
  }

  FakeClock clock;
  FakeRandom random{0.5};
  ScriptedTransport transport{kToken, &clock};
};

TEST_F(FetcherTest, SuccessSendsTokenRunIdAndNoUnknownWorkloadType) {
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.content, transport.default_body);
  EXPECT_EQ(r.requests, 1);
  EXPECT_EQ(r.token_requests, 1);
  ASSERT_EQ(transport.seen.size(), 2u);
  EXPECT_EQ(transport.seen[0].url, kToken);
  EXPECT_EQ(transport.seen[1].bearer, "token-1");
  const auto body = nlohmann::json::parse(transport.seen[1].body);
  EXPECT_EQ(body, nlohmann::json({{"run_id", "run-1"}}));
}

TEST_F(FetcherTest, WorkloadTypeIsSentWhenKnown) {
  FetchSettings s = settings();
  s.workload_type = "cluster-worker";
  EXPECT_EQ(nlohmann::json::parse(request_body(s)),
            nlohmann::json({{"run_id", "run-1"}, {"irsa_workload_type", "cluster-worker"}}));
}

TEST_F(FetcherTest, RetriesServerErrorsWithGrowingFullJitterAndAFreshTokenEachTime) {
  transport.post_script = {ScriptedTransport::status(500, "oops"), ScriptedTransport::status(502),
                           ScriptedTransport::transport_error("Connection refused"),
                           ScriptedTransport::status(408), ScriptedTransport::status(429)};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.requests, 6);
  EXPECT_EQ(r.token_requests, 6);
  // base 1.5 s, growth 1.5, times U = 0.5.
  EXPECT_EQ(clock.sleeps, (std::vector<Duration>{milliseconds(750), microseconds(1125000), microseconds(1687500),
                                                 microseconds(2531250), microseconds(3796875)}));
  for (int i = 1; i < 6; ++i) EXPECT_EQ(transport.seen[2 * i + 1].bearer, "token-" + std::to_string(i + 1));
}

TEST_F(FetcherTest, RetryAfterSecondsSetsThePace) {
  transport.post_script = {ScriptedTransport::status(503, "busy", seconds(3))};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(clock.sleeps, (std::vector<Duration>{milliseconds(4500)}));  // 3 + U(0,3)
}

TEST_F(FetcherTest, Unauthorized401GetsExactlyOneFreshTokenAndOneMoreTry) {
  transport.post_script = {ScriptedTransport::status(401, "expired")};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.requests, 2);
  EXPECT_EQ(r.token_requests, 2);
  EXPECT_TRUE(clock.sleeps.empty());
  EXPECT_EQ(transport.seen[3].bearer, "token-2");
}

TEST_F(FetcherTest, Unauthorized401TwiceFails) {
  transport.post_script = {ScriptedTransport::status(401, "no"), ScriptedTransport::status(401, "still no")};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.requests, 2);
  EXPECT_THAT(r.error, HasSubstr("HTTP 401: still no"));
}

TEST_F(FetcherTest, Other4xxFailAtOnceNamingStatusAndFirstBodyLine) {
  transport.post_script = {ScriptedTransport::status(403, "Forbidden: role not mapped\nsecond line")};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.requests, 1);
  EXPECT_THAT(r.error, HasSubstr("HTTP 403: Forbidden: role not mapped"));
  EXPECT_THAT(r.error, Not(HasSubstr("second line")));
}

TEST_F(FetcherTest, InvalidBodiesAreRetriedAndNamed) {
  transport.post_script = {ScriptedTransport::ok("<!DOCTYPE html>\n<html></html>\n"),
                           ScriptedTransport::ok("{\"error\": \"x\"}"), ScriptedTransport::ok("")};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.requests, 4);
}

TEST_F(FetcherTest, GivesUpAtTheDeadlineWithTheLastReason) {
  transport.latency = milliseconds(400);
  transport.post_script.assign(100, ScriptedTransport::status(503, "Service Unavailable"));
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, HasSubstr("HTTP 503: Service Unavailable"));
  EXPECT_THAT(r.error, HasSubstr("no time left before the deadline"));
  EXPECT_LE(r.elapsed, seconds(60));
  // Each request is told how long it may take at most: what is left of the deadline.
  for (const auto& s : transport.seen) EXPECT_LE(*s.timeout, seconds(60));
  EXPECT_LT(*transport.seen.back().timeout, seconds(60));
}

TEST_F(FetcherTest, TheLastBackoffIsShortenedSoAFinalAttemptFits) {
  FetchSettings s = settings();
  s.deadline = seconds(3);
  s.retry = RetryPolicy{.base = milliseconds(500), .growth = 2.0, .cap = seconds(20)};
  random.set(1.0);  // windows 0.5, 1, 2 s: the third would end past the deadline
  transport.post_script.assign(100, ScriptedTransport::status(500, "boom"));
  Fetcher f(s, transport, clock, random);
  FetchResult r = f.fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, HasSubstr("HTTP 500: boom"));  // the real reason, not a timeout
  // The third sleep is cut to end when the last attempt may still start: 1 s before the deadline.
  EXPECT_EQ(clock.sleeps, (std::vector<Duration>{milliseconds(500), milliseconds(1000), milliseconds(500)}));
  EXPECT_EQ(r.requests, 4);
  EXPECT_EQ(clock.now() - (TimePoint{std::chrono::hours(1)}), seconds(2));
}

TEST_F(FetcherTest, ARetryAfterBeyondTheDeadlineEndsTheFetch) {
  transport.post_script = {ScriptedTransport::status(503, "busy", seconds(120))};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.requests, 1);
  EXPECT_THAT(r.error, HasSubstr("Retry-After"));
}

TEST_F(FetcherTest, CertificateFailuresAreNotRetried) {
  HttpResponse bad = ScriptedTransport::transport_error("SSL certificate problem: unable to get local issuer certificate");
  bad.permanent = true;
  transport.post_script = {bad};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.requests, 1);
  EXPECT_THAT(r.error, HasSubstr("certificate"));
}

TEST_F(FetcherTest, TokenEndpointFailuresAreNamedAndRetried) {
  transport.token_script = {ScriptedTransport::status(500, "proxy down"),
                            ScriptedTransport::transport_error("Connection refused")};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.token_requests, 3);
  EXPECT_EQ(r.requests, 1);
}

TEST_F(FetcherTest, TokenNeverAppearsInErrors) {
  transport.token_script = {ScriptedTransport::ok("SECRET-TOKEN-123\n")};
  transport.post_script = {ScriptedTransport::status(403, "denied")};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(transport.seen[1].bearer, "SECRET-TOKEN-123");  // trailing newline dropped
  EXPECT_THAT(r.error, Not(HasSubstr("SECRET")));
}

// Found by fuzz/response_fuzz: a proxy echoing the request must not put the token in a message.
TEST_F(FetcherTest, ATokenEchoedInAnErrorBodyIsRedacted) {
  transport.token_script = {ScriptedTransport::ok("fuzz-token-7c1f2e")};
  transport.post_script = {ScriptedTransport::status(403, "Authorization: Bearer fuzz-token-7c1f2e\t0")};
  FetchResult r = fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, Not(HasSubstr("fuzz-token")));
  EXPECT_THAT(r.error, HasSubstr("Bearer [redacted]"));
}

TEST_F(FetcherTest, StopCancelsDuringBackoff) {
  transport.post_script = {ScriptedTransport::status(503)};
  std::stop_source stop;
  stop.request_stop();
  Fetcher f(settings(), transport, clock, random);
  FetchResult r = f.fetch(stop.get_token());
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.cancelled);
}

// --- issue 9 -----------------------------------------------------------------------------

// Item 5: an error body cut at 120 bytes inside a character (119 x 'E' + 'é'), or holding bytes
// that are not UTF-8, made an error text that .status could not render (JSON needs UTF-8).
TEST_F(FetcherTest, StatusBreaksOnAnErrorBodyCutInsideACharacter) {
  transport.token_script = {ScriptedTransport::status(500, std::string(119, 'E') + "\xC3\xA9 more")};
  transport.post_script = {ScriptedTransport::status(500, "\xff\xfe\x80 raw \xC3 bytes\x01")};
  FetchResult r = fetch();
  ASSERT_TRUE(r.ok);  // both retried; the messages went to the log
  transport.token_script = {};
  transport.post_script = {};
  for (const std::string& body : {std::string(119, 'E') + "\xC3\xA9", std::string(118, 'E') + "\xE2\x82\xAC",
                                  std::string("\xff\xfe\x80 raw \xC3 bytes\x01"), std::string("\xed\xa0\x80")}) {
    transport.post_script = {ScriptedTransport::status(403, body)};
    r = fetch();
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(invalid_utf8_at(r.error), std::nullopt) << ::testing::PrintToString(r.error);
    EXPECT_NO_THROW(nlohmann::json({{"last_error", r.error}}).dump()) << ::testing::PrintToString(r.error);
    EXPECT_THAT(r.error, HasSubstr("HTTP 403"));
  }
  transport.post_script = {ScriptedTransport::status(403, std::string(119, 'E') + "\xC3\xA9")};
  r = fetch();
  EXPECT_THAT(r.error, HasSubstr(std::string(119, 'E') + "..."));  // cut before the 'é', marked
}

// Item 9: "Retry-After: 0" (or a date in the past) was taken as a zero delay: a retry storm.
TEST_F(FetcherTest, RetryAfterZeroMakesARetryStorm) {
  transport.latency = milliseconds(5);  // the storm ends at the deadline instead of never
  // libcurl gives 0 for both; a transport that passes a zero or negative delay is ignored too.
  for (Duration value : {Duration::zero(), Duration(-seconds(5))}) {
    transport.post_script = {};
    for (int i = 0; i < 1000; ++i) transport.post_script.push_back(ScriptedTransport::status(503, "busy", value));
    transport.post_calls = 0;
    clock.sleeps.clear();
    FetchSettings s = settings();
    s.deadline = seconds(3);
    Fetcher f(s, transport, clock, random);
    FetchResult r = f.fetch();
    EXPECT_FALSE(r.ok);
    EXPECT_LE(r.requests, 4) << value.count();  // as without the header (backoff 0.75 s, 1.125 s, ...)
    for (Duration d : clock.sleeps) EXPECT_GT(d, Duration::zero()) << value.count();
    // It ran out of time: the Retry-After is not what ended it.
    EXPECT_THAT(r.error, Not(HasSubstr("Retry-After"))) << value.count();
    EXPECT_THAT(r.error, HasSubstr("no time left before the deadline")) << value.count();
  }
}

// Item 10: the first line of an invalid 200 body was logged at debug; it may be a secret.
TEST_F(FetcherTest, ConfigTextOfAnInvalidBodyIsLogged) {
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  transport.post_script = {ScriptedTransport::ok("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n[default]\n"),
                           ScriptedTransport::ok("[default]\nregion = x\nAWS_SECRET = abc\njunk wJalrXUtnFEMI\n")};
  FetchResult r = fetch();
  spdlog::set_default_logger(previous);
  ASSERT_TRUE(r.ok);
  const std::string log = out.str();
  EXPECT_THAT(log, HasSubstr("line 1"));  // the rule broken and where
  EXPECT_THAT(log, Not(HasSubstr("wJalr")));
  EXPECT_THAT(log, Not(HasSubstr("aws_secret_access_key")));
  EXPECT_THAT(log, Not(HasSubstr("AWS_SECRET")));
}

}  // namespace
}  // namespace irsafs
