// Retry schedule for calls to irsa-svc: exponential backoff with full jitter, paced by the
// server's Retry-After when it sends one. The same rule, with other numbers, spaces the mount's
// fetches after failures (ServiceOptions::hold_off).
#pragma once

#include <optional>
#include <string_view>

#include "common/clock.h"

namespace irsafs {

struct RetryPolicy {
  // Attempt n (1-based) failed: sleep U(0, min(cap, base * growth^(n-1))). Chosen by the fleet
  // benchmark (docs/performance.md): against a server shedding load without Retry-After, a
  // gentler growth to a lower cap does fewer requests and finishes sooner than 0.5 s doubling
  // to 20 s (the latter starts too eagerly and ends with clients asleep while the server idles).
  Duration base = std::chrono::milliseconds(1500);
  double growth = 1.5;
  Duration cap = std::chrono::seconds(8);
  // The jitter's floor: the delay is U(floor, 1) of the window. 0 is full jitter (retries of
  // one fetch); the mount's hold-off between failed fetches keeps at least half its window.
  double jitter_floor = 0.0;
  // A Retry-After of R seconds: sleep R + U(0, R) (the server sets the pace; the jitter spreads
  // the clients it just shed), never more than this.
  Duration retry_after_cap = std::chrono::seconds(120);
  // No attempt starts with less time than this left before the deadline.
  Duration min_attempt = std::chrono::seconds(1);

  // The delay before the attempt after failed attempt `attempt` (1-based).
  Duration backoff(int attempt, Random& random) const;
  // The delay for a server-given Retry-After.
  Duration paced(Duration retry_after, Random& random) const;
};

// Which HTTP statuses are worth another attempt: 408, 429 and 5xx.
bool is_retryable_status(long status);

}  // namespace irsafs
