// Issue 14: the peer endpoint's route (app/peers.h) over a real ConfigService with a scripted
// fetch and a fake authenticator; the PeerSource (fetcher/peer_source.h) over a scripted
// transport; the route table of the HTTP server with a deferred answer and extra headers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "app/peer_options.h"
#include "app/peers.h"
#include "fakes.h"
#include "fetcher/curl_transport.h"
#include "fetcher/peer_source.h"
#include "http/metrics.h"

namespace irsafs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::FakeClock;
using testing::FakeRandom;
using testing::ManualLauncher;
using testing::ScriptedTransport;

constexpr const char* kV1 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n";
constexpr const char* kV2 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n\n[profile b]\nregion = x\n";

// --- the route -----------------------------------------------------------------------------

class FakeCall final : public HttpCall {
 public:
  std::string_view method() const override { return "GET"; }
  std::string_view path() const override { return "/v1/config"; }
  std::string client() const override { return "10.0.0.7:40000"; }
  std::optional<std::string_view> header(const char* name) const override {
    for (const auto& [n, v] : headers) {
      if (strcasecmp(n.c_str(), name) == 0) return std::string_view(v);
    }
    return std::nullopt;
  }
  std::vector<std::pair<std::string, std::string>> headers;
};

// Answers each check with `verdict`, at once or when the test says so.
class FakeAuth final : public Authenticator {
 public:
  void check(std::string_view authorization, std::function<void(AuthResult)> done) override {
    seen.emplace_back(authorization);
    if (deferred) {
      parked.push_back(std::move(done));
    } else {
      done(verdict);
    }
  }
  AuthResult verdict{200, ""};
  bool deferred = false;
  std::vector<std::string> seen;
  std::vector<std::function<void(AuthResult)>> parked;
};

class PeerEndpointTest : public ::testing::Test {
 protected:
  PeerEndpointTest() {
    ServiceOptions o;
    o.read_deadline = seconds(10);
    svc = std::make_unique<ConfigService>(o, launcher, clock, random);
    endpoint = std::make_unique<PeerEndpoint>(*svc, auth);
  }

  // A request; its answer (when it comes) lands in replies[i].
  std::size_t get(std::vector<std::pair<std::string, std::string>> headers = {{"Authorization", "Bearer t"}}) {
    FakeCall call;
    call.headers = std::move(headers);
    const std::size_t i = replies.size();
    replies.emplace_back();
    endpoint->handle(call, [this, i](HttpReply r) {
      ASSERT_FALSE(replies[i]) << "answered twice";
      replies[i] = std::move(r);
    });
    return i;
  }
  static std::string header(const HttpReply& r, const std::string& name) {
    for (const auto& [n, v] : r.headers) {
      if (n == name) return v;
    }
    return {};
  }

  FakeClock clock;
  FakeRandom random{0.5};
  ManualLauncher launcher;
  FakeAuth auth;
  std::unique_ptr<ConfigService> svc;
  std::unique_ptr<PeerEndpoint> endpoint;
  std::vector<std::optional<HttpReply>> replies;
};

TEST_F(PeerEndpointTest, ARefusedTokenIsAnsweredWithTheVerdictAndStartsNoFetch) {
  for (const int status : {401, 403, 503}) {
    auth.verdict = AuthResult{status, "signature: does not verify with key k1"};
    const auto i = get();
    ASSERT_TRUE(replies[i]);
    EXPECT_EQ(replies[i]->status, status);
    EXPECT_EQ(replies[i]->body, "signature: does not verify with key k1\n");
    EXPECT_EQ(header(*replies[i], "WWW-Authenticate").empty(), status != 401);
    EXPECT_EQ(header(*replies[i], "Retry-After").empty(), status != 503);
    EXPECT_EQ(header(*replies[i], "ETag"), "");
  }
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(svc->status()["fetches"], 0);
  const auto c = endpoint->counters();
  EXPECT_EQ(c["requests"], 3);
  EXPECT_EQ(c["answers"]["401"], 1);
  EXPECT_EQ(c["answers"]["403"], 1);
  EXPECT_EQ(c["answers"]["503"], 1);
}

TEST_F(PeerEndpointTest, TheAuthorizationHeaderGoesToTheAuthenticatorAsIs) {
  get({{"Authorization", "Bearer abc.def.ghi"}});
  get({});
  EXPECT_EQ(auth.seen, (std::vector<std::string>{"Bearer abc.def.ghi", ""}));
}

TEST_F(PeerEndpointTest, RequestsBeforeTheContentShareOneFetchAndGetTheBytesWithTheirEtag) {
  for (int i = 0; i < 50; ++i) get();
  ASSERT_EQ(launcher.pending.size(), 1u);  // one fetch for all, as for local readers
  for (const auto& r : replies) EXPECT_FALSE(r);  // suspended
  launcher.succeed(kV1);
  for (const auto& r : replies) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, kV1);
    EXPECT_EQ(header(*r, "ETag"), "\"" + sha256_hex(kV1) + "\"");
    EXPECT_EQ(r->content_type, "text/plain; charset=utf-8");
  }
  EXPECT_EQ(endpoint->counters()["answers"]["200"], 50);
}

TEST_F(PeerEndpointTest, AuthenticationComesBeforeTheContentEvenWhenItAnswersLater) {
  auth.deferred = true;
  const auto i = get();
  EXPECT_TRUE(launcher.pending.empty());  // nothing starts for an unchecked token
  EXPECT_FALSE(replies[i]);
  auth.parked[0](AuthResult{200, ""});
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  ASSERT_TRUE(replies[i]);
  EXPECT_EQ(replies[i]->body, kV1);
}

TEST_F(PeerEndpointTest, IfNoneMatchWithTheCurrentEtagIs304WithoutBody) {
  get();
  launcher.succeed(kV1);
  const std::string etag = "\"" + sha256_hex(kV1) + "\"";
  for (const std::string& inm : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
    const auto i = get({{"Authorization", "Bearer t"}, {"If-None-Match", inm}});
    ASSERT_TRUE(replies[i]) << inm;
    EXPECT_EQ(replies[i]->status, 304) << inm;
    EXPECT_EQ(replies[i]->body, "") << inm;
    EXPECT_EQ(header(*replies[i], "ETag"), etag);
  }
  for (const std::string& inm : {std::string("\"") + sha256_hex(kV2) + "\"", sha256_hex(kV1), std::string("\"\"")}) {
    const auto i = get({{"Authorization", "Bearer t"}, {"If-None-Match", inm}});
    ASSERT_TRUE(replies[i]) << inm;
    EXPECT_EQ(replies[i]->status, 200) << inm;
    EXPECT_EQ(replies[i]->body, kV1);
  }
  EXPECT_TRUE(launcher.pending.empty());  // content known: no fetch
}

TEST_F(PeerEndpointTest, ANewVersionIsServedWithItsOwnEtag) {
  get();
  launcher.succeed(kV1);
  svc->refresh_now();
  launcher.succeed(kV2);
  const auto i = get({{"Authorization", "Bearer t"}, {"If-None-Match", "\"" + sha256_hex(kV1) + "\""}});
  ASSERT_TRUE(replies[i]);
  EXPECT_EQ(replies[i]->status, 200);
  EXPECT_EQ(replies[i]->body, kV2);
  EXPECT_EQ(header(*replies[i], "ETag"), "\"" + sha256_hex(kV2) + "\"");
}

TEST_F(PeerEndpointTest, AFailedFetchIs503WithTheReasonAndTheHoldOffAsRetryAfter) {
  const auto a = get();
  const auto b = get();
  launcher.fail("irsa-svc https://irsa/x: HTTP 403: role not mapped");
  for (const auto i : {a, b}) {
    ASSERT_TRUE(replies[i]);
    EXPECT_EQ(replies[i]->status, 503);
    EXPECT_THAT(replies[i]->body, HasSubstr("HTTP 403: role not mapped"));
    // Hold-off after one failure: 1 s * U(0.5, 1) at 0.5 = 0.75 s: rounded up to 1.
    EXPECT_EQ(header(*replies[i], "Retry-After"), "1");
  }
  // During the hold-off a request is told at once, and starts nothing.
  const auto c = get();
  ASSERT_TRUE(replies[c]);
  EXPECT_EQ(replies[c]->status, 503);
  EXPECT_THAT(replies[c]->body, HasSubstr("role not mapped"));
  EXPECT_TRUE(launcher.pending.empty());
  // After it, a request starts the next fetch.
  clock.advance(seconds(1));
  const auto d = get();
  EXPECT_FALSE(replies[d]);
  ASSERT_EQ(launcher.pending.size(), 1u);
  launcher.succeed(kV1);
  ASSERT_TRUE(replies[d]);
  EXPECT_EQ(replies[d]->status, 200);
}

TEST_F(PeerEndpointTest, RetryAfterGrowsWithTheHoldOff) {
  for (int n = 0; n < 4; ++n) {
    get();
    launcher.fail("down");
    clock.advance(seconds(100));
  }
  // The fifth failure: 1 s * 2^4 = 16 s window, U(0.5, 1) at 0.5: 12 s.
  const auto i = get();
  launcher.fail("down");
  ASSERT_TRUE(replies[i]);
  EXPECT_EQ(header(*replies[i], "Retry-After"), "12");
}

TEST_F(PeerEndpointTest, AReaderDeadlineIs503AndShutdownToo) {
  const auto a = get();
  clock.advance(seconds(12));  // past the deadline and the fetch's grace
  svc->tick();
  ASSERT_TRUE(replies[a]);
  EXPECT_EQ(replies[a]->status, 503);
  EXPECT_THAT(replies[a]->body, HasSubstr("no content within the deadline"));
  EXPECT_EQ(header(*replies[a], "Retry-After"), "1");
  launcher.cancelled();
  const auto b = get();
  svc->shutdown();
  ASSERT_TRUE(replies[b]);
  EXPECT_EQ(replies[b]->status, 503);
  EXPECT_THAT(replies[b]->body, HasSubstr("shutting down"));
}

TEST_F(PeerEndpointTest, ContentSeededByAWriteIsServedToo) {
  ASSERT_EQ(svc->write(1, 0, kV2), 0);
  ASSERT_EQ(svc->flush(1), 0);
  const auto i = get();
  ASSERT_TRUE(replies[i]);
  EXPECT_EQ(replies[i]->body, kV2);
}

TEST_F(PeerEndpointTest, CountersReachStatusAndMetrics) {
  get();
  launcher.succeed(kV1);
  get({{"Authorization", "Bearer t"}, {"If-None-Match", "\"" + sha256_hex(kV1) + "\""}});
  auth.verdict = AuthResult{403, "sub: another service account"};
  get();
  nlohmann::ordered_json status = svc->status();
  status["peers"] = endpoint->counters();
  const std::string m = render_metrics(status);
  EXPECT_THAT(m, HasSubstr("irsafs_peer_served_requests_total 3\n"));
  EXPECT_THAT(m, HasSubstr("irsafs_peer_answers_total{status=\"200\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("irsafs_peer_answers_total{status=\"304\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("irsafs_peer_answers_total{status=\"403\"} 1\n"));
  EXPECT_THAT(m, HasSubstr("irsafs_peer_requests_total 0\n"));
}

// --- the source ----------------------------------------------------------------------------

class PeerSourceTest : public ::testing::Test {
 protected:
  PeerSourceTest() {
    dir = std::filesystem::temp_directory_path() / ("irsafs-peer-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    settings.url = "http://head:6010/v1/config";
    settings.token_file = (dir / "token").string();
    settings.deadline = seconds(60);
    write_token("header.payload.sig-1\n");
  }
  ~PeerSourceTest() override { std::filesystem::remove_all(dir); }
  void write_token(const std::string& t) { std::ofstream(settings.token_file, std::ios::trunc) << t; }
  static std::string header(const ScriptedTransport::Seen& s, const std::string& name) {
    for (const auto& [n, v] : s.headers) {
      if (n == name) return v;
    }
    return {};
  }

  std::filesystem::path dir;
  FakeClock clock;
  FakeRandom random{0.5};
  ScriptedTransport transport{"unused-token-url", &clock};
  PeerSettings settings;
};

TEST_F(PeerSourceTest, GetsTheConfigWithTheTokenReadFresh) {
  PeerSource source(settings, transport, clock, random);
  FetchResult r = source.fetch();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.content, transport.default_body);
  EXPECT_EQ(r.origin, FetchOrigin::kPeer);
  EXPECT_EQ(r.peer_requests, 1);
  EXPECT_EQ(r.requests, 0);  // none reached irsa-svc
  EXPECT_EQ(r.token_requests, 0);
  ASSERT_EQ(transport.seen.size(), 1u);
  EXPECT_EQ(transport.seen[0].method, HttpRequest::Method::kGet);
  EXPECT_EQ(transport.seen[0].url, settings.url);
  EXPECT_EQ(transport.seen[0].bearer, "header.payload.sig-1");
  EXPECT_EQ(header(transport.seen[0], "If-None-Match"), "");
  // The kubelet rotated the token: the next fetch sends the new one.
  write_token("header.payload.sig-2");
  ASSERT_TRUE(source.fetch().ok);
  EXPECT_EQ(transport.seen[1].bearer, "header.payload.sig-2");
}

TEST_F(PeerSourceTest, RefreshesAreConditionalAnd304GivesTheSameContent) {
  PeerSource source(settings, transport, clock, random);
  transport.post_script = {ScriptedTransport::ok(kV1), ScriptedTransport::status(304),
                           ScriptedTransport::ok(kV2)};
  ASSERT_EQ(source.fetch().content, kV1);
  FetchResult same = source.fetch();
  ASSERT_TRUE(same.ok) << same.error;
  EXPECT_EQ(same.content, kV1);
  EXPECT_EQ(header(transport.seen[1], "If-None-Match"), "\"" + sha256_hex(kV1) + "\"");
  ASSERT_EQ(source.fetch().content, kV2);
  EXPECT_EQ(header(transport.seen[2], "If-None-Match"), "\"" + sha256_hex(kV1) + "\"");
  source.fetch();
  EXPECT_EQ(header(transport.seen[3], "If-None-Match"), "\"" + sha256_hex(kV2) + "\"");
}

TEST_F(PeerSourceTest, The503OfAHeadWhoseFetchFailedIsRetriedAtItsPace) {
  PeerSource source(settings, transport, clock, random);
  transport.post_script = {ScriptedTransport::status(503, "the serving peer cannot fetch the config: x", seconds(4)),
                           ScriptedTransport::ok(kV1)};
  FetchResult r = source.fetch();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.peer_requests, 2);
  ASSERT_EQ(clock.sleeps.size(), 1u);
  EXPECT_EQ(clock.sleeps[0], seconds(6));  // R + U(0, R) at 0.5
}

TEST_F(PeerSourceTest, AHeadThatKeepsFailingGivesItsReasonWithinTheDeadline) {
  PeerSource source(settings, transport, clock, random);
  transport.post_script.assign(
      100, ScriptedTransport::status(503, "the serving peer cannot fetch the config: irsa-svc: HTTP 403: role not mapped",
                                     seconds(40)));
  const TimePoint start = clock.now();
  FetchResult r = source.fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_LE(clock.now() - start, settings.deadline);
  EXPECT_THAT(r.error, HasSubstr("peer http://head:6010/v1/config: HTTP 503: the serving peer cannot fetch the config: "
                                 "irsa-svc: HTTP 403: role not mapped"));
  EXPECT_THAT(r.error, HasSubstr("Retry-After ends past the deadline"));
}

TEST_F(PeerSourceTest, AHeadThatIsDownFailsClearlyWithinTheDeadline) {
  PeerSource source(settings, transport, clock, random);
  transport.post_script.assign(100, ScriptedTransport::transport_error("Failed to connect to head port 6010: Connection refused"));
  const TimePoint start = clock.now();
  FetchResult r = source.fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_LE(clock.now() - start, settings.deadline);
  EXPECT_GT(r.peer_requests, 3);
  EXPECT_THAT(r.error, HasSubstr("peer http://head:6010/v1/config: Failed to connect to head port 6010: Connection refused"));
  EXPECT_THAT(r.error, HasSubstr("no time left before the deadline of 60"));
}

TEST_F(PeerSourceTest, RefusalsArePermanentWithTheHeadsReasonAndNeverTheToken) {
  for (const long status : {401L, 403L, 404L}) {
    PeerSource source(settings, transport, clock, random);
    transport.seen.clear();
    transport.post_script = {
        ScriptedTransport::status(status, "sub: not this service account; you sent header.payload.sig-1")};
    FetchResult r = source.fetch();
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(transport.seen.size(), 1u) << status;  // no retry
    EXPECT_THAT(r.error, HasSubstr("HTTP " + std::to_string(status) + ": sub: not this service account"));
    EXPECT_THAT(r.error, Not(HasSubstr("sig-1")));
    EXPECT_THAT(r.error, HasSubstr("[redacted]"));
  }
}

TEST_F(PeerSourceTest, ATokenFileThatCannotBeReadFailsAtOnce) {
  settings.token_file = (dir / "missing").string();
  PeerSource source(settings, transport, clock, random);
  FetchResult r = source.fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(transport.seen.empty());
  EXPECT_THAT(r.error, HasSubstr("cannot read the token file " + settings.token_file + ": No such file or directory"));
  settings.token_file = (dir / "token").string();
  write_token("\n");
  PeerSource empty(settings, transport, clock, random);
  EXPECT_THAT(empty.fetch().error, HasSubstr("is empty"));
  write_token(std::string(70 * 1024, 'a'));
  EXPECT_THAT(empty.fetch().error, HasSubstr("larger than 65536 bytes"));
}

TEST_F(PeerSourceTest, ABodyThatIsNotAConfigIsRetriedAndNeverQuoted) {
  PeerSource source(settings, transport, clock, random);
  transport.post_script = {ScriptedTransport::ok("<html>secret stuff</html>\n"), ScriptedTransport::ok(kV1)};
  FetchResult r = source.fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.content, kV1);
  EXPECT_EQ(r.peer_requests, 2);
}

TEST_F(PeerSourceTest, ARequestMayWaitForTheHeadsFetchButNotPastTheDeadline) {
  PeerSource source(settings, transport, clock, random);
  source.fetch();
  ASSERT_TRUE(transport.seen[0].timeout);
  EXPECT_EQ(*transport.seen[0].timeout, settings.deadline);
}

TEST(PeerConfigUrl, Table) {
  EXPECT_EQ(peer_config_url("http://ray-head:6010"), "http://ray-head:6010/v1/config");
  EXPECT_EQ(peer_config_url("http://ray-head:6010/"), "http://ray-head:6010/v1/config");
  EXPECT_EQ(peer_config_url("https://10.0.0.1:6010/v1/config"), "https://10.0.0.1:6010/v1/config");
  EXPECT_EQ(peer_config_url("http://h/custom/path"), "http://h/custom/path");
  for (const char* bad : {"", "ray-head:6010", "ftp://h/", "http://", "http:///v1/config", "http://h a/"}) {
    EXPECT_THROW(peer_config_url(bad), std::invalid_argument) << bad;
  }
}

TEST(FallbackSource, OnePeerFailureThenOneIrsaSvcFetch) {
  struct Scripted final : ConfigSource {
    FetchResult result;
    int calls = 0;
    FetchResult fetch(std::stop_token) override {
      ++calls;
      return result;
    }
  };
  auto peer = std::make_unique<Scripted>();
  auto irsa = std::make_unique<Scripted>();
  peer->result.error = "peer http://h/v1/config: Connection refused";
  peer->result.peer_requests = 5;
  irsa->result.ok = true;
  irsa->result.content = kV1;
  irsa->result.requests = 1;
  Scripted* p = peer.get();
  Scripted* i = irsa.get();
  FallbackSource source(std::move(peer), std::move(irsa));
  FetchResult r = source.fetch();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.origin, FetchOrigin::kIrsaSvc);
  EXPECT_EQ(r.peer_requests, 5);
  EXPECT_EQ(r.requests, 1);
  i->result.ok = false;
  i->result.error = "irsa-svc x: HTTP 500: down";
  r = source.fetch();
  EXPECT_THAT(r.error, HasSubstr("from the peer: peer http://h/v1/config: Connection refused; from irsa-svc: irsa-svc x"));
  p->result.ok = true;
  r = source.fetch();
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(i->calls, 2);
}

// --- both over a real server ----------------------------------------------------------------

// The PeerSource with libcurl against the peer route on a real HttpServer: the request is
// suspended until the head's fetch ends, the ETag comes back as If-None-Match, a 304 has no
// body, a refusal carries its reason.
TEST_F(PeerSourceTest, AgainstTheRouteOnARealServer) {
  // Launched from the server's thread, completed from the test's.
  struct Launcher final : FetchLauncher {
    void launch(std::function<void(FetchResult)> done) override {
      std::lock_guard lock(mu);
      pending.push_back(std::move(done));
      cv.notify_all();
    }
    void cancel() override {}
    std::function<void(FetchResult)> wait_one() {
      std::unique_lock lock(mu);
      if (!cv.wait_for(lock, seconds(20), [&] { return !pending.empty(); })) return {};
      auto done = std::move(pending.front());
      pending.pop_front();
      return done;
    }
    std::size_t size() {
      std::lock_guard lock(mu);
      return pending.size();
    }
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void(FetchResult)>> pending;
  } launcher;
  FakeClock service_clock;
  FakeRandom service_random{0.5};
  ServiceOptions o;
  o.read_deadline = seconds(10);
  ConfigService svc(o, launcher, service_clock, service_random);
  FakeAuth auth;
  PeersComponent peers(svc, auth, HttpServerOptions{});
  peers.prepare();
  peers.start();
  settings.url = peer_config_url("http://" + peers.address());
  settings.deadline = seconds(20);
  SystemClock clock_;
  SystemRandom random_;
  CurlTransport curl(TransportSettings{});
  PeerSource source(settings, curl, clock_, random_);

  std::promise<FetchResult> first;
  std::jthread worker([&] { first.set_value(source.fetch()); });
  // The worker's request has started the head's fetch and waits, suspended.
  auto done = launcher.wait_one();
  ASSERT_TRUE(done);
  FetchResult fetched;
  fetched.ok = true;
  fetched.content = kV1;
  done(fetched);
  FetchResult r = first.get_future().get();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.content, kV1);
  EXPECT_EQ(auth.seen, (std::vector<std::string>{"Bearer header.payload.sig-1"}));

  r = source.fetch();  // conditional: 304
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.content, kV1);
  EXPECT_EQ(svc.status()["peers"]["answers"]["304"], 1);
  EXPECT_EQ(svc.status()["peers"]["serving"], peers.address());

  auth.verdict = AuthResult{403, "sub: system:serviceaccount:ns:other is not system:serviceaccount:ns:head"};
  r = source.fetch();
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, HasSubstr("HTTP 403: sub: system:serviceaccount:ns:other is not"));
  EXPECT_EQ(launcher.size(), 0u);
  peers.stop();
  EXPECT_FALSE(svc.status().contains("peers"));
}

// --- the plumbing --------------------------------------------------------------------------

TEST(ResolvePeers, FlagThenEnvironmentAndFallbackNoneByDefault) {
  ResolvedOptions options;
  options.fetch.deadline = seconds(30);
  PeerArgs args;
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "IRSAFS_PEER") return "http://ray-head:6010";
    return std::nullopt;
  };
  PeerPlan plan = resolve_peers(args, options, env);
  ASSERT_TRUE(plan.peer);
  EXPECT_EQ(plan.peer->url, "http://ray-head:6010/v1/config");
  EXPECT_EQ(plan.peer->token_file, "/var/run/secrets/irsafs/token");
  EXPECT_EQ(plan.peer->deadline, seconds(30));
  EXPECT_FALSE(plan.fallback);
  EXPECT_FALSE(plan.serve);
  args.peer = "http://other:1/";
  args.fallback = "irsa-svc";
  plan = resolve_peers(args, options, env);
  EXPECT_EQ(plan.peer->url, "http://other:1/v1/config");
  EXPECT_TRUE(plan.fallback);
  args.peer = "other:1";
  EXPECT_THROW(resolve_peers(args, options, env), UsageError);
  PeerPlan none = resolve_peers(PeerArgs{}, options, [](const std::string&) { return std::nullopt; });
  EXPECT_FALSE(none.peer);
  PeerArgs serve;
  serve.serve = "0.0.0.0:6010";
  EXPECT_EQ(resolve_peers(serve, options, env).serve, (ListenAddress{"0.0.0.0", 6010}));
  serve.serve = "ray-head:6010";
  EXPECT_THROW(resolve_peers(serve, options, env), UsageError);
}

}  // namespace
}  // namespace irsafs
