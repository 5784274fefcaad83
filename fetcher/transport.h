// The HTTP transport irsafs talks to irsa-svc through. The real one is libcurl
// (curl_transport.h); tests use fakes.
#pragma once

#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/secret.h"

namespace irsafs {

struct HttpRequest {
  enum class Method { kGet, kPost };
  Method method = Method::kGet;
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // never secrets
  const Secret* bearer = nullptr;  // sent as "Authorization: Bearer ..." when set
  std::string body;
  // Shorter than the transport's own per-request timeout, e.g. when a deadline is near.
  std::optional<Duration> timeout;
};

struct HttpResponse {
  enum class Outcome {
    kCompleted,       // a status line and the whole body arrived
    kTransportError,  // DNS, connect, TLS, timeout, stall, truncated body...
    kTooLarge,        // the body exceeded the transport's limit; reading stopped
    kCancelled,       // the caller's stop token fired
  };
  Outcome outcome = Outcome::kTransportError;
  long status = 0;
  std::string body;
  // The server's Retry-After as a delay (seconds, or an HTTP date made relative), as libcurl
  // reads it (CURLINFO_RETRY_AFTER); unset when absent, unreadable, 0 or a date already past.
  std::optional<Duration> retry_after;
  std::string error;                       // for kTransportError: what failed and why
  bool timed_out = false;                  // kTransportError caused by a timeout
  // kTransportError that retrying cannot mend: the certificate does not verify, a bad URL.
  bool permanent = false;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual HttpResponse perform(const HttpRequest& request, std::stop_token stop) = 0;
};

}  // namespace irsafs
