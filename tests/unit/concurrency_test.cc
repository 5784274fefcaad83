// The core under real threads: a FetchThread, a Ticker and many readers, writers and refreshes at
// once. Run under TSan (preset "tsan") with --gtest_repeat to find races.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/config_service.h"
#include "core/daemon.h"
#include "core/runtime.h"
#include "fetcher/fetcher.h"

namespace irsafs {
namespace {

constexpr const char* kA = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n";
constexpr const char* kB = "[profile b]\nrole_arn = arn:aws:iam::2:role/b\nregion = eu-west-1\n";

// Serves kA and kB alternately, slowly enough that readers pile up.
class AlternatingTransport final : public Transport {
 public:
  HttpResponse perform(const HttpRequest& r, std::stop_token) override {
    HttpResponse out;
    out.outcome = HttpResponse::Outcome::kCompleted;
    out.status = 200;
    if (r.method == HttpRequest::Method::kGet) {
      out.body = "token";
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int n = posts.fetch_add(1);
    if (fail_every != 0 && n % fail_every == fail_every - 1) {
      out.status = 400;  // permanent: the fetch fails at once
      return out;
    }
    out.body = n % 2 == 0 ? kA : kB;
    return out;
  }
  std::atomic<int> posts{0};
  int fail_every = 0;
};

// The daemon's own wiring (core/daemon.h) around a fake transport, with short hold-offs.
struct Rig {
  explicit Rig(int fail_every = 0) {
    auto t = std::make_unique<AlternatingTransport>();
    t->fail_every = fail_every;
    transport = t.get();
    DaemonSettings ds;
    ds.fetch.endpoint = "https://irsa/x";
    ds.fetch.token_url = "http://token";
    ds.fetch.run_id = "r";
    ds.fetch.deadline = std::chrono::seconds(10);
    ds.service.hold_off.base = std::chrono::milliseconds(1);
    ds.service.hold_off.cap = std::chrono::milliseconds(4);
    ds.service.write_quiet = std::chrono::milliseconds(1);
    daemon = std::make_unique<Daemon>(ds, std::move(t));
    service = &daemon->service();
    daemon->start();
  }

  AlternatingTransport* transport;
  std::unique_ptr<Daemon> daemon;  // stopped by its destructor
  ConfigService* service;
};

// Blocks until the reader's outcome arrives, like a parked FUSE open.
ReadOutcome blocking_read(ConfigService& s, WaiterId id) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<ReadOutcome> got;
  auto now = s.read(id, [&](const ReadOutcome& o) {
    std::lock_guard lock(mu);
    got = o;
    cv.notify_one();
  });
  if (now) return *now;
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return got.has_value(); });
  return *got;
}

TEST(Concurrency, ManyColdReadersOneFetchWholeVersionsOnly) {
  Rig rig;
  std::atomic<WaiterId> ids{1};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 16; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        ReadOutcome o = blocking_read(*rig.service, ids++);
        if (!o.content || (o.content->bytes != kA && o.content->bytes != kB)) ++bad;
      }
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(rig.transport->posts.load(), 1);
}

TEST(Concurrency, RefreshesWritesAndReadersTogether) {
  Rig rig(/*fail_every=*/5);
  std::atomic<bool> stop{false};
  std::atomic<WaiterId> ids{1};
  std::atomic<int> bad{0}, reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        ReadOutcome o = blocking_read(*rig.service, ids++);
        ++reads;
        if (o.content && o.content->bytes != kA && o.content->bytes != kB) ++bad;
        if (!o.content && o.error != EIO) ++bad;
        if (o.content) rig.service->status();
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop) {
      rig.service->refresh_now();
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  threads.emplace_back([&] {
    for (std::uint64_t w = 1000; !stop; ++w) {
      rig.service->truncate(w, 0);
      rig.service->write(w, 0, w % 2 ? kA : kB);
      if (w % 3 == 0) rig.service->flush(w);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
}

TEST(Concurrency, ShutdownWithWaitersAndAFetchInFlightEndsCleanly) {
  for (int round = 0; round < 20; ++round) {
    Rig rig;
    std::vector<std::thread> readers;
    std::atomic<WaiterId> ids{1};
    for (int t = 0; t < 4; ++t) readers.emplace_back([&] { blocking_read(*rig.service, ids++); });
    rig.service->shutdown();  // every waiter is answered, now or by the fetch
    for (auto& r : readers) r.join();
  }
}

// Issue 9, item 4: FetchThread::cancel() ends a fetch that is sleeping between retries (the
// service cancels it when a written text makes it useless); the fetch reports as cancelled.
class FailingTransport final : public Transport {
 public:
  HttpResponse perform(const HttpRequest& r, std::stop_token) override {
    HttpResponse out;
    out.outcome = HttpResponse::Outcome::kCompleted;
    out.status = r.method == HttpRequest::Method::kGet ? 200 : 503;
    out.body = r.method == HttpRequest::Method::kGet ? "token" : "busy";
    if (r.method == HttpRequest::Method::kPost) {
      std::lock_guard lock(mu);
      ++posts;
      cv.notify_all();
    }
    return out;
  }
  std::mutex mu;
  std::condition_variable cv;
  int posts = 0;
};

struct Done {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<FetchResult> result;
  std::function<void(FetchResult)> callback() {
    return [this](FetchResult r) {
      std::lock_guard lock(mu);
      result = std::move(r);
      cv.notify_all();
    };
  }
  bool wait(std::chrono::seconds limit) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [this] { return result.has_value(); });
  }
};

TEST(Concurrency, ACancelledFetchStopsRetrying) {
  FailingTransport transport;
  SystemClock clock;
  SystemRandom random;
  FetchSettings fs;
  fs.endpoint = "https://irsa/x";
  fs.token_url = "http://token";
  fs.run_id = "r";
  fs.deadline = std::chrono::seconds(600);
  fs.retry.base = std::chrono::seconds(100);  // asleep between attempts until cancelled
  fs.retry.growth = 1.0;
  Fetcher fetcher(fs, transport, clock, random);
  FetchThread thread(fetcher);
  thread.start();
  Done first, queued;
  thread.launch(first.callback());
  {
    std::unique_lock lock(transport.mu);
    ASSERT_TRUE(transport.cv.wait_for(lock, std::chrono::seconds(30), [&] { return transport.posts >= 1; }));
  }
  const auto start = std::chrono::steady_clock::now();
  thread.cancel();
  ASSERT_TRUE(first.wait(std::chrono::seconds(30))) << "the fetch did not end after cancel()";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_TRUE(first.result->cancelled);
  EXPECT_EQ(transport.posts, 1);
  // The thread goes on: a later launch runs (and is stopped with the thread).
  thread.launch(queued.callback());
  thread.stop();
  ASSERT_TRUE(queued.wait(std::chrono::seconds(30)));
  EXPECT_TRUE(queued.result->cancelled);
}

// Issue 9, item 6: an exception in a fetch (the JSON of a bad run id threw type_error 316)
// ended the daemon from the fetch thread. It now fails that fetch with the reason.
TEST(Concurrency, AnExceptionInAFetchAbortsTheDaemon) {
  FailingTransport transport;
  SystemClock clock;
  SystemRandom random;
  FetchSettings fs;
  fs.endpoint = "https://irsa/x";
  fs.token_url = "http://token";
  fs.run_id = "run-\xff";  // resolve_options refuses this; here it reaches the fetch
  Fetcher fetcher(fs, transport, clock, random);
  FetchThread thread(fetcher);
  thread.start();
  Done done;
  thread.launch(done.callback());
  ASSERT_TRUE(done.wait(std::chrono::seconds(30)));
  EXPECT_FALSE(done.result->ok);
  EXPECT_NE(done.result->error.find("internal error"), std::string::npos) << done.result->error;
  thread.stop();
}

}  // namespace
}  // namespace irsafs
