#include "fetcher/attempt.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/text.h"
#include "common/validator.h"

namespace irsafs {
namespace {

// The first line of a response body for messages: shortened on a character boundary, control
// characters and bytes that are not UTF-8 replaced (the message reaches .status, which is JSON).
std::string first_line(std::string_view body, std::size_t max_bytes) {
  std::string out = printable(body.substr(0, body.find_first_of("\r\n")), max_bytes);
  return out.empty() ? "(empty body)" : out;
}

// The token is cut out of any body text before it can reach a message.
std::string redacted(std::string_view body, const Secret& token) {
  // Built piece by piece: the token is never copied, not even into spare capacity.
  const std::string_view t = token.reveal();
  if (t.empty()) return std::string(body);
  std::string out;
  std::size_t from = 0;
  for (std::size_t at = body.find(t); at != std::string_view::npos; at = body.find(t, from)) {
    out.append(body.substr(from, at - from)).append("[redacted]");
    from = at + t.size();
  }
  out.append(body.substr(from));
  return out;
}

}  // namespace

std::string describe_status(long status, std::string_view body, const Secret& token, std::size_t max_bytes) {
  return "HTTP " + std::to_string(status) + ": " + first_line(redacted(body, token), max_bytes);
}

std::optional<Attempt> config_response(HttpResponse& response, const std::string& where) {
  if (response.status != 200) return std::nullopt;
  if (Validation v = validate_config(response.body); !v) {
    return Attempt{Attempt::Verdict::kRetry, where + "HTTP 200 but not an AWS config: " + v.reason,
                   usable_retry_after(response), {}};
  }
  return Attempt{Attempt::Verdict::kSuccess, {}, {}, std::move(response.body)};
}

std::optional<Duration> usable_retry_after(const HttpResponse& response) {
  std::optional<Duration> r = response.retry_after;
  if (r && *r <= Duration::zero()) r.reset();
  return r;
}

std::optional<Attempt> incomplete_response(const HttpResponse& response, const std::string& where) {
  using Verdict = Attempt::Verdict;
  switch (response.outcome) {
    case HttpResponse::Outcome::kCancelled:
      return Attempt{Verdict::kCancelled, "cancelled", {}, {}};
    case HttpResponse::Outcome::kTooLarge:
      return Attempt{Verdict::kRetry, where + response.error, {}, {}};
    case HttpResponse::Outcome::kTransportError:
      return Attempt{response.permanent ? Verdict::kFail : Verdict::kRetry, where + response.error, {}, {}};
    case HttpResponse::Outcome::kCompleted:
      break;
  }
  return std::nullopt;
}

FetchResult run_attempts(const RetryPolicy& retry, Duration deadline_after, Clock& clock, Random& random,
                         std::stop_token stop, const AttemptFn& attempt) {
  using Verdict = Attempt::Verdict;
  FetchResult result;
  const TimePoint start = clock.now();
  const TimePoint deadline = start + deadline_after;
  bool retried_now = false;
  int backoff_step = 0;
  for (;;) {
    ++result.attempts;
    Attempt a = attempt(deadline, result, stop);
    result.elapsed = clock.now() - start;
    if (a.verdict == Verdict::kSuccess) {
      result.ok = true;
      result.content = std::move(a.content);
      return result;
    }
    if (a.verdict == Verdict::kCancelled) {
      result.cancelled = true;
      result.error = "fetch cancelled";
      return result;
    }
    if (a.verdict == Verdict::kRetryNow) {
      // 401: the token may have expired between the two requests; one fresh token, one more try.
      if (!retried_now) {
        retried_now = true;
        spdlog::warn("Attempt {} failed: {}; retrying at once with a fresh token", result.attempts, a.error);
        continue;
      }
      result.error = a.error + " (again with a fresh token)";
      return result;
    }
    if (a.verdict == Verdict::kFail) {
      result.error = a.error;
      return result;
    }
    // No attempt starts with less than min_attempt left: it would only time out and hide the
    // real reason. A backoff that would end later is shortened so one last attempt still fits; a
    // server-given Retry-After is respected, so the fetch then ends.
    Duration delay = a.retry_after ? retry.paced(*a.retry_after, random) : retry.backoff(++backoff_step, random);
    const TimePoint now = clock.now();
    const TimePoint last_start = deadline - retry.min_attempt;
    if (now + delay > last_start && !a.retry_after) delay = std::max(Duration::zero(), last_start - now);
    if (now + delay > last_start || now >= last_start) {
      // Blame the Retry-After only when it is what made the retry miss the deadline.
      const bool paced_out = a.retry_after && now < last_start;
      result.error = a.error + " (gave up after " + std::to_string(result.attempts) +
                     (result.attempts == 1 ? " attempt" : " attempts") + " in " + format_seconds(result.elapsed) +
                     ": " + (paced_out ? "the server's Retry-After ends past" : "no time left before") +
                     " the deadline of " + format_seconds(deadline_after) + ")";
      return result;
    }
    spdlog::warn("Attempt {} failed: {}; retrying in {}", result.attempts, a.error, format_seconds(delay));
    if (!clock.sleep_until(now + delay, stop)) {
      result.cancelled = true;
      result.error = "fetch cancelled";
      result.elapsed = clock.now() - start;
      return result;
    }
  }
}

}  // namespace irsafs
