// Fuzzes both sides of the peer protocol (issue 14) on what the network gives them:
//  - the worker (fetcher/peer_source.cc): the head's status (304 included), Retry-After and body
//    come from the input; the source must never accept an invalid config, never alter the bytes
//    it accepts, hand back the previous content only for a 304, never put its token in an error,
//    and always end within its deadline;
//  - the head (http/conditional.cc): the input as an If-None-Match value; it matches only when
//    it is "*" or names the tag, quoted.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/validator.h"
#include "fetcher/peer_source.h"
#include "http/conditional.h"

namespace {

using namespace irsafs;

constexpr std::string_view kToken = "fuzz.peer-token.7c1f2e";
constexpr std::string_view kPrevious = "[profile a]\nregion = us-east-1\n";

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

// The first GET gets the previous content (so the second is conditional); every later one the
// fuzzed answer. Each request costs 100 ms of fake time.
class FakeTransport final : public irsafs::Transport {
 public:
  FakeTransport(FakeClock& c, long status, std::optional<Duration> retry_after, std::string body)
      : clock_(c), status_(status), retry_after_(std::move(retry_after)), body_(std::move(body)) {}
  HttpResponse perform(const HttpRequest&, std::stop_token) override {
    clock_.now_ += std::chrono::milliseconds(100);
    HttpResponse out;
    out.outcome = HttpResponse::Outcome::kCompleted;
    if (first_) {
      first_ = false;
      out.status = 200;
      out.body = std::string(kPrevious);
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
  bool first_ = true;
};

// The worker's token, in a file of this process's own, removed at exit.
struct TokenFile {
  TokenFile() : path("/tmp/irsafs-peer-fuzz-token-" + std::to_string(::getpid())) {
    std::ofstream(path) << kToken << "\n";
  }
  ~TokenFile() { ::unlink(path.c_str()); }
  std::string path;
};

const std::string& token_file() {
  static const TokenFile file;
  return file.path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::string_view all(reinterpret_cast<const char*>(data), size);

  // The head's side.
  const std::string tag = sha256_hex(kPrevious);
  const bool matched = if_none_match_matches(all, tag);
  if (matched && all.find('*') == std::string_view::npos && all.find("\"" + tag + "\"") == std::string_view::npos) {
    std::abort();
  }

  // The worker's side.
  static constexpr long kStatuses[] = {200, 200, 200, 304, 304, 401, 403, 404, 408, 429, 500, 503, 302, 0, 999};
  const long status = kStatuses[data[0] % std::size(kStatuses)];
  std::string_view rest = all.substr(1);
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
  PeerSettings s;
  s.url = "http://head:6010/v1/config";
  s.token_file = token_file();
  s.deadline = std::chrono::seconds(30);
  PeerSource source(s, transport, clock, rand);
  if (const FetchResult first = source.fetch(); !first.ok || first.content != kPrevious) std::abort();
  const TimePoint start = clock.now();
  const FetchResult r = source.fetch();

  if (r.ok) {
    const bool fresh = status == 200 && r.content == body && validate_config(r.content);
    const bool same = status == 304 && r.content == kPrevious;
    if (!fresh && !same) std::abort();
  }
  if (!r.ok && status == 200 && validate_config(body)) std::abort();
  if (!r.ok && status == 304) std::abort();
  if (r.error.find(kToken) != std::string::npos) std::abort();
  if (clock.now() - start > s.deadline + std::chrono::seconds(1)) std::abort();
  return 0;
}
