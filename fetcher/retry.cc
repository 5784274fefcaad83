#include "fetcher/retry.h"

#include <algorithm>
#include <cmath>

namespace irsafs {
namespace {

Duration scale(Duration d, double factor) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::nano>(
      static_cast<double>(d.count()) * factor));
}

}  // namespace

Duration RetryPolicy::backoff(int attempt, Random& random) const {
  // base * growth^(attempt-1), in double and clamped so large attempts cannot overflow.
  const double factor = std::pow(growth, std::clamp(attempt - 1, 0, 200));
  const double window_ns = std::min(static_cast<double>(cap.count()), static_cast<double>(base.count()) * factor);
  return Duration(static_cast<Duration::rep>(window_ns * (jitter_floor + (1 - jitter_floor) * random.uniform01())));
}

Duration RetryPolicy::paced(Duration retry_after, Random& random) const {
  const Duration r = std::min(retry_after, retry_after_cap);
  return std::min(retry_after_cap, r + scale(r, random.uniform01()));
}

bool is_retryable_status(long status) {
  return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

}  // namespace irsafs
