// OidcAuthenticator (auth/oidc_authenticator.h): the head's identity from its own token file,
// the issuer's keys from OIDC discovery (a fake transport) or a JWKS file, prefetched at start,
// re-read at most once a minute for an unknown kid (a fake clock), 503 when they cannot be had,
// and one log line per refusal that never holds the token.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "auth/oidc_authenticator.h"
#include "fakes.h"
#include "jwt_test_keys.h"

namespace irsafs {
namespace {

using nlohmann::json;
using testing::ec_key;
using testing::good_claims;
using testing::jwks_of;
using testing::rsa_key;
using testing::sign_token;
using testing::with_bad_signature;

constexpr const char* kDiscoveryUrl =
    "https://oidc.eks.us-west-2.amazonaws.com/id/TESTCLUSTER/.well-known/openid-configuration";
constexpr const char* kJwksUrl = "https://oidc.eks.us-west-2.amazonaws.com/id/TESTCLUSTER/keys";

// The issuer as a transport: the discovery document and the JWKS, both replaceable; requests
// counted; a gate that holds requests until the test opens it (or the stop token fires).
class FakeIssuer final : public Transport {
 public:
  FakeIssuer() {
    set(kDiscoveryUrl, 200, json{{"issuer", testing::kTestIssuer}, {"jwks_uri", kJwksUrl}}.dump());
    set(kJwksUrl, 200, jwks_of({&rsa_key(), &ec_key()}));
  }

  HttpResponse perform(const HttpRequest& request, std::stop_token stop) override {
    std::unique_lock lock(mu_);
    ++requests_;
    ++in_flight_;
    cv_.notify_all();
    cv_.wait(lock, stop, [&] { return open_; });
    --in_flight_;
    HttpResponse r;
    if (stop.stop_requested()) {
      r.outcome = HttpResponse::Outcome::kCancelled;
      return r;
    }
    const auto it = answers_.find(request.url);
    r.outcome = HttpResponse::Outcome::kCompleted;
    r.status = it == answers_.end() ? 404 : it->second.first;
    r.body = it == answers_.end() ? "not found" : it->second.second;
    return r;
  }

  void set(const std::string& url, long status, std::string body) {
    std::lock_guard lock(mu_);
    answers_[url] = {status, std::move(body)};
  }
  int requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  void close_gate() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void open_gate() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Waits until a request is held at the closed gate.
  bool wait_held() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return in_flight_ > 0; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::map<std::string, std::pair<long, std::string>> answers_;
  int requests_ = 0;
  int in_flight_ = 0;
  bool open_ = true;
};

// A check's answer: whether it came before check() returned, and the result.
struct Answer {
  bool at_once = false;
  AuthResult result;
};

class Pending {
 public:
  explicit Pending(Authenticator& auth, const std::string& authorization) {
    std::thread::id caller = std::this_thread::get_id();
    auto promise = std::make_shared<std::promise<std::pair<std::thread::id, AuthResult>>>();
    future_ = promise->get_future();
    auth.check(authorization, [promise](AuthResult r) { promise->set_value({std::this_thread::get_id(), std::move(r)}); });
    // A result set by now on the caller's thread came at once.
    at_once_ = future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    caller_ = caller;
  }
  bool answered() { return future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
  Answer get() {
    Answer a;
    if (future_.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      ADD_FAILURE() << "check() was never answered";
      return a;
    }
    auto [thread, result] = future_.get();
    a.at_once = at_once_ && thread == caller_;
    a.result = std::move(result);
    return a;
  }

 private:
  std::future<std::pair<std::thread::id, AuthResult>> future_;
  bool at_once_ = false;
  std::thread::id caller_;
};

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("irsafs-auth-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    settings.token_file = (dir_ / "token").string();
    write_head_token(good_claims(clock.wall_now()));
    auto owned = std::make_unique<FakeIssuer>();
    issuer = owned.get();
    issuer_owned_ = std::move(owned);
  }
  void TearDown() override {
    auth.reset();
    std::filesystem::remove_all(dir_);
  }

  // Replaces a file the way kubelet does: a new file renamed over the old (a new inode).
  void replace_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << text;
    std::filesystem::rename(tmp, path);
  }
  void write_head_token(const json& claims) { replace_file(settings.token_file, sign_token(rsa_key(), claims)); }

  void start_with_discovery() {
    auth = std::make_unique<OidcAuthenticator>(
        settings, std::make_unique<OidcDiscoverySource>(std::move(issuer_owned_), std::chrono::seconds(10)), clock);
    auth->start();
  }
  void start_with_file(const std::string& jwks) {
    settings.jwks_file = (dir_ / "jwks.json").string();
    replace_file(settings.jwks_file, jwks);
    auth = std::make_unique<OidcAuthenticator>(settings, std::make_unique<JwksFileSource>(settings.jwks_file), clock);
    auth->start();
  }

  std::string bearer(const testing::TestKey& key, const json& claims) { return "Bearer " + sign_token(key, claims); }
  std::string good(const testing::TestKey& key) { return bearer(key, good_claims(clock.wall_now())); }
  Answer check(const std::string& authorization) { return Pending(*auth, authorization).get(); }

  PeerAuthSettings settings;
  testing::FakeClock clock;
  FakeIssuer* issuer = nullptr;
  std::unique_ptr<OidcAuthenticator> auth;

 private:
  std::filesystem::path dir_;
  std::unique_ptr<FakeIssuer> issuer_owned_;
};

TEST_F(AuthenticatorTest, DiscoversKeysAtStartAndThenDecidesAtOnce) {
  start_with_discovery();
  // The first check may wait for the prefetch; either way it is accepted.
  Answer first = check(good(rsa_key()));
  EXPECT_EQ(first.result.status, 200) << first.result.why;
  EXPECT_EQ(issuer->requests(), 2);  // discovery document + JWKS
  EXPECT_EQ(auth->loads_started(), 1);

  Answer second = check(good(ec_key()));
  EXPECT_EQ(second.result.status, 200) << second.result.why;
  EXPECT_TRUE(second.at_once);
  EXPECT_EQ(issuer->requests(), 2);
}

TEST_F(AuthenticatorTest, AnUnknownKidRereadsTheKeysAtMostOnceAMinute) {
  const testing::TestKey rotated = testing::make_rsa_key("rsa-2");
  start_with_discovery();
  ASSERT_EQ(check(good(rsa_key())).result.status, 200);
  ASSERT_EQ(issuer->requests(), 2);

  // Within a minute of the prefetch: no re-read, refused at once.
  Answer a = check(good(rotated));
  EXPECT_EQ(a.result.status, 401);
  EXPECT_TRUE(a.at_once);
  EXPECT_NE(a.result.why.find("unknown kid"), std::string::npos) << a.result.why;
  EXPECT_EQ(issuer->requests(), 2);

  // A minute later: one re-read, for which the request waits; still not there → 401.
  clock.advance(std::chrono::seconds(60));
  Answer b = check(good(rotated));
  EXPECT_EQ(b.result.status, 401);
  EXPECT_FALSE(b.at_once);
  EXPECT_NE(b.result.why.find("unknown kid"), std::string::npos) << b.result.why;
  EXPECT_EQ(issuer->requests(), 4);
  EXPECT_EQ(auth->loads_started(), 2);

  // The issuer rotates now, but the last re-read was just now: refused without asking.
  issuer->set(kJwksUrl, 200, jwks_of({&rsa_key(), &ec_key(), &rotated}));
  clock.advance(std::chrono::seconds(59));
  Answer c = check(good(rotated));
  EXPECT_EQ(c.result.status, 401);
  EXPECT_TRUE(c.at_once);
  EXPECT_EQ(issuer->requests(), 4);

  // Past the minute: re-read, and the rotated key is accepted from then on at once.
  clock.advance(std::chrono::seconds(1));
  Answer d = check(good(rotated));
  EXPECT_EQ(d.result.status, 200) << d.result.why;
  EXPECT_EQ(issuer->requests(), 6);
  Answer e = check(good(rotated));
  EXPECT_EQ(e.result.status, 200);
  EXPECT_TRUE(e.at_once);
  EXPECT_EQ(issuer->requests(), 6);
}

TEST_F(AuthenticatorTest, RequestsWithAnUnknownKidShareOneReread) {
  const testing::TestKey rotated = testing::make_ec_key("ec-2");
  start_with_discovery();
  ASSERT_EQ(check(good(rsa_key())).result.status, 200);
  clock.advance(std::chrono::seconds(61));
  issuer->close_gate();
  std::vector<std::unique_ptr<Pending>> waiting;
  for (int i = 0; i < 5; ++i) waiting.push_back(std::make_unique<Pending>(*auth, good(rotated)));
  ASSERT_TRUE(issuer->wait_held());
  // Known kids are not held up by the re-read.
  Answer known = check(good(ec_key()));
  EXPECT_EQ(known.result.status, 200);
  EXPECT_TRUE(known.at_once);
  for (auto& p : waiting) EXPECT_FALSE(p->answered());

  issuer->set(kJwksUrl, 200, jwks_of({&rsa_key(), &rotated}));
  issuer->open_gate();
  for (auto& p : waiting) {
    Answer a = p->get();
    EXPECT_EQ(a.result.status, 200) << a.result.why;
    EXPECT_FALSE(a.at_once);
  }
  EXPECT_EQ(issuer->requests(), 4);
  EXPECT_EQ(auth->loads_started(), 2);
}

TEST_F(AuthenticatorTest, KeysThatCannotBeHadGive503WithTheReasonAndAreRetriedLater) {
  issuer->set(kDiscoveryUrl, 500, "upstream broke\nsecond line");
  start_with_discovery();
  Answer a = check(good(rsa_key()));
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find(std::string(kDiscoveryUrl) + ": HTTP 500: upstream broke"), std::string::npos) << a.result.why;
  EXPECT_EQ(a.result.why.find("second line"), std::string::npos);
  EXPECT_EQ(issuer->requests(), 1);

  // Within the retry interval: the same answer at once, no new request.
  Answer b = check(good(rsa_key()));
  EXPECT_EQ(b.result.status, 503);
  EXPECT_TRUE(b.at_once);
  EXPECT_EQ(b.result.why, a.result.why);
  EXPECT_EQ(issuer->requests(), 1);

  // After it: tried again.
  issuer->set(kDiscoveryUrl, 200, json{{"issuer", testing::kTestIssuer}, {"jwks_uri", kJwksUrl}}.dump());
  clock.advance(settings.retry_interval);
  Answer c = check(good(rsa_key()));
  EXPECT_EQ(c.result.status, 200) << c.result.why;
  EXPECT_EQ(issuer->requests(), 3);
}

TEST_F(AuthenticatorTest, AFailedRereadKeepsTheKeysItHad) {
  const testing::TestKey rotated = testing::make_rsa_key("rsa-3");
  start_with_discovery();
  ASSERT_EQ(check(good(rsa_key())).result.status, 200);
  issuer->set(kJwksUrl, 503, "");
  clock.advance(std::chrono::seconds(61));
  Answer a = check(good(rotated));
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find("could not be re-read"), std::string::npos) << a.result.why;
  Answer b = check(good(rsa_key()));
  EXPECT_EQ(b.result.status, 200) << b.result.why;
  EXPECT_TRUE(b.at_once);
}

TEST_F(AuthenticatorTest, DiscoveryChecksTheDocumentsIssuerAndScheme) {
  issuer->set(kDiscoveryUrl, 200, json{{"issuer", "https://evil.example"}, {"jwks_uri", kJwksUrl}}.dump());
  start_with_discovery();
  Answer a = check(good(rsa_key()));
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find("its \"issuer\" is not " + std::string(testing::kTestIssuer)), std::string::npos) << a.result.why;

  issuer->set(kDiscoveryUrl, 200, json{{"issuer", testing::kTestIssuer}, {"jwks_uri", "http://plain/keys"}}.dump());
  clock.advance(settings.retry_interval);
  Answer b = check(good(rsa_key()));
  EXPECT_EQ(b.result.status, 503);
  EXPECT_NE(b.result.why.find("no https \"jwks_uri\""), std::string::npos) << b.result.why;
}

TEST_F(AuthenticatorTest, AnIssuerThatIsNotHttpsCannotBeDiscovered) {
  json c = good_claims(clock.wall_now());
  c["iss"] = "http://oidc.example/id/X";
  write_head_token(c);
  start_with_discovery();
  Answer a = check(bearer(rsa_key(), c));
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find("is not an https URL"), std::string::npos) << a.result.why;
  EXPECT_EQ(issuer->requests(), 0);
}

TEST_F(AuthenticatorTest, TheHeadsOwnTokenIsReadWhenItChanges) {
  std::filesystem::remove(settings.token_file);
  start_with_discovery();
  Answer a = check(good(rsa_key()));
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find("head's own token"), std::string::npos) << a.result.why;
  EXPECT_EQ(auth->loads_started(), 0);

  write_head_token(good_claims(clock.wall_now()));
  EXPECT_EQ(check(good(rsa_key())).result.status, 200);

  // Rotated to another service account's token (another subject): the old subject is now
  // another's.
  json other = good_claims(clock.wall_now());
  other["sub"] = "system:serviceaccount:domino-compute:run-5678";
  write_head_token(other);
  Answer b = check(good(rsa_key()));
  EXPECT_EQ(b.result.status, 403);
  EXPECT_NE(b.result.why.find("sub"), std::string::npos) << b.result.why;
  EXPECT_EQ(check(bearer(ec_key(), other)).result.status, 200);

  // A head token that is not a JWT: 503, not the worker's fault.
  replace_file(settings.token_file, "garbage");
  Answer c = check(good(rsa_key()));
  EXPECT_EQ(c.result.status, 503);
  EXPECT_TRUE(c.at_once);
}

TEST_F(AuthenticatorTest, MissingOrOtherAuthorizationIs401AtOnce) {
  start_with_discovery();
  for (const std::string& h : {std::string(), std::string("Basic dXNlcjpwYXNz"), std::string("Bearer"),
                               std::string("Bearer "), std::string("Bearerxyz")}) {
    Answer a = check(h);
    EXPECT_EQ(a.result.status, 401) << "'" << h << "'";
    EXPECT_TRUE(a.at_once);
  }
  // The scheme is case-insensitive; spaces around the token do not matter.
  EXPECT_EQ(check("bearer  " + sign_token(rsa_key(), good_claims(clock.wall_now())) + " ").result.status, 200);
  // Malformed and forged tokens are refused without waiting for the keys.
  issuer->close_gate();
  EXPECT_TRUE(check("Bearer a.b").at_once);
  issuer->open_gate();
}

TEST_F(AuthenticatorTest, AJwksFileIsReadAgainWhenItChanges) {
  start_with_file(jwks_of({&rsa_key()}));
  EXPECT_EQ(check(good(rsa_key())).result.status, 200);
  Answer a = check(good(ec_key()));
  EXPECT_EQ(a.result.status, 401);
  EXPECT_NE(a.result.why.find("unknown kid"), std::string::npos);
  EXPECT_EQ(auth->loads_started(), 1);

  replace_file(settings.jwks_file, jwks_of({&rsa_key(), &ec_key()}));
  EXPECT_EQ(check(good(ec_key())).result.status, 200);
  EXPECT_EQ(auth->loads_started(), 2);
  Answer b = check(good(ec_key()));
  EXPECT_TRUE(b.at_once);
  EXPECT_EQ(auth->loads_started(), 2);

  // A broken file keeps the keys read before.
  replace_file(settings.jwks_file, "{not json");
  EXPECT_EQ(check(good(ec_key())).result.status, 200);
  EXPECT_EQ(auth->loads_started(), 3);
}

TEST_F(AuthenticatorTest, HowManyMayWaitForTheKeysIsBounded) {
  issuer->close_gate();
  start_with_discovery();
  ASSERT_TRUE(issuer->wait_held());
  const std::string token = good(ec_key());
  std::vector<std::unique_ptr<Pending>> waiting;
  for (int i = 0; i < 4096; ++i) waiting.push_back(std::make_unique<Pending>(*auth, token));
  Answer over = check(token);
  EXPECT_EQ(over.result.status, 503);
  EXPECT_TRUE(over.at_once);
  EXPECT_NE(over.result.why.find("too many requests wait"), std::string::npos) << over.result.why;
  issuer->open_gate();
  int accepted = 0;
  for (auto& p : waiting) accepted += p->get().result.status == 200;
  EXPECT_EQ(accepted, 4096);
}

TEST_F(AuthenticatorTest, StopAnswersWaitingChecks503) {
  issuer->close_gate();
  start_with_discovery();
  Pending p(*auth, good(rsa_key()));
  ASSERT_TRUE(issuer->wait_held());
  auth->stop();
  Answer a = p.get();
  EXPECT_EQ(a.result.status, 503);
  EXPECT_NE(a.result.why.find("shutting down"), std::string::npos);
  EXPECT_EQ(check(good(rsa_key())).result.status, 503);
}

TEST_F(AuthenticatorTest, EachRefusalLogsOneLineWithoutTheToken) {
  start_with_discovery();
  ASSERT_EQ(check(good(rsa_key())).result.status, 200);

  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  logger->set_level(spdlog::level::info);
  spdlog::set_default_logger(logger);

  json c = good_claims(clock.wall_now());
  c["aud"] = "sts.amazonaws.com";
  const std::string wrong_aud = sign_token(ec_key(), c);
  const std::string bad_sig = with_bad_signature(sign_token(rsa_key(), good_claims(clock.wall_now())));
  json other = good_claims(clock.wall_now());
  other["sub"] = "system:serviceaccount:other:sa";
  const std::string other_sub = sign_token(rsa_key(), other);
  EXPECT_EQ(check("Bearer " + wrong_aud).result.status, 401);
  EXPECT_EQ(check("Bearer " + bad_sig).result.status, 401);
  EXPECT_EQ(check("Bearer " + other_sub).result.status, 403);
  spdlog::set_default_logger(previous);

  const std::string log = out.str();
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u) << log;
  EXPECT_NE(lines[0].find("[warning]"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("(401): aud: aud [sts.amazonaws.com] does not contain irsafs"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("alg=ES256 kid=ec-1"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("(401): signature"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("(403): sub: sub system:serviceaccount:other:sa"), std::string::npos) << lines[2];
  for (const std::string& token : {wrong_aud, bad_sig, other_sub}) {
    for (std::size_t part = 0, at = 0; part < 3; ++part) {
      const std::size_t end = token.find('.', at);
      const std::string piece = token.substr(at, std::min<std::size_t>(24, end - at));
      EXPECT_EQ(log.find(piece), std::string::npos) << "log holds a piece of a token: " << piece;
      at = end + 1;
    }
  }
}

}  // namespace
}  // namespace irsafs
