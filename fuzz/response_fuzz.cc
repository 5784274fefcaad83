// Fuzzes the handling of irsa-svc's responses: status, Retry-After and body come from the input;
// the fetch loop must never accept an invalid config, never alter the bytes it accepts, never put
// the token in an error, and always end within its deadline.
#include <spdlog/spdlog.h>

#include <cstring>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/validator.h"
#include "fetcher/fetcher.h"

namespace {

using namespace irsafs;

constexpr std::string_view kToken = "fuzz-token-7c1f2e";

class FakeClock final : public irsafs::Clock {
 public:
  TimePoint now() const override { return now_; }
  WallTime wall_now() const override { return WallTime(std::chrono::seconds(1'800'000'000)) + (now_ - TimePoint{}); }
  bool sleep_until(TimePoint t, std::stop_token) override {
    if (t > now_) now_ = t;
    return true;
  }
  TimePoint now_{};
};

class Rand final : public Random {
 public:
  double uniform01() override { return 0.5; }
};

// Every POST gets the same fuzzed response; each request costs 100 ms of fake time.
class FakeTransport final : public irsafs::Transport {
 public:
  FakeTransport(FakeClock& c, long status, std::optional<Duration> retry_after, std::string body)
      : clock_(c), status_(status), retry_after_(std::move(retry_after)), body_(std::move(body)) {}
  HttpResponse perform(const HttpRequest& r, std::stop_token) override {
    clock_.now_ += std::chrono::milliseconds(100);
    HttpResponse out;
    out.outcome = HttpResponse::Outcome::kCompleted;
    if (r.method == HttpRequest::Method::kGet) {
      out.status = 200;
      out.body = std::string(kToken);
      return out;
    }
    out.status = status_;
    out.retry_after = retry_after_;
    out.body = body_;
    return out;
  }

 private:
  FakeClock& clock_;
  long status_;
  std::optional<Duration> retry_after_;
  std::string body_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  static constexpr long kStatuses[] = {200, 200, 200, 200, 401, 403, 404, 408, 429, 500, 503, 302, 0, 999};
  const long status = kStatuses[data[0] % std::size(kStatuses)];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  // A Retry-After (whole seconds, as libcurl gives it; any sign) when the second byte is odd.
  std::optional<Duration> retry_after;
  if ((data[1] & 1) && rest.size() >= 5) {
    std::int32_t seconds = 0;
    std::memcpy(&seconds, rest.data() + 1, sizeof seconds);
    retry_after = std::chrono::seconds(seconds);
    rest.remove_prefix(5);
  }
  const std::string body(rest);

  FakeClock clock;
  Rand rand;
  FakeTransport transport(clock, status, retry_after, body);
  FetchSettings s;
  s.endpoint = "https://irsa/x";
  s.token_url = "http://token";
  s.run_id = "r";
  s.deadline = std::chrono::seconds(30);
  Fetcher fetcher(s, transport, clock, rand);
  const FetchResult r = fetcher.fetch();

  if (r.ok && (status != 200 || r.content != body || !validate_config(r.content))) std::abort();
  if (!r.ok && status == 200 && validate_config(body)) std::abort();
  if (r.error.find(kToken) != std::string::npos) std::abort();
  if (r.elapsed > s.deadline + std::chrono::seconds(1)) std::abort();
  return 0;
}
