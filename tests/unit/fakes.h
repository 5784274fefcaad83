// Fakes for unit tests: time that moves only when told, scripted randomness, a scripted
// transport, and a launcher whose fetches the test completes by hand.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "core/config_service.h"
#include "fetcher/transport.h"

namespace irsafs::testing {

class FakeClock final : public Clock {
 public:
  TimePoint now() const override { return now_; }
  WallTime wall_now() const override { return WallTime(std::chrono::seconds(1'800'000'000)) + (now_ - TimePoint{}); }
  // Sleeping just moves time forward; the sleeps are recorded.
  bool sleep_until(TimePoint t, std::stop_token stop) override {
    if (stop.stop_requested()) return false;
    sleeps.push_back(t - now_);
    if (t > now_) now_ = t;
    return true;
  }
  void advance(Duration d) { now_ += d; }

  std::vector<Duration> sleeps;

 private:
  TimePoint now_{std::chrono::hours(1)};
};

class FakeRandom final : public Random {
 public:
  explicit FakeRandom(double value = 0.5) : value_(value) {}
  double uniform01() override { return value_; }
  void set(double v) { value_ = v; }

 private:
  double value_;
};

// Answers each request with the next scripted response for its URL kind; records requests.
class ScriptedTransport final : public Transport {
 public:
  struct Seen {
    HttpRequest::Method method;
    std::string url;
    std::string body;
    std::string bearer;
    std::optional<Duration> timeout;
    std::vector<std::pair<std::string, std::string>> headers;
  };

  ScriptedTransport(std::string token_url, FakeClock* clock = nullptr) : token_url_(std::move(token_url)), clock_(clock) {}

  HttpResponse perform(const HttpRequest& r, std::stop_token) override {
    seen.push_back({r.method, r.url, r.body, r.bearer ? std::string(r.bearer->reveal()) : "", r.timeout, r.headers});
    if (clock_ != nullptr) {
      // Like a real transport, a request never outlives its timeout.
      if (r.timeout && latency > *r.timeout) {
        clock_->advance(*r.timeout);
        HttpResponse late = transport_error("Operation timed out");
        late.timed_out = true;
        return late;
      }
      clock_->advance(latency);
    }
    if (r.url == token_url_) {
      ++token_calls;
      if (!token_script.empty()) {
        HttpResponse next = token_script.front();
        token_script.pop_front();
        return next;
      }
      return ok("token-" + std::to_string(token_calls));
    }
    ++post_calls;
    if (post_script.empty()) return ok(default_body);
    HttpResponse next = post_script.front();
    post_script.pop_front();
    return next;
  }

  static HttpResponse ok(std::string body) { return status(200, std::move(body)); }
  static HttpResponse status(long code, std::string body = "", std::optional<Duration> retry_after = {}) {
    HttpResponse r;
    r.outcome = HttpResponse::Outcome::kCompleted;
    r.status = code;
    r.body = std::move(body);
    r.retry_after = std::move(retry_after);
    return r;
  }
  static HttpResponse transport_error(std::string why) {
    HttpResponse r;
    r.outcome = HttpResponse::Outcome::kTransportError;
    r.error = std::move(why);
    return r;
  }

  std::deque<HttpResponse> token_script;
  std::deque<HttpResponse> post_script;
  std::string default_body = "[profile a]\nregion = us-east-1\n";
  std::vector<Seen> seen;
  int token_calls = 0;
  int post_calls = 0;
  Duration latency{};

 private:
  std::string token_url_;
  FakeClock* clock_;
};

// Holds launched fetches until the test completes them.
class ManualLauncher final : public FetchLauncher {
 public:
  void launch(std::function<void(FetchResult)> done) override { pending.push_back(std::move(done)); }
  // Counted; the test then completes the fetch as it likes (a cancelled result, or one that
  // ended first).
  void cancel() override { ++cancels; }

  void succeed(std::string content, int requests = 1) {
    FetchResult r;
    r.ok = true;
    r.content = std::move(content);
    r.requests = requests;
    r.token_requests = requests;
    complete(std::move(r));
  }
  void fail(std::string why, int requests = 1) {
    FetchResult r;
    r.error = std::move(why);
    r.requests = requests;
    complete(std::move(r));
  }
  void complete(FetchResult r) {
    ASSERT_FALSE(pending.empty()) << "no fetch in flight";
    auto done = std::move(pending.front());
    pending.pop_front();
    done(std::move(r));
  }

  void cancelled(int requests = 1) {
    FetchResult r;
    r.cancelled = true;
    r.error = "fetch cancelled";
    r.requests = requests;
    complete(std::move(r));
  }

  std::deque<std::function<void(FetchResult)>> pending;
  int cancels = 0;
};

}  // namespace irsafs::testing
