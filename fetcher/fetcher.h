// One fetch of the AWS config from irsa-svc: token, POST, validation, retries, all within a
// deadline. The same code serves `irsafs fetch` and the mount.
#pragma once

#include <optional>
#include <stop_token>
#include <string>

#include "common/clock.h"
#include "fetcher/attempt.h"
#include "fetcher/retry.h"
#include "fetcher/source.h"
#include "fetcher/transport.h"

namespace irsafs {

struct FetchSettings {
  std::string endpoint;
  std::string token_url;
  std::string run_id;
  std::optional<std::string> workload_type;  // left out of the request when unknown
  Duration deadline = std::chrono::seconds(60);  // the whole fetch, retries included
  RetryPolicy retry;
};

// The config from irsa-svc: a fresh token from token_url, then the POST.
class Fetcher final : public ConfigSource {
 public:
  Fetcher(FetchSettings settings, Transport& transport, Clock& clock, Random& random)
      : settings_(std::move(settings)), transport_(transport), clock_(clock), random_(random) {}

  // Blocks until success, a permanent failure, the deadline, or `stop`.
  FetchResult fetch(std::stop_token stop = {}) override;

  const FetchSettings& settings() const { return settings_; }

 private:
  Attempt attempt_once(TimePoint deadline, FetchResult& result, std::stop_token stop);

  FetchSettings settings_;
  Transport& transport_;
  Clock& clock_;
  Random& random_;
};

// The request body irsa-svc expects.
std::string request_body(const FetchSettings& settings);

}  // namespace irsafs
