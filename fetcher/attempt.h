// What every source of the config shares (irsa-svc's Fetcher, the PeerSource): the outcome of
// one attempt, the loop that retries attempts within a deadline under a RetryPolicy, and the
// one-line descriptions of failed HTTP answers.
#pragma once

#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/secret.h"
#include "fetcher/result.h"
#include "fetcher/retry.h"
#include "fetcher/transport.h"

namespace irsafs {

struct Attempt {
  enum class Verdict {
    kSuccess,   // `content` is the validated config
    kRetry,     // after the backoff, or the server's `retry_after`
    kRetryNow,  // once, at once (a credential may have expired between two requests); then fail
    kFail,      // permanent: retrying cannot mend it
    kCancelled,
  };
  Verdict verdict = Verdict::kFail;
  std::string error;  // one line, never a token or the content
  std::optional<Duration> retry_after;
  std::string content;
};

// One attempt: `deadline` bounds its requests; it counts them into `result`.
using AttemptFn = std::function<Attempt(TimePoint deadline, FetchResult& result, std::stop_token stop)>;

// Runs attempts until success, a permanent failure, the deadline or `stop`. No attempt starts
// with less than retry.min_attempt left; a backoff that would end later is shortened so one last
// attempt still fits, a server-given Retry-After is respected (the fetch then ends). The error
// of a fetch that gave up says how many attempts in how long, and why it stopped.
FetchResult run_attempts(const RetryPolicy& retry, Duration deadline, Clock& clock, Random& random,
                         std::stop_token stop, const AttemptFn& attempt);

// The attempt's verdict for a response that did not complete (cancelled, too large, transport
// error), nullopt when it completed. `where` prefixes the error ("irsa-svc URL: ").
std::optional<Attempt> incomplete_response(const HttpResponse& response, const std::string& where);

// A 200's verdict: success with the body when it is a valid AWS config, else a retry whose error
// names the rule and its position only (a body that is almost a config holds secrets); nullopt
// for another status. The body is moved out on success.
std::optional<Attempt> config_response(HttpResponse& response, const std::string& where);

// Wipes a response body on the way out of an attempt, whatever is returned: an error page may
// echo the token, and a config not handed back is no one's to keep.
class WipedOnExit {
 public:
  explicit WipedOnExit(std::string& s) : s_(s) {}
  ~WipedOnExit() { Secret::wipe_string(s_); }
  WipedOnExit(const WipedOnExit&) = delete;
  WipedOnExit& operator=(const WipedOnExit&) = delete;

 private:
  std::string& s_;
};

// "HTTP 503: <first line of the body>", the body's first line bounded (`max_bytes`), made
// printable, with `token` cut out (a server or proxy may echo the request in an error page).
std::string describe_status(long status, std::string_view body, const Secret& token, std::size_t max_bytes = 120);

// A Retry-After that sets a pace: "Retry-After: 0" or a date already past sets none (taken at
// its word it is a retry storm); the usual backoff applies instead.
std::optional<Duration> usable_retry_after(const HttpResponse& response);

}  // namespace irsafs
