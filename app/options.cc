#include "app/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/podinfo.h"
#include "common/text.h"

namespace irsafs {
namespace {

std::optional<std::string> non_empty(std::optional<std::string> v) {
  if (v && v->empty()) return std::nullopt;
  return v;
}

Duration seconds_option(double value, const char* flag) {
  if (!std::isfinite(value) || value <= 0 || value > 24 * 3600) {
    throw UsageError(std::string(flag) + " must be a number of seconds above 0 and at most 86400");
  }
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(value));
}

// Text sent to irsa-svc in the JSON request, or quoted in messages and .status, must be UTF-8:
// refused here, at start, with the option that gave it, rather than failing every fetch.
void require_utf8(const std::string& value, const std::string& what) {
  if (const auto at = invalid_utf8_at(value)) {
    throw UsageError("Cannot use " + what + ": not valid UTF-8 (byte " + std::to_string(*at + 1) + ")");
  }
}

std::string read_file_or_throw(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw UsageError(std::string("Cannot read ") + what + " " + path + ": " + std::strerror(err));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every certificate file in a directory (such as a mounted Kubernetes secret), concatenated.
std::string certificates_in(const std::filesystem::path& dir) {
  std::string pem;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;  // follows the ..data symlinks of secrets
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (text.str().find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
      pem += text.str();
      pem += '\n';
    }
  }
  return pem;
}

}  // namespace

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

ResolvedOptions resolve_options(const CommonArgs& args, const EnvLookup& env,
                                const std::string& default_ca_dir) {
  ResolvedOptions out;
  FetchSettings& f = out.fetch;

  if (auto e = non_empty(args.endpoint)) {
    require_utf8(*e, "the irsa-svc URL given by --endpoint");
    f.endpoint = *e;
  } else if (auto env_e = non_empty(env("DOMINO_IRSA_ENDPOINT"))) {
    require_utf8(*env_e, "the irsa-svc URL in DOMINO_IRSA_ENDPOINT");
    f.endpoint = *env_e;
  } else {
    f.endpoint = kDefaultEndpoint;
  }
  if (auto t = non_empty(args.token_url)) {
    require_utf8(*t, "the token URL given by --token-url");
    f.token_url = *t;
  } else if (auto proxy = non_empty(env("DOMINO_API_PROXY"))) {
    require_utf8(*proxy, "the token proxy URL in DOMINO_API_PROXY");
    std::string base = *proxy;
    while (!base.empty() && base.back() == '/') base.pop_back();
    f.token_url = base + "/access-token";
  } else {
    f.token_url = kDefaultTokenUrl;
  }

  if (auto id = non_empty(args.run_id)) {
    require_utf8(*id, "the run id given by --run-id");
    f.run_id = *id;
  } else if (auto env_id = non_empty(env("DOMINO_RUN_ID"))) {
    require_utf8(*env_id, "the run id in DOMINO_RUN_ID");
    f.run_id = *env_id;
  } else {
    throw UsageError("A run id is required: pass --run-id ID or set DOMINO_RUN_ID");
  }

  f.workload_type = non_empty(args.workload_type);
  if (f.workload_type) {
    require_utf8(*f.workload_type, "the workload type given by --workload-type");
  } else if (auto pod_info = non_empty(env("POD_INFO_PATH"))) {
    f.workload_type = workload_type_from_file(*pod_info);
    // The kubelet writes bytes that are not UTF-8 as \xNN escapes; decoded, they are those bytes.
    if (f.workload_type) {
      require_utf8(*f.workload_type, "the label " + std::string(kWorkloadTypeLabel) + " in " + *pod_info +
                                         " (POD_INFO_PATH)");
    }
  }

  f.deadline = seconds_option(args.deadline_seconds, "--deadline");
  out.transport.timeout = seconds_option(args.timeout_seconds, "--timeout");

  TlsSettings& tls = out.transport.tls;
  tls.insecure = args.insecure;
  if (auto file = non_empty(args.ca_file)) {
    tls.ca_pem = read_file_or_throw(*file, "the CA file given by --ca-file");
    out.ca_source = "--ca-file " + *file;
  } else if (auto env_file = non_empty(env("DOMINO_IRSA_SSL_CERT"))) {
    tls.ca_pem = read_file_or_throw(*env_file, "the CA file named by DOMINO_IRSA_SSL_CERT");
    out.ca_source = "DOMINO_IRSA_SSL_CERT " + *env_file;
  } else if (std::error_code ec; std::filesystem::is_directory(default_ca_dir, ec)) {
    tls.ca_pem = certificates_in(default_ca_dir);
    out.ca_source = tls.ca_pem.empty() ? "the system trust store (" + default_ca_dir + " holds no certificates)"
                                       : "the certificates in " + default_ca_dir;
  } else {
    out.ca_source = "the system trust store";
  }
  if (!tls.ca_pem.empty() && tls.ca_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    throw UsageError("The CA file from " + out.ca_source + " holds no PEM certificate");
  }
  return out;
}

}  // namespace irsafs
