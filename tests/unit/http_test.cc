// The HTTP endpoints (http/): a real HttpServer on 127.0.0.1 with a fake backend, libcurl as the
// client; resolve_listen; render_metrics, also through python3-prometheus-client's parser.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "http/endpoint.h"
#include "http/listen.h"
#include "http/metrics.h"
#include "http/server.h"

namespace irsafs {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;
using json = nlohmann::ordered_json;

// --- a fake daemon -------------------------------------------------------------------------

class FakeBackend : public EndpointBackend {
 public:
  json status() override {
    std::lock_guard lock(mu_);
    if (throw_in_status) throw std::runtime_error("status broke");
    return status_;
  }
  bool live() override { return is_live.load(); }
  void refresh(std::function<void(RefreshOutcome)> done) override {
    std::unique_lock lock(mu_);
    ++refresh_calls_;
    if (immediate_) {
      const RefreshOutcome o = *immediate_;
      lock.unlock();
      done(o);  // settled inside refresh(): the server must not suspend
      return;
    }
    parked_.push_back(std::move(done));
    cv_.notify_all();
  }

  void set_status(json j) {
    std::lock_guard lock(mu_);
    status_ = std::move(j);
  }
  void answer_immediately(RefreshOutcome o) {
    std::lock_guard lock(mu_);
    immediate_ = std::move(o);
  }
  bool wait_parked(std::size_t n, std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return parked_.size() >= n; });
  }
  std::size_t parked() {
    std::lock_guard lock(mu_);
    return parked_.size();
  }
  std::vector<std::function<void(RefreshOutcome)>> take_parked() {
    std::lock_guard lock(mu_);
    return std::exchange(parked_, {});
  }
  int refresh_calls() {
    std::lock_guard lock(mu_);
    return refresh_calls_;
  }

  std::atomic<bool> is_live{true};
  std::atomic<bool> throw_in_status{false};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  json status_ = json{{"state", "ready"}, {"version", 1}, {"bytes", 42}, {"last_error", nullptr}};
  std::optional<RefreshOutcome> immediate_;
  std::vector<std::function<void(RefreshOutcome)>> parked_;
  int refresh_calls_ = 0;
};

// --- a client ------------------------------------------------------------------------------

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string headers;  // raw, after a leading "\n"
  // The value of header `name` (lower case), whatever case the server wrote the name in.
  std::string header(const std::string& name) const {
    std::string lower = headers;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    const auto at = lower.find("\n" + name + ": ");
    if (at == std::string::npos) return {};
    const auto start = at + name.size() + 3;
    return headers.substr(start, headers.find('\r', start) - start);
  }
};

std::size_t collect(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct Request {
  std::string method = "GET";
  std::vector<std::string> headers;
  std::optional<std::string> body;
  long timeout_ms = 20000;

  Request& with_method(std::string m) {
    method = std::move(m);
    return *this;
  }
  Request& with_header(std::string h) {
    headers.push_back(std::move(h));
    return *this;
  }
  Request& with_body(std::string b) {
    body = std::move(b);
    return *this;
  }
  Request& with_timeout_ms(long t) {
    timeout_ms = t;
    return *this;
  }
};

// An easy handle set up for `url`; the reply is written into `r` as the transfer runs.
CURL* make_easy(const std::string& url, const Request& req, Reply& r, curl_slist*& list) {
  static const bool once = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)once;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req.timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // never an http_proxy from the environment
  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(req.body ? req.body->size() : 0));
    curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, req.body ? req.body->c_str() : "");
  } else if (req.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }
  list = nullptr;
  for (const auto& h : req.headers) list = curl_slist_append(list, h.c_str());
  if (list) curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  return c;
}

void finish(CURL* c, Reply& r, curl_slist* list) {
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  r.headers.insert(0, "\n");
  curl_slist_free_all(list);
  curl_easy_cleanup(c);
}

Reply fetch(const std::string& url, const Request& req = {}) {
  Reply r;
  curl_slist* list = nullptr;
  CURL* c = make_easy(url, req, r, list);
  r.code = curl_easy_perform(c);
  finish(c, r, list);
  return r;
}

// Many transfers at once on one thread (curl multi), each its own connection.
class Multi {
 public:
  explicit Multi(std::size_t n) : replies_(n), lists_(n), easies_(n) { multi_ = curl_multi_init(); }
  ~Multi() {
    for (std::size_t i = 0; i < easies_.size(); ++i) {
      if (easies_[i]) {
        curl_multi_remove_handle(multi_, easies_[i]);
        finish(easies_[i], replies_[i], lists_[i]);
      }
    }
    curl_multi_cleanup(multi_);
  }
  void add(std::size_t i, const std::string& url, const Request& req = {}) {
    easies_[i] = make_easy(url, req, replies_[i], lists_[i]);
    curl_easy_setopt(easies_[i], CURLOPT_PRIVATE, reinterpret_cast<char*>(i));
    curl_multi_add_handle(multi_, easies_[i]);
  }
  // Drives the transfers until `until()` holds or all ended (or `timeout`); true if done.
  bool run(const std::function<bool()>& until, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int running = 0;
      curl_multi_perform(multi_, &running);
      reap();
      if (until && until()) return true;
      if (running == 0) return !until;
      curl_multi_poll(multi_, nullptr, 0, 20, nullptr);
    }
    return false;
  }
  const Reply& reply(std::size_t i) const { return replies_[i]; }
  std::size_t done() const { return done_; }

 private:
  void reap() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      char* p = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
      const auto i = reinterpret_cast<std::size_t>(p);
      replies_[i].code = m->data.result;
      curl_multi_remove_handle(multi_, easies_[i]);
      finish(easies_[i], replies_[i], lists_[i]);
      easies_[i] = nullptr;
      ++done_;
    }
  }
  CURLM* multi_;
  std::vector<Reply> replies_;
  std::vector<curl_slist*> lists_;
  std::vector<CURL*> easies_;
  std::size_t done_ = 0;
};

// A raw TCP connection to 127.0.0.1:port, for clients curl cannot be (silent, trickling).
int connect_raw(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the peer closed `fd` (read gives end of stream or a reset) within `timeout`.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char buf[256];
  const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions o = {}) {
    o.address = ListenAddress{"127.0.0.1", 0};
    server = std::make_unique<HttpServer>(backend, o);
    server->start();
    base = "http://" + server->address();
  }
  void TearDown() override {
    if (server) server->stop();
  }

  FakeBackend backend;
  std::unique_ptr<HttpServer> server;
  std::string base;
};

// --- routes --------------------------------------------------------------------------------

TEST_F(HttpServerTest, HealthzFollowsLivenessNotReadiness) {
  start();
  backend.set_status(json{{"state", "error"}, {"last_error", "irsa-svc down"}});
  auto r = fetch(base + "/healthz");
  EXPECT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(r.header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.header("cache-control"), "no-store");
  backend.is_live = false;
  r = fetch(base + "/healthz");
  EXPECT_EQ(r.status, 503);
  // A probe's query string does not change the route.
  backend.is_live = true;
  EXPECT_EQ(fetch(base + "/healthz?probe=1").status, 200);
}

TEST_F(HttpServerTest, ReadyzIsReadyOnlyWithContentAndSaysWhyOnOneLine) {
  start();
  auto r = fetch(base + "/readyz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ready\n");

  backend.set_status(json{{"state", "empty"}, {"last_error", nullptr}});
  r = fetch(base + "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "not ready: state empty\n");

  backend.set_status(json{{"state", "error"}, {"last_error", "HTTP 500: boom\nsecond line"}});
  r = fetch(base + "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "not ready: state error; last error: HTTP 500: boom second line\n");

  backend.set_status(json{{"state", "fetching"}});
  EXPECT_EQ(fetch(base + "/readyz").body, "not ready: state fetching\n");
}

TEST_F(HttpServerTest, StatusIsTheBackendsJson) {
  start();
  const json s = {{"state", "ready"}, {"version", 3}, {"bytes", 120}, {"sha256", "ab"}, {"writes", {{"committed", 1}}}};
  backend.set_status(s);
  const auto r = fetch(base + "/status");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(json::parse(r.body), s);
  EXPECT_EQ(r.body, s.dump(2) + "\n");  // rendered as .status is
}

TEST_F(HttpServerTest, MetricsAreTheRenderedStatus) {
  start();
  const json s = {{"state", "ready"}, {"fetches", 2}, {"failures", 1}, {"upstream_requests", 3}};
  backend.set_status(s);
  const auto r = fetch(base + "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, render_metrics(s));
}

TEST_F(HttpServerTest, UnknownPathsAre404AndNeverEchoed) {
  start();
  for (const char* path : {"/", "/secret-token-abc", "/healthz/", "/HEALTHZ", "/status.json", "/.status"}) {
    const auto r = fetch(base + path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.body, "not found\n") << path;
  }
}

TEST_F(HttpServerTest, OtherMethodsAre405WithAllow) {
  start();
  for (const char* path : {"/healthz", "/readyz", "/status", "/metrics"}) {
    for (const char* method : {"POST", "PUT", "DELETE", "PATCH"}) {
      const auto r = fetch(base + path, Request().with_method(method));
      EXPECT_EQ(r.status, 405) << method << " " << path;
      EXPECT_EQ(r.header("allow"), "GET, HEAD") << method << " " << path;
    }
    const auto head = fetch(base + path, Request().with_method("HEAD"));
    EXPECT_EQ(head.status, 200) << path;
    EXPECT_EQ(head.body, "") << path;
  }
  for (const char* method : {"PUT", "DELETE", "HEAD", "OPTIONS"}) {
    const auto r = fetch(base + "/refresh", Request().with_method(method));
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(r.header("allow"), "GET, POST") << method;
  }
  EXPECT_EQ(backend.refresh_calls(), 0);  // none of them started a fetch
}

TEST_F(HttpServerTest, AnExceptionInTheBackendIs500) {
  start();
  backend.throw_in_status = true;
  const auto r = fetch(base + "/status");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, "internal error\n");
  backend.throw_in_status = false;
  EXPECT_EQ(fetch(base + "/status").status, 200);  // and the server goes on
}

// --- /refresh ------------------------------------------------------------------------------

TEST_F(HttpServerTest, RefreshIsSuspendedUntilAnsweredFromAnotherThread) {
  start();
  for (const char* method : {"GET", "POST"}) {
    auto pending =
        std::async(std::launch::async, [&] { return fetch(base + "/refresh", Request().with_method(method)); });
    ASSERT_TRUE(backend.wait_parked(1));
    // The server's thread is free meanwhile: other requests are answered at once.
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(fetch(base + "/healthz").status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
    EXPECT_EQ(pending.wait_for(200ms), std::future_status::timeout);  // still waiting

    auto parked = backend.take_parked();
    ASSERT_EQ(parked.size(), 1u);
    std::thread([done = std::move(parked[0])] {
      done(RefreshOutcome{200, R"({"version":2,"changed":true})"});
    }).join();
    const auto r = pending.get();
    EXPECT_EQ(r.status, 200) << method;
    EXPECT_EQ(r.body, R"({"version":2,"changed":true})");
    EXPECT_EQ(r.header("content-type"), "application/json");
  }
}

TEST_F(HttpServerTest, RefreshSettledInsideTheCallIsAnsweredAtOnce) {
  start();
  backend.answer_immediately(RefreshOutcome{409, "seeded by a write\n", "text/plain; charset=utf-8"});
  const auto r = fetch(base + "/refresh");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.body, "seeded by a write\n");
  // A nonsensical status from the backend becomes a 500, not a broken answer.
  backend.answer_immediately(RefreshOutcome{42, "x"});
  EXPECT_EQ(fetch(base + "/refresh").status, 500);
}

TEST_F(HttpServerTest, AThousandConcurrentRefreshesAreAllAnswered) {
  start();
  EXPECT_GE(server->connection_limit(), 1000u);
  constexpr std::size_t kClients = 1000;
  Multi multi(kClients);
  for (std::size_t i = 0; i < kClients; ++i) multi.add(i, base + "/refresh", Request().with_timeout_ms(60000));
  // Every request reaches the backend and is parked: 1,000 suspended connections at once.
  ASSERT_TRUE(multi.run([&] { return backend.parked() >= kClients; }, 60s)) << backend.parked() << " parked";
  EXPECT_EQ(multi.done(), 0u);
  // Liveness is not starved by them.
  EXPECT_EQ(fetch(base + "/healthz").status, 200);

  // One outcome for all, delivered from another thread (as the fetch thread would).
  std::thread answer([callbacks = backend.take_parked()] {
    for (const auto& done : callbacks) done(RefreshOutcome{200, R"({"version":7})"});
  });
  const bool all = multi.run([&] { return multi.done() == kClients; }, 60s);
  answer.join();
  ASSERT_TRUE(all) << multi.done() << " of " << kClients << " answered";
  for (std::size_t i = 0; i < kClients; ++i) {
    ASSERT_EQ(multi.reply(i).code, CURLE_OK) << i << ": " << curl_easy_strerror(multi.reply(i).code);
    ASSERT_EQ(multi.reply(i).status, 200) << i;
    ASSERT_EQ(multi.reply(i).body, R"({"version":7})") << i;
  }
}

TEST_F(HttpServerTest, StopAnswersSuspendedRefreshesWith503) {
  HttpServerOptions o;
  o.stop_grace = 5s;
  start(o);
  constexpr std::size_t kClients = 5;
  std::vector<std::future<Reply>> clients;
  for (std::size_t i = 0; i < kClients; ++i) {
    clients.push_back(std::async(std::launch::async, [&] { return fetch(base + "/refresh"); }));
  }
  ASSERT_TRUE(backend.wait_parked(kClients));
  const auto t0 = std::chrono::steady_clock::now();
  server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);  // not the whole grace: all answered
  for (auto& c : clients) {
    ASSERT_EQ(c.wait_for(5s), std::future_status::ready);
    const auto r = c.get();
    EXPECT_EQ(r.code, CURLE_OK);
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.body, "shutting down\n");
  }
  // Outcomes arriving late, even after the server is gone, touch nothing.
  auto late = backend.take_parked();
  server.reset();
  for (const auto& done : late) done(RefreshOutcome{200, "{}"});
  // And a stopped server refuses connections.
  EXPECT_NE(fetch(base + "/healthz", Request().with_timeout_ms(2000)).code, CURLE_OK);
}

// --- bounds --------------------------------------------------------------------------------

TEST_F(HttpServerTest, SilentAndTricklingClientsAreDroppedWithoutDelayingOthers) {
  HttpServerOptions o;
  o.request_timeout = 1000ms;
  o.idle_timeout = 30s;  // the reaper, not MHD's idle timeout, must drop the trickler
  start(o);
  const int silent = connect_raw(server->port());
  const int trickler = connect_raw(server->port());
  ASSERT_GE(silent, 0);
  ASSERT_GE(trickler, 0);
  const std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  std::atomic<bool> trickling{true};
  std::thread trickle([&] {
    // One byte every 100 ms: never idle long enough for an idle timeout.
    for (std::size_t i = 0; trickling && i < 60; ++i) {
      if (::send(trickler, head.data() + i % head.size(), 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(100ms);
    }
  });
  // Others are served at once meanwhile.
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(fetch(base + "/healthz").status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  }
  EXPECT_TRUE(closed_by_peer(silent, 5s));
  EXPECT_TRUE(closed_by_peer(trickler, 5s));
  trickling = false;
  trickle.join();
  EXPECT_GE(server->dropped_slow_clients(), 2u);
  ::close(silent);
  ::close(trickler);
  EXPECT_EQ(fetch(base + "/healthz").status, 200);
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionsTimeOut) {
  HttpServerOptions o;
  o.idle_timeout = 1s;
  o.request_timeout = 60000ms;  // MHD's idle timeout alone
  start(o);
  const int fd = connect_raw(server->port());
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_by_peer(fd, 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms);
  ::close(fd);
}

TEST_F(HttpServerTest, OversizeRequestsAreRefused) {
  start();
  // A request head beyond the per-connection memory.
  auto r = fetch(base + "/healthz", Request().with_header("X-Big: " + std::string(64 * 1024, 'a')));
  EXPECT_EQ(r.status, 431);
  EXPECT_THAT(r.body, Not(HasSubstr("aaaa")));
  r = fetch(base + "/" + std::string(64 * 1024, 'b'));
  EXPECT_EQ(r.status, 414);
  EXPECT_THAT(r.body, Not(HasSubstr("bbbb")));
  // A body: no endpoint takes one, and it starts no fetch.
  r = fetch(base + "/refresh", Request().with_method("POST").with_body(R"({"x":1})"));
  EXPECT_EQ(r.status, 413);
  r = fetch(base + "/refresh",
            Request().with_method("POST").with_header("Transfer-Encoding: chunked").with_body("abc"));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(backend.refresh_calls(), 0);
  // An empty body is no body.
  backend.answer_immediately(RefreshOutcome{200, "{}"});
  EXPECT_EQ(fetch(base + "/refresh", Request().with_method("POST").with_body("")).status, 200);
  EXPECT_EQ(fetch(base + "/healthz").status, 200);
}

TEST_F(HttpServerTest, ConnectionsBeyondTheLimitWaitInTheBacklog) {
  HttpServerOptions o;
  o.connection_limit = 2;
  o.request_timeout = 1000ms;
  start(o);
  const int a = connect_raw(server->port());
  const int b = connect_raw(server->port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // A third client is not refused: it waits until the silent ones are dropped, then is served.
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = fetch(base + "/healthz");
  EXPECT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 800ms);
  ::close(a);
  ::close(b);
}

// The soft RLIMIT_NOFILE is raised for the connection limit, or the limit is fitted under it.
TEST_F(HttpServerTest, FdLimitBelowTheConnectionLimit) {
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 2048 + 256) GTEST_SKIP() << "hard limit too low";
  struct Restore {
    rlimit limit;
    ~Restore() { ::setrlimit(RLIMIT_NOFILE, &limit); }
  } restore{saved};
  rlimit low = saved;
  low.rlim_cur = 600;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  HttpServerOptions o;
  o.raise_fd_limit = false;
  start(o);
  EXPECT_EQ(server->connection_limit(), 600u - 256u);
  EXPECT_EQ(fetch(base + "/healthz").status, 200);
  server->stop();

  o.raise_fd_limit = true;
  start(o);
  EXPECT_EQ(server->connection_limit(), 2048u);
  rlimit now{};
  ::getrlimit(RLIMIT_NOFILE, &now);
  EXPECT_EQ(now.rlim_cur, 2048u + 256u);
}

// --- binding -------------------------------------------------------------------------------

TEST_F(HttpServerTest, APortInUseFailsNamingTheAddressAndTheError) {
  start();
  HttpServerOptions o;
  o.address = ListenAddress{"127.0.0.1", server->port()};
  HttpServer second(backend, o);
  try {
    second.start();
    FAIL() << "a second server started on " << server->address();
  } catch (const HttpServerError& e) {
    EXPECT_EQ(std::string(e.what()), "Cannot listen on " + server->address() + ": " + std::strerror(EADDRINUSE));
  }
  // The first one still serves.
  EXPECT_EQ(fetch(base + "/healthz").status, 200);
}

TEST_F(HttpServerTest, APortSharedWithReusePortElsewhereStillFails) {
  // Another program listening with SO_REUSEPORT would let a second SO_REUSEPORT listener in;
  // ours sets no SO_REUSEPORT, so it fails instead of silently splitting the traffic.
  const int other = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(other, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  ::setsockopt(other, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(other, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(other, reinterpret_cast<sockaddr*>(&a), &len);
  HttpServerOptions o;
  o.address = ListenAddress{"127.0.0.1", ntohs(a.sin_port)};
  HttpServer s(backend, o);
  EXPECT_THROW(s.start(), HttpServerError);
  ::close(other);
}

TEST_F(HttpServerTest, AnAddressThatCannotBeBoundFails) {
  HttpServerOptions o;
  o.address = ListenAddress{"192.0.2.1", 6003};  // TEST-NET-1: never a local address
  HttpServer s(backend, o);
  try {
    s.start();
    FAIL() << "bound 192.0.2.1";
  } catch (const HttpServerError& e) {
    EXPECT_EQ(std::string(e.what()), std::string("Cannot listen on 192.0.2.1:6003: ") + std::strerror(EADDRNOTAVAIL));
  }
}

// Sockets in TIME_WAIT whose local port is `port` (from /proc/net/tcp, state 06).
int time_wait_sockets(std::uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const auto colon = local.find(':');
    if (colon == std::string::npos) continue;
    if (std::stoul(local.substr(colon + 1), nullptr, 16) == port && state == "06") ++n;
  }
  return n;
}

TEST_F(HttpServerTest, ARestartedServerRebindsAtOnceDespiteTimeWait) {
  start();
  const std::uint16_t port = server->port();
  // After "Connection: close" the server closes, and its side ends in TIME_WAIT when it closes
  // first; the client may win that race (it did under TSan), so connections are made until one
  // left a TIME_WAIT socket behind.
  for (int i = 0; i < 200 && time_wait_sockets(port) == 0; ++i) {
    EXPECT_EQ(fetch(base + "/healthz", Request().with_header("Connection: close")).status, 200);
  }
  server->stop();
  ASSERT_GT(time_wait_sockets(port), 0) << "no TIME_WAIT socket on port " << port << ": the test proves nothing";
  {
    // Without SO_REUSEADDR the port could not be bound now...
    const int plain = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_NE(::bind(plain, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(errno, EADDRINUSE);
    ::close(plain);
  }
  // ...but the restarted server rebinds it at once.
  HttpServerOptions o;
  o.address = ListenAddress{"127.0.0.1", port};
  server = std::make_unique<HttpServer>(backend, o);
  server->start();
  EXPECT_EQ(server->port(), port);
  EXPECT_EQ(fetch(base + "/healthz").status, 200);
}

TEST_F(HttpServerTest, ServesOnIpv6Loopback) {
  HttpServerOptions o;
  o.address = ListenAddress{"::1", 0};
  HttpServer s(backend, o);
  try {
    s.start();
  } catch (const HttpServerError& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_EQ(s.address(), "[::1]:" + std::to_string(s.port()));
  const auto r = fetch("http://" + s.address() + "/healthz");
  EXPECT_EQ(r.status, 200);
  s.stop();
}

// --- resolve_listen ------------------------------------------------------------------------

TEST(ResolveListen, Table) {
  using Opt = std::optional<std::string>;
  struct Case {
    Opt flag, proxy;
    std::optional<ListenAddress> want;
  };
  const std::vector<Case> cases = {
      {std::nullopt, std::nullopt, std::nullopt},
      {std::nullopt, "", std::nullopt},
      {std::nullopt, "http://localhost:6003", ListenAddress{"127.0.0.1", 6003}},
      {std::nullopt, "http://localhost:6003/", ListenAddress{"127.0.0.1", 6003}},
      {std::nullopt, "HTTP://LocalHost:6003/some/path?x=1", ListenAddress{"127.0.0.1", 6003}},
      {std::nullopt, "http://127.0.0.1:7000", ListenAddress{"127.0.0.1", 7000}},
      {std::nullopt, "http://[::1]:6003", ListenAddress{"::1", 6003}},
      {std::nullopt, "localhost:6003", ListenAddress{"127.0.0.1", 6003}},
      {"none", "http://localhost:6003", std::nullopt},
      {"127.0.0.1:9000", "http://localhost:6003", ListenAddress{"127.0.0.1", 9000}},
      {"localhost:6003", std::nullopt, ListenAddress{"127.0.0.1", 6003}},
      {"0.0.0.0:6003", std::nullopt, ListenAddress{"0.0.0.0", 6003}},
      {"[::1]:6003", std::nullopt, ListenAddress{"::1", 6003}},
      {"[0:0::1]:6003", std::nullopt, ListenAddress{"::1", 6003}},  // canonical form
      {"[::]:65535", std::nullopt, ListenAddress{"::", 65535}},
      {"127.0.0.1:06003", std::nullopt, ListenAddress{"127.0.0.1", 6003}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(resolve_listen(c.flag, c.proxy), c.want)
        << "flag " << c.flag.value_or("(none)") << ", DOMINO_IRSA_PROXY " << c.proxy.value_or("(unset)");
  }
  EXPECT_EQ(ListenAddress({"::1", 6003}).to_string(), "[::1]:6003");
  EXPECT_EQ(ListenAddress({"127.0.0.1", 6003}).to_string(), "127.0.0.1:6003");
}

TEST(ResolveListen, BadValuesThrowNamingTheValueAndWhatIsExpected) {
  struct Case {
    std::optional<std::string> flag, proxy;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"", std::nullopt, "no :PORT"},
      {"6003", std::nullopt, "no :PORT"},
      {":6003", std::nullopt, "no address before :PORT"},
      {"localhost:", std::nullopt, "the port is empty"},
      {"localhost:0", std::nullopt, "not a number from 1 to 65535"},
      {"localhost:65536", std::nullopt, "not a number from 1 to 65535"},
      {"localhost:http", std::nullopt, "not a number from 1 to 65535"},
      {"localhost:-1", std::nullopt, "not a number from 1 to 65535"},
      {"example.com:6003", std::nullopt, "names are not resolved"},
      {"127.1:6003", std::nullopt, "not an IP address"},
      {"::1:6003", std::nullopt, "needs brackets"},
      {"[::1]6003", std::nullopt, "no :PORT after the IPv6 address"},
      {"[::1:6003", std::nullopt, "no closing ']'"},
      {"[127.0.0.1]:6003", std::nullopt, "not an IPv6 address"},
      {"None", std::nullopt, "no :PORT"},
      {std::nullopt, "https://localhost:6003", "the scheme is not http"},
      {std::nullopt, "http://localhost", "no :PORT"},
      {std::nullopt, "http://user@localhost:6003", "user information"},
      {std::nullopt, "http://irsa-proxy:6003", "names are not resolved"},
      {std::nullopt, "http://localhost:6003\n", "not a number"},
  };
  for (const auto& c : cases) {
    try {
      (void)resolve_listen(c.flag, c.proxy);
      ADD_FAILURE() << "accepted " << c.flag.value_or(c.proxy.value_or(""));
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      EXPECT_THAT(m, HasSubstr(c.says)) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
      if (c.flag) {
        EXPECT_THAT(m, HasSubstr("Cannot use --listen \"" + *c.flag + "\""));
        EXPECT_THAT(m, HasSubstr("expected ADDR:PORT"));
      } else {
        EXPECT_THAT(m, HasSubstr("Cannot use DOMINO_IRSA_PROXY \""));
        EXPECT_THAT(m, HasSubstr("expected http://HOST:PORT"));
        EXPECT_THAT(m, HasSubstr("--listen none"));
      }
    }
  }
}

// --- render_metrics ------------------------------------------------------------------------

json sample_status() {
  return json::parse(R"({
    "state": "ready", "refreshing": false, "source": "irsa-svc", "version": 3, "bytes": 1234,
    "sha256": "ab", "obtained_at": "2024-05-01T12:00:00Z", "last_success_at": "2024-05-01T12:00:00Z",
    "last_fetch_ms": 218.5, "fetches": 5, "upstream_requests": 9, "token_requests": 10,
    "failures": 2, "last_error": "HTTP 503", "last_error_at": "2024-05-01T11:59:00Z",
    "next_refresh_at": null, "next_fetch_not_before": null, "waiting_readers": 0,
    "writes": {"committed": 1, "rejected": 4, "pending": 0}, "started_at": "2024-05-01T11:00:00Z",
    "file": "config", "fuse_requests": 77, "refreshes": 6
  })");
}

TEST(RenderMetrics, EveryFamilyHasHelpTypeAndSamples) {
  const std::string text = render_metrics(sample_status());
  const std::vector<std::string> want = {
      "# TYPE irsafs_fetches_total counter",
      "irsafs_fetches_total{outcome=\"success\"} 3",
      "irsafs_fetches_total{outcome=\"failure\"} 2",
      "# TYPE irsafs_upstream_requests_total counter",
      "irsafs_upstream_requests_total 9",
      "irsafs_token_requests_total 10",
      "irsafs_fuse_requests_total 77",
      "irsafs_writes_total{outcome=\"committed\"} 1",
      "irsafs_writes_total{outcome=\"rejected\"} 4",
      "# TYPE irsafs_refreshes_total counter",
      "irsafs_refreshes_total 6",
      "# TYPE irsafs_state gauge",
      "irsafs_state{state=\"empty\"} 0",
      "irsafs_state{state=\"fetching\"} 0",
      "irsafs_state{state=\"ready\"} 1",
      "irsafs_state{state=\"error\"} 0",
      "irsafs_refreshing 0",
      "irsafs_waiting_readers 0",
      "irsafs_content_bytes 1234",
      "irsafs_content_version 3",
      "irsafs_write_sessions_pending 0",
      "irsafs_last_fetch_duration_seconds 0.2185",
      "irsafs_last_success_timestamp_seconds 1714564800",
      "irsafs_last_error_timestamp_seconds 1714564740",
      "irsafs_start_time_seconds 1714561200",
  };
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  for (const auto& w : want) EXPECT_THAT(lines, ::testing::Contains(w)) << text;
  // Every sample's family is declared (HELP then TYPE) before it, names are prefixed, and the
  // text ends with a newline.
  std::string declared;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto& l = lines[i];
    if (l.rfind("# HELP ", 0) == 0) {
      declared = l.substr(7, l.find(' ', 7) - 7);
      ASSERT_LT(i + 1, lines.size());
      EXPECT_EQ(lines[i + 1].rfind("# TYPE " + declared + " ", 0), 0u) << lines[i + 1];
      EXPECT_EQ(declared.rfind("irsafs_", 0), 0u) << declared;
      continue;
    }
    if (l.rfind("# TYPE ", 0) == 0) continue;
    const std::string name = l.substr(0, l.find_first_of("{ "));
    EXPECT_EQ(name, declared) << l;
  }
  EXPECT_EQ(text.back(), '\n');
  // The config text, the sha256 and the error message are not metrics.
  EXPECT_THAT(text, Not(HasSubstr("HTTP 503")));
}

TEST(RenderMetrics, TodaysStatusAndGaps) {
  // No fetch_successes yet: derived from fetches - failures, minus the one running.
  json s = {{"state", "fetching"}, {"refreshing", false}, {"fetches", 3}, {"failures", 1},
            {"last_success_at", nullptr}};
  std::string text = render_metrics(s);
  EXPECT_THAT(text, HasSubstr("irsafs_fetches_total{outcome=\"success\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("irsafs_state{state=\"fetching\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("irsafs_last_success_timestamp_seconds 0\n"));  // never: 0
  EXPECT_THAT(text, Not(HasSubstr("irsafs_fuse_requests_total")));           // absent: left out
  EXPECT_THAT(text, Not(HasSubstr("irsafs_refreshes_total")));
  // An exact count wins; refreshes by trigger get a label; numeric timestamps are taken as is.
  s["fetch_successes"] = 5;
  s["refreshes"] = {{"signal", 1}, {"http", 2}};
  s["last_success_at"] = 1714564800.5;
  text = render_metrics(s);
  EXPECT_THAT(text, HasSubstr("irsafs_fetches_total{outcome=\"success\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("irsafs_refreshes_total{trigger=\"signal\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("irsafs_refreshes_total{trigger=\"http\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("irsafs_last_success_timestamp_seconds 1714564800.5\n"));
  // Garbage in: nothing thrown, nothing invented.
  EXPECT_EQ(render_metrics(json(nullptr)), "");
  EXPECT_EQ(render_metrics(json::array({1, 2})), "");
  EXPECT_EQ(render_metrics(json{{"state", 3}, {"bytes", "many"}, {"writes", 1}}), "");
}

TEST(RenderMetrics, Iso8601) {
  EXPECT_EQ(parse_iso8601_utc("1970-01-01T00:00:00Z"), 0.0);
  EXPECT_EQ(parse_iso8601_utc("2024-02-29T23:59:59Z"), 1709251199.0);
  EXPECT_EQ(parse_iso8601_utc("2000-03-01T00:00:00.25Z"), 951868800.25);
  EXPECT_EQ(parse_iso8601_utc("2024-05-01T12:00:00+00:00"), 1714564800.0);
  for (const char* bad : {"", "2024-05-01", "2024-05-01T12:00:00", "2024-05-01T12:00:00+02:00",
                          "2024-13-01T00:00:00Z", "2024-05-01T12:00:00.Z", "yesterday"}) {
    EXPECT_EQ(parse_iso8601_utc(bad), std::nullopt) << bad;
  }
}

// The metrics through the real parser (python3-prometheus-client), as Prometheus would read them.
TEST(RenderMetrics, ParsedByPrometheusClient) {
  // Debian's python3, as the integration tests use (IRSAFS_PYTHON), not whatever is first on PATH.
  const std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  if (std::system((python + " -c 'import prometheus_client' >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "python3-prometheus-client is not installed";
  }
  const auto helper = std::filesystem::path(__FILE__).parent_path().parent_path() / "integration" / "metrics_parse.py";
  ASSERT_TRUE(std::filesystem::exists(helper)) << helper;
  const auto dir = std::filesystem::temp_directory_path() / ("irsafs-metrics-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "metrics.txt") << render_metrics(sample_status());
  }
  const std::string cmd = python + " '" + helper.string() + "' '" + (dir / "metrics.txt").string() + "' > '" +
                          (dir / "parsed.json").string() + "'";
  const int rc = std::system(cmd.c_str());
  json parsed;
  if (std::ifstream in(dir / "parsed.json"); in) parsed = json::parse(in, nullptr, false);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(rc, 0) << cmd;
  ASSERT_TRUE(parsed.is_object());
  EXPECT_EQ(parsed["irsafs_fetches"]["type"], "counter");
  EXPECT_EQ(parsed["irsafs_upstream_requests"]["samples"][0][0], "irsafs_upstream_requests_total");
  EXPECT_EQ(parsed["irsafs_upstream_requests"]["samples"][0][2], 9.0);
  EXPECT_EQ(parsed["irsafs_state"]["type"], "gauge");
  EXPECT_EQ(parsed["irsafs_state"]["samples"].size(), 4u);
  EXPECT_EQ(parsed["irsafs_last_success_timestamp_seconds"]["samples"][0][2], 1714564800.0);
  for (const auto& [name, family] : parsed.items()) EXPECT_EQ(name.rfind("irsafs_", 0), 0u) << name;
}

}  // namespace
}  // namespace irsafs
