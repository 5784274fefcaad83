#include "fetcher/fetcher.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "fetcher/attempt.h"

namespace irsafs {

std::string request_body(const FetchSettings& settings) {
  nlohmann::json body = {{"run_id", settings.run_id}};
  if (settings.workload_type) body["irsa_workload_type"] = *settings.workload_type;
  return body.dump();
}

Attempt Fetcher::attempt_once(TimePoint deadline, FetchResult& result, std::stop_token stop) {
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
  const WipedOnExit wipe_body(response.body);

  const std::string where = "irsa-svc " + settings_.endpoint + ": ";
  if (auto failed = incomplete_response(response, where)) return *failed;
  if (auto config = config_response(response, where)) return *config;
  const std::optional<Duration> retry_after = usable_retry_after(response);
  const std::string why = where + describe_status(response.status, response.body, bearer);
  if (response.status == 401) return {Verdict::kRetryNow, why, {}, {}};
  if (is_retryable_status(response.status)) return {Verdict::kRetry, why, retry_after, {}};
  return {Verdict::kFail, why, {}, {}};
}

FetchResult Fetcher::fetch(std::stop_token stop) {
  return run_attempts(settings_.retry, settings_.deadline, clock_, random_, stop,
                      [this](TimePoint deadline, FetchResult& result, std::stop_token s) {
                        return attempt_once(deadline, result, s);
                      });
}

}  // namespace irsafs
