// Role verification (issue 13): after irsa-svc answers, and before its content is released to
// readers, each web-identity role of the content is assumed once with STS until STS lets it in,
// so that a reader who gets the config can use it at once. irsa-svc changes IAM trust policies
// when it answers, and IAM takes seconds (at times minutes) to apply them everywhere; botocore
// does not retry the AccessDenied a client would meanwhile get.
//
// RoleVerifier is a ConfigSource decorator: it wraps irsa-svc's source (Fetcher) and verifies
// the content of each successful fetch (the first fetch and refreshes alike). Written content
// never passes through it. It releases the content when every role is verified (two successes in
// a row: IAM can flip while a change spreads) or judged permanent, when STS cannot be reached
// for a few seconds, or before the readers' deadline would be missed; verification never turns a
// good fetch into an error. Roles are checked concurrently; the credentials in STS's answers are
// wiped as they are parsed and never kept.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "fetcher/result.h"
#include "fetcher/retry.h"
#include "fetcher/source.h"
#include "fetcher/transport.h"
#include "verify/profiles.h"
#include "verify/sts.h"

namespace irsafs {

enum class VerifyMode { kOff, kOn, kAuto };
const char* to_string(VerifyMode m);

struct VerifySettings {
  // kAuto: on when a token file named by the content is readable (checked at each
  // verification), else off with one INFO line.
  VerifyMode mode = VerifyMode::kAuto;
  std::string endpoint;  // STS, e.g. https://sts.us-west-2.amazonaws.com (resolve_sts_endpoint)
  // When set, every role's token is read from here instead of the web_identity_token_file its
  // profile names: a sidecar sees the workload's token at a path of its own.
  std::optional<std::string> token_file;
  // The fetch's deadline (FetchSettings::deadline), counted from the start of the whole fetch:
  // the content is released at the latest `margin` before it, so waiting readers are answered.
  Duration deadline = std::chrono::seconds(60);
  Duration margin = std::chrono::seconds(1);
  // STS unreachable (no answer at all) for this long: verification is given up, for all roles.
  Duration unreachable_give_up = std::chrono::seconds(5);
  int confirmations = 2;                  // successes in a row that make a role propagated
  Duration confirm_delay = Duration::zero();  // between them
  // Not propagated yet, throttled, 5xx: the next try after ~0.5 s, growing to 5 s.
  RetryPolicy retry{.base = std::chrono::milliseconds(500), .growth = 2.0, .cap = std::chrono::seconds(5),
                    .jitter_floor = 0.5};
  std::size_t concurrency = 8;  // roles checked at once
};

enum class RoleState { kPending, kVerified, kUnverified, kPermanent };
const char* to_string(RoleState s);

struct RoleReport {
  std::string role_arn;
  std::vector<std::string> profiles;
  RoleState state = RoleState::kPending;
  int attempts = 0;
  std::string last_error_code;  // empty: none
  std::string why;              // for unverified and permanent: one line
};

// What the last verification did, for .status and /metrics; updated live while it runs.
class VerificationReport {
 public:
  // The "verification" object of .status:
  //   {mode, enabled, endpoint, running, total_seconds (null until one ended), attempts_total,
  //    runs, roles: [{role_arn, profiles, state, verified, attempts, last_error_code}]}
  nlohmann::ordered_json to_json() const;

  // Used by RoleVerifier.
  void configure(VerifyMode mode, std::string endpoint);
  void begin(bool enabled, const std::vector<WebIdentityRole>& roles);
  void attempted(std::size_t role);
  void update(std::size_t role, RoleState state, std::string error_code, std::string why);
  void finish(Duration total);
  std::vector<RoleReport> roles() const;

 private:
  mutable std::mutex mu_;
  VerifyMode mode_ = VerifyMode::kAuto;
  std::string endpoint_;
  bool enabled_ = false;
  bool running_ = false;
  std::optional<Duration> total_;
  std::uint64_t attempts_total_ = 0;
  std::uint64_t runs_ = 0;
  std::vector<RoleReport> roles_;
};

class RoleVerifier final : public ConfigSource {
 public:
  // `sts` carries the calls to STS (its own trust store, not irsa-svc's); `report` may be
  // shared with whoever renders the status.
  RoleVerifier(std::unique_ptr<ConfigSource> inner, std::unique_ptr<Transport> sts, VerifySettings settings,
               Clock& clock, Random& random, std::shared_ptr<VerificationReport> report = nullptr);
  ~RoleVerifier() override;

  // The inner fetch; when it succeeds, the content's roles are verified before it is returned.
  FetchResult fetch(std::stop_token stop = {}) override;

  // Verifies the roles of `content`, releasing at `release_by` at the latest. False only when
  // `stop` cancelled it.
  bool verify(std::string_view content, TimePoint release_by, std::stop_token stop);

  const VerificationReport& report() const { return *report_; }
  std::shared_ptr<VerificationReport> shared_report() const { return report_; }

 private:
  struct Run;
  void verify_role(Run& run, std::size_t index);

  std::unique_ptr<ConfigSource> inner_;
  std::unique_ptr<Transport> sts_;
  const VerifySettings settings_;
  Clock& clock_;
  Random& random_;
  std::shared_ptr<VerificationReport> report_;
  std::optional<bool> auto_on_;  // the last decision of kAuto, to log it only when it changes
};

}  // namespace irsafs
