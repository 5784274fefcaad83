#include "fetcher/retry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <string>

namespace irsafs {
namespace {

Duration scale(Duration d, double factor) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::nano>(
      static_cast<double>(d.count()) * factor));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Duration RetryPolicy::backoff(int attempt, Random& random) const {
  // base * growth^(attempt-1), in double and clamped so large attempts cannot overflow.
  const double factor = std::pow(growth, std::clamp(attempt - 1, 0, 200));
  const double window_ns = std::min(static_cast<double>(cap.count()), static_cast<double>(base.count()) * factor);
  return Duration(static_cast<Duration::rep>(window_ns * random.uniform01()));
}

Duration RetryPolicy::paced(Duration retry_after, Random& random) const {
  const Duration r = std::min(retry_after, retry_after_cap);
  return std::min(retry_after_cap, r + scale(r, random.uniform01()));
}

std::optional<Duration> parse_retry_after(std::string_view value, WallTime now) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    long long seconds = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec != std::errc() || ptr != value.data() + value.size()) {
      return std::chrono::hours(24);  // absurdly large: the caller clamps it
    }
    return std::chrono::seconds(std::min<long long>(seconds, 24 * 3600));
  }
  const std::string text(value);
  static constexpr const char* kFormats[] = {
      "%a, %d %b %Y %H:%M:%S GMT",  // IMF-fixdate
      "%A, %d-%b-%y %H:%M:%S GMT",  // RFC 850
      "%a %b %e %H:%M:%S %Y",       // asctime
  };
  for (const char* format : kFormats) {
    std::tm tm{};
    const char* end = strptime(text.c_str(), format, &tm);
    if (end == nullptr || *end != '\0') continue;
    const WallTime when = std::chrono::system_clock::from_time_t(timegm(&tm));
    return when <= now ? Duration::zero() : std::chrono::duration_cast<Duration>(when - now);
  }
  return std::nullopt;
}

bool is_retryable_status(long status) {
  return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

}  // namespace irsafs
