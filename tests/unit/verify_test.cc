// Role verification (verify/): the config's web-identity roles, the STS request and the reading
// of its answers, and the verifier's outcomes, with a scripted STS and a clock that moves only
// when the verifier sleeps or a request takes time.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "app/verify_setup.h"
#include "http/metrics.h"
#include "verify/profiles.h"
#include "verify/sts.h"
#include "verify/verifier.h"

namespace irsafs {
namespace {

using namespace std::chrono_literals;

constexpr const char* kRoleA = "arn:aws:iam::111111111111:role/alpha";
constexpr const char* kRoleB = "arn:aws:iam::111111111112:role/beta";
constexpr const char* kRoleC = "arn:aws:iam::111111111113:role/gamma";

// ---------------------------------------------------------------------------------------------
// Fakes

// A fake clock several threads may share: sleeping moves time forward to the wake-up time.
class SharedFakeClock final : public Clock {
 public:
  TimePoint now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  WallTime wall_now() const override { return WallTime(std::chrono::seconds(1'800'000'000)) + (now() - TimePoint{}); }
  bool sleep_until(TimePoint t, std::stop_token stop) override {
    if (stop.stop_requested()) return false;
    std::lock_guard lock(mu_);
    sleeps.push_back(t - now_);
    if (t > now_) now_ = t;
    return true;
  }
  void advance(Duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
  }
  std::vector<Duration> sleeps;  // guarded by mu_

 private:
  mutable std::mutex mu_;
  TimePoint now_{std::chrono::hours(1)};
};

class FixedRandom final : public Random {
 public:
  double uniform01() override { return 0.5; }
};

std::string success_xml(const std::string& key = "ASIAFAKEKEY1") {
  return "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
         "<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:d:r"
         "</SubjectFromWebIdentityToken><AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/a/s</Arn>"
         "<AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>" +
         key + "</AccessKeyId><SecretAccessKey>SECRETKEYxyz</SecretAccessKey><SessionToken>SESSIONTOKENxyz"
               "</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
               "</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r</RequestId>"
               "</ResponseMetadata></AssumeRoleWithWebIdentityResponse>";
}

std::string error_xml(const std::string& code, const std::string& message) {
  return "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>" +
         code + "</Code><Message>" + message + "</Message></Error><RequestId>r</RequestId></ErrorResponse>";
}

HttpResponse answer(long status, std::string body) {
  HttpResponse r;
  r.outcome = HttpResponse::Outcome::kCompleted;
  r.status = status;
  r.body = std::move(body);
  return r;
}
HttpResponse allow() { return answer(200, success_xml()); }
HttpResponse deny() {
  return answer(403, error_xml("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"));
}
HttpResponse refused() {
  HttpResponse r;
  r.outcome = HttpResponse::Outcome::kTransportError;
  r.error = "Could not connect to server (Connection refused)";
  return r;
}

// Field `name` of a form body.
std::string form_field(const std::string& body, const std::string& name) {
  const std::string key = name + "=";
  std::size_t at = body.starts_with(key) ? 0 : body.find("&" + key);
  if (at == std::string::npos) return {};
  if (at != 0) ++at;
  const std::size_t end = body.find('&', at);
  return body.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
}

// STS answering each role from its own script (then its default); every request costs
// `latency` of fake time. Thread-safe: the verifier checks roles concurrently.
class FakeSts final : public Transport {
 public:
  explicit FakeSts(SharedFakeClock& clock) : clock_(clock) {}

  HttpResponse perform(const HttpRequest& r, std::stop_token stop) override {
    const std::string arn = decode(form_field(r.body, "RoleArn"));
    {
      std::unique_lock lock(mu_);
      bodies.push_back(r.body);
      timeouts.push_back(r.timeout);
      ++in_flight_;
      max_in_flight = std::max(max_in_flight, in_flight_);
      const int batch = arrived_++ / std::max(gather, 1);
      cv_.notify_all();
      if (gather > 0) {
        // Hold each request until its batch of `gather` has arrived, all in flight at once (or
        // give up after 10 s, real time: the test then fails on max_in_flight).
        cv_.wait_for(lock, 10s, [&] { return arrived_ >= (batch + 1) * gather || stop.stop_requested(); });
      }
      --in_flight_;
    }
    // Like a real transport, no request outlives its timeout.
    if (r.timeout && latency > *r.timeout) {
      clock_.advance(*r.timeout);
      HttpResponse late = refused();
      late.error = "Timeout was reached";
      late.timed_out = true;
      return late;
    }
    clock_.advance(latency);
    std::lock_guard lock(mu_);
    auto& script = scripts[arn];
    if (!script.empty()) {
      HttpResponse next = std::move(script.front());
      script.pop_front();
      return next;
    }
    return fallback();
  }

  static std::string decode(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }

  std::size_t requests() {
    std::lock_guard lock(mu_);
    return bodies.size();
  }

  std::map<std::string, std::deque<HttpResponse>> scripts;
  std::function<HttpResponse()> fallback = allow;
  Duration latency = 50ms;
  int gather = 0;
  std::vector<std::string> bodies;
  std::vector<std::optional<Duration>> timeouts;
  int max_in_flight = 0;

 private:
  SharedFakeClock& clock_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  int in_flight_ = 0;
  int arrived_ = 0;
};

class FixedSource final : public ConfigSource {
 public:
  explicit FixedSource(std::string content, bool ok = true) : content_(std::move(content)), ok_(ok) {}
  FetchResult fetch(std::stop_token) override {
    ++calls;
    FetchResult r;
    r.ok = ok_;
    if (ok_) r.content = content_;
    else r.error = "irsa-svc down";
    return r;
  }
  int calls = 0;

 private:
  std::string content_;
  bool ok_;
};

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "verify_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    token_file_ = dir_ + "/token";
    write_token("eyJ.first-token.sig");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void write_token(const std::string& token) { std::ofstream(token_file_, std::ios::trunc) << token; }

  std::string config(std::initializer_list<const char*> arns) const {
    std::string text = "[default]\nregion = us-west-2\n\n";
    int i = 0;
    for (const char* arn : arns) {
      const std::string n = std::to_string(i++);
      text += "[profile src_" + n + "]\nweb_identity_token_file = " + token_file_ + "\nrole_arn = " + arn +
              "\n\n[profile p" + n + "]\nsource_profile = src_" + n + "\nrole_arn = arn:aws:iam::2:role/x" + n +
              "\n\n";
    }
    return text;
  }

  VerifySettings settings(VerifyMode mode = VerifyMode::kOn) const {
    VerifySettings s;
    s.mode = mode;
    s.endpoint = "https://sts.us-west-2.amazonaws.com";
    s.deadline = 60s;
    s.margin = 1s;
    return s;
  }

  // A verifier around a source serving `content`; the fake STS stays reachable through sts_.
  std::unique_ptr<RoleVerifier> verifier(std::string content, VerifySettings s, bool source_ok = true) {
    auto sts = std::make_unique<FakeSts>(clock_);
    sts_ = sts.get();
    auto src = std::make_unique<FixedSource>(std::move(content), source_ok);
    source_ = src.get();
    return std::make_unique<RoleVerifier>(std::move(src), std::move(sts), std::move(s), clock_, random_);
  }

  static const RoleReport& role(const RoleVerifier& v, std::size_t i) {
    static std::vector<RoleReport> keep;
    keep = v.report().roles();
    return keep.at(i);
  }

  SharedFakeClock clock_;
  FixedRandom random_;
  FakeSts* sts_ = nullptr;
  FixedSource* source_ = nullptr;
  std::string dir_;
  std::string token_file_;
};

// ---------------------------------------------------------------------------------------------
// The roles of a config

TEST(VerifyProfiles, FirstHopOfEachChainDedupedInFileOrder) {
  const std::string text =
      "# comment\n[default]\nregion = us-west-2\n\n"
      "[profile src_a]\nweb_identity_token_file = /t\nrole_arn = arn:aws:iam::1:role/a\n\n"
      "[profile a]\nsource_profile = src_a\nrole_arn = arn:aws:iam::2:role/a\n\n"
      "[profile src_b]\r\nRole_Arn: arn:aws:iam::1:role/b\r\n  ; indented comment\r\nweb_identity_token_file=/t\r\n\r\n"
      "[profile again_a]\nweb_identity_token_file = /t\nrole_arn = arn:aws:iam::1:role/a\n"
      "[profile other_file]\nweb_identity_token_file = /u\nrole_arn = arn:aws:iam::1:role/a\n"
      "[sso-session s]\nweb_identity_token_file = /t\nrole_arn = arn:aws:iam::9:role/not-a-profile\n"
      "[bare]\nweb_identity_token_file = /t\nrole_arn = arn:aws:iam::9:role/not-a-profile-either\n"
      "[profile only_arn]\nrole_arn = arn:aws:iam::9:role/no-token\n";
  const auto roles = web_identity_roles(text);
  ASSERT_EQ(roles.size(), 3u);
  EXPECT_EQ(roles[0].role_arn, "arn:aws:iam::1:role/a");
  EXPECT_EQ(roles[0].token_file, "/t");
  EXPECT_EQ(roles[0].profiles, (std::vector<std::string>{"src_a", "again_a"}));
  EXPECT_EQ(roles[1].role_arn, "arn:aws:iam::1:role/b");
  EXPECT_EQ(roles[1].profiles, (std::vector<std::string>{"src_b"}));
  EXPECT_EQ(roles[2].token_file, "/u");
}

TEST(VerifyProfiles, DefaultSectionValuesAreInheritedAndContinuationsSkipped) {
  const std::string text =
      "[DEFAULT]\nweb_identity_token_file = /var/run/token\n"
      "[default]\nrole_arn = arn:aws:iam::1:role/d\n"
      "[profile nested]\ns3 =\n  role_arn = arn:aws:iam::9:role/inside-a-block\nregion = x\n"
      "[profile x]\nrole_arn = arn:aws:iam::1:role/x\n";
  const auto roles = web_identity_roles(text);
  ASSERT_EQ(roles.size(), 2u);
  EXPECT_EQ(roles[0].profiles, (std::vector<std::string>{"default"}));
  EXPECT_EQ(roles[0].token_file, "/var/run/token");
  EXPECT_EQ(roles[1].role_arn, "arn:aws:iam::1:role/x");
}

TEST(VerifyProfiles, GarbageGivesNoRoleAndNoCrash) {
  EXPECT_TRUE(web_identity_roles("").empty());
  EXPECT_TRUE(web_identity_roles("role_arn = a\nweb_identity_token_file = b\n").empty());
  EXPECT_TRUE(web_identity_roles(std::string("\0[\r]\n=", 6)).empty());
}

// ---------------------------------------------------------------------------------------------
// The request, the endpoint

TEST(VerifySts, RequestBodyIsBotocoresFormPercentEncoded) {
  const Secret token(std::string("eyJ.a+b/c=="));
  std::string body = assume_role_body("arn:aws:iam::1:role/a b", "irsafs-verify-1", token);
  EXPECT_EQ(body,
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b"
            "&RoleSessionName=irsafs-verify-1&WebIdentityToken=eyJ.a%2Bb%2Fc%3D%3D&DurationSeconds=900");
}

TEST(VerifySts, EndpointFromFlagEnvironmentRegionPartitionAndLegacy) {
  std::map<std::string, std::string> env;
  const StsEnvLookup lookup = [&env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.amazonaws.com");
  env["AWS_DEFAULT_REGION"] = "eu-west-1";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.eu-west-1.amazonaws.com");
  env["AWS_REGION"] = "cn-north-1";  // AWS_REGION first
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.cn-north-1.amazonaws.com.cn");
  env["AWS_REGION"] = "us-gov-west-1";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.us-gov-west-1.amazonaws.com");
  env["AWS_STS_REGIONAL_ENDPOINTS"] = "legacy";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.us-gov-west-1.amazonaws.com");
  env["AWS_REGION"] = "us-west-2";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.amazonaws.com");
  env["AWS_STS_REGIONAL_ENDPOINTS"] = "regional";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://sts.us-west-2.amazonaws.com");
  env["AWS_ENDPOINT_URL_STS"] = "https://vpce.example";
  EXPECT_EQ(resolve_sts_endpoint(std::nullopt, lookup), "https://vpce.example");
  EXPECT_EQ(resolve_sts_endpoint(std::string("http://127.0.0.1:1"), lookup), "http://127.0.0.1:1");
  env.erase("AWS_ENDPOINT_URL_STS");
  env["AWS_REGION"] = "us-west-2/../evil";
  EXPECT_THROW(resolve_sts_endpoint(std::nullopt, lookup), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Reading STS's answers

StsAnswer judge(long status, std::string body) { return judge_sts_body(status, body); }

TEST(VerifySts, OutcomeClasses) {
  EXPECT_EQ(judge(200, success_xml()).verdict, StsVerdict::kSuccess);
  auto a = judge(403, error_xml("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"));
  EXPECT_EQ(a.verdict, StsVerdict::kNotPropagated);
  EXPECT_EQ(a.code, "AccessDenied");
  EXPECT_EQ(a.message, "Not authorized to perform sts:AssumeRoleWithWebIdentity");
  EXPECT_EQ(judge(403, error_xml("AccessDenied", "Access to the region is denied")).verdict, StsVerdict::kPermanent);
  EXPECT_EQ(judge(400, error_xml("InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider")).verdict,
            StsVerdict::kTransient);
  EXPECT_EQ(judge(400, error_xml("InvalidIdentityToken", "Incorrect token audience")).verdict, StsVerdict::kPermanent);
  EXPECT_EQ(judge(400, error_xml("InvalidIdentityToken", "No OpenIDConnect provider found in your account")).verdict,
            StsVerdict::kPermanent);
  EXPECT_EQ(judge(400, error_xml("ExpiredTokenException", "Token expired")).verdict, StsVerdict::kPermanent);
  EXPECT_EQ(judge(400, error_xml("ValidationError", "bad arn")).verdict, StsVerdict::kPermanent);
  EXPECT_EQ(judge(400, error_xml("IDPCommunicationError", "x")).verdict, StsVerdict::kTransient);
  EXPECT_EQ(judge(400, error_xml("Throttling", "Rate exceeded")).verdict, StsVerdict::kTransient);
  EXPECT_EQ(judge(503, "<html>Service Unavailable</html>").verdict, StsVerdict::kTransient);
  EXPECT_EQ(judge(502, "").verdict, StsVerdict::kTransient);
  // Namespace prefixes are allowed.
  EXPECT_EQ(judge(200, "<s:AssumeRoleWithWebIdentityResponse xmlns:s=\"u\"><s:AssumeRoleWithWebIdentityResult>"
                       "<s:Credentials><s:AccessKeyId>K</s:AccessKeyId></s:Credentials>"
                       "</s:AssumeRoleWithWebIdentityResult></s:AssumeRoleWithWebIdentityResponse>")
                .verdict,
            StsVerdict::kSuccess);
}

TEST(VerifySts, MalformedAndUnexpectedAnswersArePermanentUnlessTheStatusSaysRetry) {
  for (const std::string& body :
       {std::string("<AssumeRoleWithWebIdentityResponse><unclosed>"), std::string("not xml at all"),
        std::string(""), std::string("<Other/>"),
        std::string("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult/></AssumeRoleWithWebIdentityResponse>"),
        // Text that mentions the right names is not a document that has them.
        "<x>AssumeRoleWithWebIdentityResponse " + success_xml() + "</x>"}) {
    const StsAnswer a = judge(200, body);
    EXPECT_EQ(a.verdict, StsVerdict::kPermanent) << body;
    EXPECT_EQ(a.code, "MalformedResponse") << body;
  }
  // A success document with a non-200 status is not a success.
  EXPECT_NE(judge(500, success_xml()).verdict, StsVerdict::kSuccess);
}

TEST(VerifySts, HugeAndDeepBodiesAreJudgedWithoutCrashing) {
  std::string huge = success_xml();
  huge.insert(huge.find("<Credentials>"), std::string(5 << 20, ' '));
  EXPECT_EQ(judge(200, huge).verdict, StsVerdict::kSuccess);
  std::string deep;
  for (int i = 0; i < 200000; ++i) deep += "<a>";
  EXPECT_EQ(judge(200, deep).verdict, StsVerdict::kPermanent);
  std::string long_message = error_xml("AccessDenied", std::string(100000, 'm') + " sts:AssumeRoleWithWebIdentity");
  const StsAnswer a = judge(403, long_message);
  EXPECT_LE(a.message.size(), 200u);
}

TEST(VerifySts, TheBodyIsWipedWholeAfterJudging) {
  for (const std::string& text : {success_xml("ASIAWIPEME"), std::string("<broken"), error_xml("Throttling", "x")}) {
    std::string body = text;
    const char* data = body.data();
    const std::size_t capacity = body.capacity();
    const StsAnswer a = judge_sts_body(200, body);
    EXPECT_TRUE(body.empty());
    EXPECT_EQ(body.data(), data);
    EXPECT_TRUE(std::all_of(data, data + capacity, [](char c) { return c == 0; })) << text;
    EXPECT_EQ(a.message.find("SECRETKEY"), std::string::npos);
  }
  HttpResponse r = answer(200, success_xml());
  const char* data = r.body.data();
  const std::size_t capacity = r.body.capacity();
  EXPECT_EQ(judge_sts_response(r).verdict, StsVerdict::kSuccess);
  EXPECT_TRUE(std::all_of(data, data + capacity, [](char c) { return c == 0; }));
}

TEST(VerifySts, TransportOutcomes) {
  HttpResponse r = refused();
  EXPECT_EQ(judge_sts_response(r).verdict, StsVerdict::kUnreachable);
  r = refused();
  r.permanent = true;  // a certificate that does not verify
  EXPECT_EQ(judge_sts_response(r).verdict, StsVerdict::kPermanent);
  r = {};
  r.outcome = HttpResponse::Outcome::kTooLarge;
  r.status = 200;
  EXPECT_EQ(judge_sts_response(r).verdict, StsVerdict::kPermanent);
  r.status = 503;
  EXPECT_EQ(judge_sts_response(r).verdict, StsVerdict::kTransient);
}

// ---------------------------------------------------------------------------------------------
// The verifier

TEST_F(VerifyTest, TwoSuccessesInARowVerifyAndTheContentIsReturnedUnchanged) {
  const std::string text = config({kRoleA});
  auto v = verifier(text, settings());
  const FetchResult r = v->fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.content, text);
  EXPECT_EQ(sts_->requests(), 2u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kVerified);
  EXPECT_EQ(role(*v, 0).attempts, 2);
  EXPECT_EQ(role(*v, 0).profiles, (std::vector<std::string>{"src_0"}));
  // Exactly the request botocore makes, with the token read from the file.
  const std::string& body = sts_->bodies[0];
  EXPECT_EQ(form_field(body, "Action"), "AssumeRoleWithWebIdentity");
  EXPECT_EQ(form_field(body, "Version"), "2011-06-15");
  EXPECT_EQ(FakeSts::decode(form_field(body, "RoleArn")), kRoleA);
  EXPECT_EQ(form_field(body, "WebIdentityToken"), "eyJ.first-token.sig");
  EXPECT_EQ(form_field(body, "DurationSeconds"), "900");
  EXPECT_EQ(form_field(body, "RoleSessionName"), "irsafs-verify-1800003600");
}

TEST_F(VerifyTest, DeniedWhileIamPropagatesThenVerifiedWithGrowingBackoff) {
  auto v = verifier(config({kRoleA}), settings());
  for (int i = 0; i < 5; ++i) sts_->scripts[kRoleA].push_back(deny());
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 7u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kVerified);
  EXPECT_EQ(role(*v, 0).last_error_code, "AccessDenied");
  // ~0.5 s growing to 5 s (U(0.5, 1) of the window; the fake random gives 0.75 of it).
  std::vector<Duration> expected = {375ms, 750ms, 1500ms, 3000ms, 3750ms};
  std::vector<Duration> sleeps(clock_.sleeps.begin(), clock_.sleeps.begin() + 5);
  EXPECT_EQ(sleeps, expected);
}

TEST_F(VerifyTest, AFlipAllowDenyAllowNeedsTwoFreshSuccesses) {
  auto v = verifier(config({kRoleA}), settings());
  sts_->scripts[kRoleA] = {allow(), deny(), allow(), deny(), allow(), allow()};
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 6u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kVerified);
}

TEST_F(VerifyTest, TheDeadlineReleasesTheContentUnverifiedAndIntact) {
  VerifySettings s = settings();
  s.deadline = 10s;
  s.margin = 1s;
  // One worker, B first: with several, one may start late while the fake time runs as fast as
  // the sleeps of those already running (concurrency has its own test).
  s.concurrency = 1;
  const std::string text = config({kRoleB, kRoleA});
  auto v = verifier(text, s);
  sts_->fallback = deny;
  sts_->scripts[kRoleB] = {allow(), allow()};
  const TimePoint start = clock_.now();
  const FetchResult r = v->fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.content, text);
  EXPECT_LE(clock_.now() - start, 9s);
  EXPECT_EQ(role(*v, 1).state, RoleState::kUnverified);
  EXPECT_EQ(role(*v, 1).last_error_code, "AccessDenied");
  EXPECT_GE(role(*v, 1).attempts, 4);
  EXPECT_EQ(role(*v, 0).state, RoleState::kVerified);
  // No request may outlast the release.
  for (const auto& t : sts_->timeouts) EXPECT_LE(*t, 9s);
  const auto j = v->report().to_json();
  EXPECT_EQ(j["roles"][1]["verified"], false);
  EXPECT_EQ(j["roles"][1]["state"], "unverified");
  EXPECT_EQ(j["roles"][0]["verified"], true);
}

TEST_F(VerifyTest, UnreachableStsIsGivenUpAfterFiveSecondsForEveryRole) {
  VerifySettings s = settings();
  auto v = verifier(config({kRoleA, kRoleB}), s);
  sts_->fallback = refused;
  const TimePoint start = clock_.now();
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_GE(clock_.now() - start, 5s);
  EXPECT_LT(clock_.now() - start, 7s);
  EXPECT_EQ(role(*v, 0).state, RoleState::kUnverified);
  EXPECT_EQ(role(*v, 1).state, RoleState::kUnverified);
  EXPECT_EQ(role(*v, 0).last_error_code, "Unreachable");
}

TEST_F(VerifyTest, AnUnansweredRequestCountsItsWholeTimeTowardsTheGiveUp) {
  VerifySettings s = settings();
  auto v = verifier(config({kRoleA}), s);
  HttpResponse timed_out = refused();
  timed_out.error = "Timeout was reached";
  timed_out.timed_out = true;
  sts_->latency = 5s;  // each request runs into its timeout
  sts_->fallback = [timed_out] { return timed_out; };
  const TimePoint start = clock_.now();
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 1u);
  EXPECT_EQ(clock_.now() - start, 5s);
  EXPECT_EQ(role(*v, 0).state, RoleState::kUnverified);
}

TEST_F(VerifyTest, PermanentErrorsStopAtOnce) {
  auto v = verifier(config({kRoleA}), settings());
  sts_->scripts[kRoleA] = {answer(400, error_xml("InvalidIdentityToken", "Incorrect token audience"))};
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 1u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kPermanent);
  EXPECT_EQ(role(*v, 0).last_error_code, "InvalidIdentityToken");
  EXPECT_NE(role(*v, 0).why.find("Incorrect token audience"), std::string::npos);
}

TEST_F(VerifyTest, TransientErrorsAreRetriedAndThrottlingKeepsASuccessCounted) {
  auto v = verifier(config({kRoleA}), settings());
  sts_->scripts[kRoleA] = {answer(400, error_xml("Throttling", "Rate exceeded")),
                           answer(503, "<html>busy</html>"),
                           answer(400, error_xml("IDPCommunicationError", "x")),
                           allow(),
                           answer(400, error_xml("Throttling", "Rate exceeded")),
                           allow()};
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 6u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kVerified);
}

TEST_F(VerifyTest, TheTokenIsReadFreshForEveryAttempt) {
  auto v = verifier(config({kRoleA}), settings());
  sts_->scripts[kRoleA] = {deny()};
  // The file changes while the second request is answered: the third must carry the new token.
  sts_->fallback = [this] {
    write_token("eyJ.second-token.sig");
    return allow();
  };
  ASSERT_TRUE(v->fetch().ok);
  ASSERT_EQ(sts_->requests(), 3u);
  EXPECT_EQ(form_field(sts_->bodies[0], "WebIdentityToken"), "eyJ.first-token.sig");
  EXPECT_EQ(form_field(sts_->bodies[1], "WebIdentityToken"), "eyJ.first-token.sig");
  EXPECT_EQ(form_field(sts_->bodies[2], "WebIdentityToken"), "eyJ.second-token.sig");
}

TEST_F(VerifyTest, AnUnreadableTokenFileIsPermanentWhenOn) {
  std::filesystem::remove(token_file_);
  auto v = verifier(config({kRoleA}), settings(VerifyMode::kOn));
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 0u);
  EXPECT_EQ(role(*v, 0).state, RoleState::kPermanent);
  EXPECT_EQ(role(*v, 0).last_error_code, "TokenFileUnreadable");
}

TEST_F(VerifyTest, AutoIsOffWithoutAReadableTokenFileAndOnWithOne) {
  std::filesystem::remove(token_file_);
  auto v = verifier(config({kRoleA}), settings(VerifyMode::kAuto));
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 0u);
  EXPECT_EQ(v->report().to_json()["enabled"], false);
  write_token("eyJ.now-there.sig");
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->requests(), 2u);
  EXPECT_EQ(v->report().to_json()["enabled"], true);
}

TEST_F(VerifyTest, OffFailedFetchesAndConfigsWithoutRolesCallNoSts) {
  auto off = verifier(config({kRoleA}), settings(VerifyMode::kOff));
  EXPECT_TRUE(off->fetch().ok);
  EXPECT_EQ(sts_->requests(), 0u);
  auto failing = verifier(config({kRoleA}), settings(), /*source_ok=*/false);
  const FetchResult r = failing->fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "irsa-svc down");
  EXPECT_EQ(sts_->requests(), 0u);
  auto none = verifier("[default]\nregion = x\n", settings());
  EXPECT_TRUE(none->fetch().ok);
  EXPECT_EQ(sts_->requests(), 0u);
}

TEST_F(VerifyTest, RolesAreCheckedConcurrently) {
  auto v = verifier(config({kRoleA, kRoleB, kRoleC}), settings());
  sts_->gather = 3;  // each request waits until all three roles have one in flight
  ASSERT_TRUE(v->fetch().ok);
  EXPECT_EQ(sts_->max_in_flight, 3);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(role(*v, i).state, RoleState::kVerified) << i;
}

TEST_F(VerifyTest, AStopCancelsTheFetch) {
  auto v = verifier(config({kRoleA}), settings());
  std::stop_source stop;
  sts_->fallback = [&stop] {
    stop.request_stop();
    return deny();
  };
  const FetchResult r = v->fetch(stop.get_token());
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.cancelled);
  EXPECT_TRUE(r.content.empty());
}

TEST_F(VerifyTest, TheReportShowsStateAttemptsAndNoCredentials) {
  auto v = verifier(config({kRoleA}), settings());
  sts_->scripts[kRoleA] = {deny()};
  ASSERT_TRUE(v->fetch().ok);
  const auto j = v->report().to_json();
  EXPECT_EQ(j["mode"], "on");
  EXPECT_EQ(j["enabled"], true);
  EXPECT_EQ(j["running"], false);
  EXPECT_EQ(j["attempts_total"], 3);
  EXPECT_EQ(j["runs"], 1);
  EXPECT_TRUE(j["total_seconds"].is_number());
  EXPECT_EQ(j["roles"][0]["role_arn"], kRoleA);
  EXPECT_EQ(j["roles"][0]["state"], "verified");
  EXPECT_EQ(j["roles"][0]["attempts"], 3);
  EXPECT_EQ(j["roles"][0]["last_error_code"], "AccessDenied");
  const std::string dumped = j.dump();
  EXPECT_EQ(dumped.find("SECRETKEY"), std::string::npos);
  EXPECT_EQ(dumped.find("ASIAFAKE"), std::string::npos);
  EXPECT_EQ(dumped.find("first-token"), std::string::npos);
}

TEST_F(VerifyTest, MetricsShowEachRolesStateAndTheAttempts) {
  auto v = verifier(config({kRoleA, kRoleB}), settings());
  sts_->scripts[kRoleB] = {answer(400, error_xml("InvalidIdentityToken", "Incorrect token audience"))};
  ASSERT_TRUE(v->fetch().ok);
  nlohmann::ordered_json status = {{"state", "ready"}};
  status["verification"] = v->report().to_json();
  const std::string text = render_metrics(status);
  for (const std::string line : {
           "# TYPE irsafs_role_verification gauge",
           "irsafs_role_verification{role_arn=\"arn:aws:iam::111111111111:role/alpha\",state=\"verified\"} 1",
           "irsafs_role_verification{role_arn=\"arn:aws:iam::111111111111:role/alpha\",state=\"permanent\"} 0",
           "irsafs_role_verification{role_arn=\"arn:aws:iam::111111111112:role/beta\",state=\"permanent\"} 1",
           "irsafs_role_verification{role_arn=\"arn:aws:iam::111111111112:role/beta\",state=\"verified\"} 0",
           "# TYPE irsafs_role_verification_attempts_total counter",
           "irsafs_role_verification_attempts_total 3",
           "# TYPE irsafs_role_verification_duration_seconds gauge",
       }) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << line << "\n" << text;
  }
}

TEST(VerifySetup, FlagsAndEnvironmentResolve) {
  std::map<std::string, std::string> env;
  const EnvLookup lookup = [&env](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  ResolvedOptions options;
  options.fetch.deadline = 60s;
  options.transport.timeout = 10s;
  options.transport.tls.insecure = true;
  VerifyArgs args;
  VerifyPlan plan = resolve_verify(args, options, lookup);
  EXPECT_EQ(plan.settings.mode, VerifyMode::kAuto);
  EXPECT_EQ(plan.settings.endpoint, "https://sts.amazonaws.com");
  EXPECT_EQ(plan.settings.deadline, 60s);
  EXPECT_EQ(plan.settings.margin, 1s);
  EXPECT_EQ(plan.sts_transport.timeout, 5s);                // at most the unreachable give-up
  EXPECT_FALSE(plan.sts_transport.tls.insecure);            // --insecure is for irsa-svc only
  EXPECT_TRUE(plan.sts_transport.tls.ca_pem.empty());       // not irsa-svc's CA either
  EXPECT_EQ(plan.sts_transport.max_body, 64u * 1024);

  env["AWS_REGION"] = "eu-west-1";
  env["AWS_CA_BUNDLE"] = "/etc/corp-ca.pem";
  options.fetch.deadline = 4s;
  options.transport.timeout = 2s;
  args.mode = "on";
  plan = resolve_verify(args, options, lookup);
  EXPECT_EQ(plan.settings.mode, VerifyMode::kOn);
  EXPECT_EQ(plan.settings.endpoint, "https://sts.eu-west-1.amazonaws.com");
  EXPECT_EQ(plan.settings.margin, 200ms);
  EXPECT_EQ(plan.sts_transport.timeout, 2s);
  EXPECT_EQ(plan.sts_transport.tls.ca_file, "/etc/corp-ca.pem");

  args.sts_endpoint = "sts.local:8080";
  EXPECT_THROW(resolve_verify(args, options, lookup), UsageError);
  args.sts_endpoint = "http://127.0.0.1:8080";
  EXPECT_EQ(resolve_verify(args, options, lookup).settings.endpoint, "http://127.0.0.1:8080");
  args.sts_endpoint.reset();
  env["AWS_REGION"] = "no such region";
  EXPECT_THROW(resolve_verify(args, options, lookup), UsageError);
  args.mode = "off";  // off: the region is not looked at
  EXPECT_EQ(resolve_verify(args, options, lookup).settings.mode, VerifyMode::kOff);
  args.mode = "sometimes";
  EXPECT_THROW(resolve_verify(args, options, lookup), UsageError);
}

}  // namespace
}  // namespace irsafs
