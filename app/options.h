// Options shared by `irsafs fetch` and `irsafs mount`, and their resolution: flag, else
// environment, else default.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "fetcher/curl_transport.h"
#include "fetcher/fetcher.h"

namespace irsafs {

inline constexpr const char* kDefaultEndpoint = "https://irsa-svc.domino-field/map_iam_roles_to_pod_sa";
inline constexpr const char* kDefaultTokenUrl = "http://localhost:8899/access-token";
inline constexpr const char* kDefaultCaDir = "/etc/ssl/certs/irsa";

// What the command line gave; unset optionals fall back to the environment.
struct CommonArgs {
  std::optional<std::string> endpoint;
  std::optional<std::string> token_url;
  std::optional<std::string> run_id;
  std::optional<std::string> workload_type;
  std::optional<std::string> ca_file;
  bool insecure = false;
  double timeout_seconds = 10;
  double deadline_seconds = 60;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// A mistake of the caller's (exit status 2).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ResolvedOptions {
  FetchSettings fetch;
  TransportSettings transport;
  std::string ca_source;  // where the trust anchors come from, for the start-up log line
};

// Throws UsageError when the run id is missing, a number is out of range, or a CA file
// cannot be read.
ResolvedOptions resolve_options(const CommonArgs& args, const EnvLookup& env,
                                const std::string& default_ca_dir = kDefaultCaDir);

}  // namespace irsafs
