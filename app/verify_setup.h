// The command line's side of role verification (verify/verifier.h): --verify-roles and
// --sts-endpoint, their resolution with the environment, and the source that wraps irsa-svc's
// Fetcher for `irsafs mount` (through DaemonSettings::source) and `irsafs fetch`.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "app/options.h"
#include "core/config_service.h"
#include "core/daemon.h"
#include "fetcher/curl_transport.h"
#include "verify/verifier.h"

namespace CLI {
class App;
}

namespace irsafs {

struct VerifyArgs {
  std::string mode = "auto";
  std::optional<std::string> sts_endpoint;
  std::optional<std::string> token_file;
};

void add_verify_options(CLI::App& cmd, VerifyArgs& args);

struct VerifyPlan {
  VerifySettings settings;
  TransportSettings sts_transport;  // the system's trust store (or AWS_CA_BUNDLE), not irsa-svc's
  std::string describe;             // for the start-up log line
};

// Throws UsageError for a bad mode or endpoint, or a region unusable in a host name.
VerifyPlan resolve_verify(const VerifyArgs& args, const ResolvedOptions& options, const EnvLookup& env);

// `inner` verified by `plan` (unchanged when the mode is off).
std::unique_ptr<ConfigSource> verifying_source(std::unique_ptr<ConfigSource> inner, const VerifyPlan& plan,
                                               Clock& clock, Random& random,
                                               std::shared_ptr<VerificationReport> report);

// The daemon's source factory: a Fetcher, verified by `plan`.
SourceFactory verifying_source_factory(VerifyPlan plan, std::shared_ptr<VerificationReport> report);

// Adds the report to the service's status (.status, /status, /metrics) as "verification".
void show_verification(ConfigService& service, std::shared_ptr<VerificationReport> report);

}  // namespace irsafs
