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
// Policies (delay after failed attempt n = 1, 2, ...; RA = the response's Retry-After):
//   backoff   full jitter: U(0, min(cap, base * growth^(n-1))); with a Retry-After:
//               --ra pace   RA + U(0, RA), at most 120 s (what fetcher/retry.cc does today)
//               --ra floor  RA + U(0, min(cap, base * growth^(n-1)))
//               --ra ignore the backoff alone
//             until the deadline. Defaults (base 0.5 s, growth 2, cap 20 s, pace) are irsafs's.
//   naive     a fixed 1 s, no jitter, RA ignored, until the deadline (a naive sidecar)
//   botocore  standard mode: at most 3 attempts, U(0, 1) * min(2^(n-1), 20) s, RA ignored
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "bench_fleet_client: %s\n", why.c_str());
  std::exit(2);
}

struct Options {
  std::string endpoint, token_url, ca_pem, run_id, policy = "backoff", ra = "pace";
  double base = 0.5, growth = 2, cap = 20, deadline = 60, timeout = 10;
  int max_attempts = 0;  // 0: no limit (deadline only)
  bool serve = false;
};

struct Response {
  bool completed = false;
  long status = 0;
  std::string body;
  std::optional<double> retry_after;
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Response*>(user);
  std::string line(data, size * n);
  std::string lower = line;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.rfind("retry-after:", 0) == 0) r->retry_after = std::atof(line.c_str() + 12);
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
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_blob ca{const_cast<char*>(o.ca_pem.data()), o.ca_pem.size(), CURL_BLOB_NOCOPY};
  if (!o.ca_pem.empty()) curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
  if (body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
  }
  r.completed = curl_easy_perform(c) == CURLE_OK;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
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

bool retryable(const Response& r) {
  return !r.completed || r.status == 408 || r.status == 429 || (r.status >= 500 && r.status <= 599);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string ca_file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--endpoint") o.endpoint = next();
    else if (a == "--token-url") o.token_url = next();
    else if (a == "--ca-file") ca_file = next();
    else if (a == "--run-id") o.run_id = next();
    else if (a == "--policy") o.policy = next();
    else if (a == "--base") o.base = std::atof(next().c_str());
    else if (a == "--growth") o.growth = std::atof(next().c_str());
    else if (a == "--cap") o.cap = std::atof(next().c_str());
    else if (a == "--ra") o.ra = next();
    else if (a == "--max-attempts") o.max_attempts = std::atoi(next().c_str());
    else if (a == "--deadline") o.deadline = std::atof(next().c_str());
    else if (a == "--timeout") o.timeout = std::atof(next().c_str());
    else if (a == "--serve") o.serve = true;
    else die("unknown argument " + a);
  }
  if (o.endpoint.empty() || o.token_url.empty() || o.run_id.empty()) die("--endpoint, --token-url and --run-id are required");
  if (!ca_file.empty()) {
    std::ifstream in(ca_file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    o.ca_pem = s.str();
  }
  if (o.policy == "botocore" && o.max_attempts == 0) o.max_attempts = 3;
  if (o.policy != "backoff" && o.policy != "naive" && o.policy != "botocore") die("unknown policy " + o.policy);
  if (o.ra != "pace" && o.ra != "floor" && o.ra != "ignore") die("--ra must be pace, floor or ignore");
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

  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const auto start = Clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
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
    const double window = std::min(o.cap, o.base * std::pow(o.growth, attempts - 1));
    double delay = 0;
    if (o.policy == "naive") {
      delay = 1.0;
    } else if (o.policy == "botocore") {
      delay = u01(rng) * std::min(std::ldexp(1.0, attempts - 1), 20.0);
    } else if (r.retry_after && o.ra == "pace") {
      delay = std::min(120.0, *r.retry_after * (1 + u01(rng)));
    } else if (r.retry_after && o.ra == "floor") {
      delay = *r.retry_after + u01(rng) * window;
    } else {
      delay = u01(rng) * window;
    }
    if (elapsed() + delay >= o.deadline) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  }
  std::printf("{\"ok\": %s, \"attempts\": %d, \"elapsed_s\": %.4f}\n", ok ? "true" : "false", attempts, elapsed());
  curl_global_cleanup();
  return ok ? 0 : 1;
}
