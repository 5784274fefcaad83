#include "fetcher/fetcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/text.h"
#include "common/validator.h"

namespace irsafs {
namespace {

// The first line of a response body for messages: shortened on a character boundary, control
// characters and bytes that are not UTF-8 replaced (the message reaches .status, which is JSON).
std::string first_line(std::string_view body) {
  constexpr std::size_t kMax = 120;
  std::string out = printable(body.substr(0, body.find_first_of("\r\n")), kMax);
  return out.empty() ? "(empty body)" : out;
}

// A server or proxy may echo the request in an error page: the token is cut out of any body
// text before it can reach a message.
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

std::string describe_status(long status, std::string_view body, const Secret& token) {
  return "HTTP " + std::to_string(status) + ": " + first_line(redacted(body, token));
}

}  // namespace

std::string request_body(const FetchSettings& settings) {
  nlohmann::json body = {{"run_id", settings.run_id}};
  if (settings.workload_type) body["irsa_workload_type"] = *settings.workload_type;
  return body.dump();
}

struct Fetcher::Attempt {
  enum class Verdict { kSuccess, kRetry, kRetryNow, kFail, kCancelled } verdict;
  std::string error;
  std::optional<Duration> retry_after;
  std::string content;
};

Fetcher::Attempt Fetcher::attempt_once(TimePoint deadline, FetchResult& result,
                                       std::stop_token stop) {
  using Verdict = Attempt::Verdict;
  using Outcome = HttpResponse::Outcome;
  const auto remaining = [&] { return std::max(Duration(std::chrono::milliseconds(1)), deadline - clock_.now()); };

  // 1. A fresh token for every attempt.
  HttpRequest token_request;
  token_request.url = settings_.token_url;
  token_request.timeout = remaining();
  ++result.token_requests;
  HttpResponse token = transport_.perform(token_request, stop);
  Secret bearer(std::move(token.body));
  if (token.outcome == Outcome::kCancelled) return {Verdict::kCancelled, "cancelled", {}, {}};
  if (token.outcome != Outcome::kCompleted) {
    return {token.permanent ? Verdict::kFail : Verdict::kRetry,
            "token endpoint " + settings_.token_url + ": " + token.error, {}, {}};
  }
  if (token.status != 200) {
    // The body of a failed token response is not a token; it is safe to quote.
    const std::string why = "token endpoint " + settings_.token_url + ": " +
                            describe_status(token.status, bearer.reveal(), Secret());
    return {is_retryable_status(token.status) ? Verdict::kRetry : Verdict::kFail, why, {}, {}};
  }
  // Tokens end with a newline when served by some proxies; it is not part of the token.
  std::string trimmed(bearer.reveal());
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == '\r' || trimmed.back() == ' ')) {
    trimmed.pop_back();
  }
  bearer = Secret(std::move(trimmed));
  if (bearer.empty()) {
    return {Verdict::kRetry, "token endpoint " + settings_.token_url + ": empty token", {}, {}};
  }

  // 2. The config.
  HttpRequest post;
  post.method = HttpRequest::Method::kPost;
  post.url = settings_.endpoint;
  post.headers = {{"Content-Type", "application/json"}, {"Accept", "text/plain, */*"}};
  post.bearer = &bearer;
  post.body = request_body(settings_);
  post.timeout = remaining();
  ++result.requests;
  HttpResponse response = transport_.perform(post, stop);
  // Whatever is not handed back as the config is wiped on the way out: an error page may echo
  // the token.
  struct WipeBody {
    std::string& body;
    ~WipeBody() { Secret::wipe_string(body); }
  } wipe_body{response.body};

  const std::string where = "irsa-svc " + settings_.endpoint + ": ";
  switch (response.outcome) {
    case Outcome::kCancelled:
      return {Verdict::kCancelled, "cancelled", {}, {}};
    case Outcome::kTooLarge:
      return {Verdict::kRetry, where + response.error, {}, {}};
    case Outcome::kTransportError:
      return {response.permanent ? Verdict::kFail : Verdict::kRetry, where + response.error, {}, {}};
    case Outcome::kCompleted:
      break;
  }
  // "Retry-After: 0" or a date already past sets no pace: taken at its word it is a retry
  // storm (no delay at all). The usual backoff applies instead.
  std::optional<Duration> retry_after = response.retry_after;
  if (retry_after && *retry_after <= Duration::zero()) retry_after.reset();
  if (response.status == 200) {
    if (Validation v = validate_config(response.body); !v) {
      // The rule and its position only: a body that is almost a config holds secrets.
      return {Verdict::kRetry, where + "HTTP 200 but not an AWS config: " + v.reason, retry_after, {}};
    }
    return {Verdict::kSuccess, {}, {}, std::move(response.body)};
  }
  const std::string why = where + describe_status(response.status, response.body, bearer);
  if (response.status == 401) return {Verdict::kRetryNow, why, {}, {}};
  if (is_retryable_status(response.status)) return {Verdict::kRetry, why, retry_after, {}};
  return {Verdict::kFail, why, {}, {}};
}

FetchResult Fetcher::fetch(std::stop_token stop) {
  using Verdict = Attempt::Verdict;
  FetchResult result;
  const TimePoint start = clock_.now();
  const TimePoint deadline = start + settings_.deadline;
  bool retried_401 = false;
  int backoff_step = 0;
  for (;;) {
    ++result.attempts;
    Attempt a = attempt_once(deadline, result, stop);
    result.elapsed = clock_.now() - start;
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
      if (!retried_401) {
        retried_401 = true;
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
    Duration delay = a.retry_after ? settings_.retry.paced(*a.retry_after, random_)
                                   : settings_.retry.backoff(++backoff_step, random_);
    const TimePoint now = clock_.now();
    const TimePoint last_start = deadline - settings_.retry.min_attempt;
    if (now + delay > last_start && !a.retry_after) delay = std::max(Duration::zero(), last_start - now);
    if (now + delay > last_start || now >= last_start) {
      // Blame the Retry-After only when it is what made the retry miss the deadline.
      const bool paced_out = a.retry_after && now < last_start;
      result.error = a.error + " (gave up after " + std::to_string(result.attempts) +
                     (result.attempts == 1 ? " attempt" : " attempts") + " in " +
                     format_seconds(result.elapsed) + ": " +
                     (paced_out ? "the server's Retry-After ends past" : "no time left before") +
                     " the deadline of " + format_seconds(settings_.deadline) + ")";
      return result;
    }
    spdlog::warn("Attempt {} failed: {}; retrying in {}", result.attempts, a.error, format_seconds(delay));
    if (!clock_.sleep_until(now + delay, stop)) {
      result.cancelled = true;
      result.error = "fetch cancelled";
      result.elapsed = clock_.now() - start;
      return result;
    }
  }
}

}  // namespace irsafs
