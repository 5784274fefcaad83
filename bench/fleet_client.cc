// A small libcurl client of irsa-svc that makes the same requests as `irsafs fetch` (a token
// GET, then the HTTPS POST with the bearer token; a fresh connection for each, the CA given as
// a PEM blob) with a pluggable retry policy. It stands in for the peer policies of the fleet
// benchmark and for prototypes of client changes; it never replaces irsafs in a measurement of
// irsafs.
//
//   bench_fleet_client --endpoint URL --token-url URL --ca-file PEM --run-id ID
//       [--policy backoff|naive|botocore] [--base S] [--growth G] [--cap S] [--ra pace|floor|ignore]
//       [--max-attempts N] [--deadline S] [--timeout S]
//     One fetch with retries; prints {"ok", "attempts", "elapsed_s"} and exits 0 on success.
//   bench_fleet_client ... --serve
//     Reference for the cold read: reads lines from stdin; for each, one token GET + POST (no
//     retry) in this already running process, and prints the milliseconds it took.
//
// Policies (delay after failed attempt n = 1, 2, ...; RA = the response's Retry-After, as
// libcurl parses it). Every schedule is irsafs's own RetryPolicy (fetcher/retry.h), with other
// numbers where a peer's differ, and irsafs's is_retryable_status decides what is retried:
//   backoff   RetryPolicy::backoff, full jitter U(0, min(cap, base * growth^(n-1))); with a
//             Retry-After:
//               --ra pace   RetryPolicy::paced: RA + U(0, RA), at most 120 s (what irsafs does)
//               --ra floor  RA + RetryPolicy::backoff
//               --ra ignore RetryPolicy::backoff alone
//             until the deadline. Without --base/--growth/--cap: RetryPolicy's own numbers
//             (bench.py's "irsafs-client" row runs exactly irsafs's schedule in this client).
//   naive     a fixed 1 s, no jitter, RA ignored, until the deadline (a naive sidecar)
//   botocore  standard mode: at most 3 attempts, RetryPolicy{base 1 s, growth 2, cap 20 s}:
//             U(0, 1) * min(2^(n-1), 20) s, RA ignored
#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "common.h"
#include "fetcher/retry.h"

namespace {

using Clock = std::chrono::steady_clock;
using bench::die;

struct Options {
  std::string endpoint, token_url, ca_pem, run_id, policy = "backoff", ra = "pace";
  double deadline = 60, timeout = 10;
  int max_attempts = 0;  // 0: no limit (deadline only)
  bool serve = false;
};

struct Response {
  bool completed = false;
  long status = 0;
  std::string body;
  std::optional<irsafs::Duration> retry_after;
};

irsafs::Duration seconds(double s) {
  return std::chrono::duration_cast<irsafs::Duration>(std::chrono::duration<double>(s));
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

Response perform(const Options& o, const std::string& url, const std::string* bearer, const std::string* body) {
  Response r;
  CURL* c = curl_easy_init();
  if (c == nullptr) die("curl_easy_init");
  curl_slist* headers = nullptr;
  if (body != nullptr) {
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: text/plain, */*");
  }
  if (bearer != nullptr) headers = curl_slist_append(headers, ("Authorization: Bearer " + *bearer).c_str());
  const long timeout_ms = static_cast<long>(o.timeout * 1000);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "irsafs-bench");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_blob ca{const_cast<char*>(o.ca_pem.data()), o.ca_pem.size(), CURL_BLOB_NOCOPY};
  if (!o.ca_pem.empty()) curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
  if (body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
  }
  r.completed = curl_easy_perform(c) == CURLE_OK;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_off_t retry_after = 0;  // seconds (libcurl parses both forms); 0: none
  if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0) {
    r.retry_after = std::chrono::seconds(retry_after);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  return r;
}

// One attempt: token, then POST. Returns the POST's response (or the token's on failure).
Response attempt(const Options& o) {
  Response token = perform(o, o.token_url, nullptr, nullptr);
  if (!token.completed || token.status != 200) return token;
  while (!token.body.empty() && (token.body.back() == '\n' || token.body.back() == '\r')) token.body.pop_back();
  const std::string body = "{\"run_id\":\"" + o.run_id + "\"}";
  return perform(o, o.endpoint, &token.body, &body);
}

bool retryable(const Response& r) { return !r.completed || irsafs::is_retryable_status(r.status); }

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string ca_file;
  double base = 0, growth = 0, cap = 0;
  CLI::App app{"A libcurl client of irsa-svc with a pluggable retry policy (see fleet_client.cc)"};
  app.add_option("--endpoint", o.endpoint)->required();
  app.add_option("--token-url", o.token_url)->required();
  app.add_option("--run-id", o.run_id)->required();
  app.add_option("--ca-file", ca_file, "CA certificates (PEM)");
  app.add_option("--policy", o.policy)->check(CLI::IsMember({"backoff", "naive", "botocore"}));
  auto* base_opt = app.add_option("--base", base, "backoff: first window (s); default RetryPolicy's");
  auto* growth_opt = app.add_option("--growth", growth, "backoff: window growth; default RetryPolicy's");
  auto* cap_opt = app.add_option("--cap", cap, "backoff: largest window (s); default RetryPolicy's");
  app.add_option("--ra", o.ra, "what a Retry-After does")->check(CLI::IsMember({"pace", "floor", "ignore"}));
  app.add_option("--max-attempts", o.max_attempts, "0: until the deadline");
  app.add_option("--deadline", o.deadline, "seconds");
  app.add_option("--timeout", o.timeout, "seconds, each request");
  app.add_flag("--serve", o.serve, "the cold-read reference: one attempt per line of stdin");
  bench::parse(app, argc, argv);
  if (!ca_file.empty()) {
    std::ifstream in(ca_file, std::ios::binary);
    if (!in) die("cannot read " + ca_file);
    std::ostringstream s;
    s << in.rdbuf();
    o.ca_pem = s.str();
  }

  irsafs::RetryPolicy policy;  // irsafs's own schedule
  if (o.policy == "botocore") {
    policy.base = std::chrono::seconds(1);
    policy.growth = 2;
    policy.cap = std::chrono::seconds(20);
    if (o.max_attempts == 0) o.max_attempts = 3;
  }
  if (*base_opt) policy.base = seconds(base);
  if (*growth_opt) policy.growth = growth;
  if (*cap_opt) policy.cap = seconds(cap);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  if (o.serve) {
    std::string line;
    while (std::getline(std::cin, line)) {
      const auto t = Clock::now();
      const Response r = attempt(o);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
      std::printf("{\"ms\": %.3f, \"status\": %ld, \"bytes\": %zu}\n", ms, r.status, r.body.size());
      std::fflush(stdout);
    }
    curl_global_cleanup();
    return 0;
  }

  irsafs::SystemRandom random;
  const auto start = Clock::now();
  const auto deadline = start + seconds(o.deadline);
  int attempts = 0;
  bool ok = false;
  for (;;) {
    ++attempts;
    const Response r = attempt(o);
    if (r.completed && r.status == 200) {
      ok = true;
      break;
    }
    if (!retryable(r) || (o.max_attempts > 0 && attempts >= o.max_attempts)) break;
    irsafs::Duration delay{};
    if (o.policy == "naive") {
      delay = std::chrono::seconds(1);
    } else if (o.policy == "backoff" && r.retry_after && o.ra == "pace") {
      delay = policy.paced(*r.retry_after, random);
    } else if (o.policy == "backoff" && r.retry_after && o.ra == "floor") {
      delay = *r.retry_after + policy.backoff(attempts, random);
    } else {
      delay = policy.backoff(attempts, random);
    }
    if (Clock::now() + delay >= deadline) break;
    std::this_thread::sleep_for(delay);
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("{\"ok\": %s, \"attempts\": %d, \"elapsed_s\": %.4f}\n", ok ? "true" : "false", attempts, elapsed);
  curl_global_cleanup();
  return ok ? 0 : 1;
}
