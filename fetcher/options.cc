#include "fetcher/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fetcher/podinfo.h"

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

  f.endpoint = non_empty(args.endpoint).value_or(
      non_empty(env("DOMINO_IRSA_ENDPOINT")).value_or(kDefaultEndpoint));
  if (auto t = non_empty(args.token_url)) {
    f.token_url = *t;
  } else if (auto proxy = non_empty(env("DOMINO_API_PROXY"))) {
    std::string base = *proxy;
    while (!base.empty() && base.back() == '/') base.pop_back();
    f.token_url = base + "/access-token";
  } else {
    f.token_url = kDefaultTokenUrl;
  }

  auto run_id = non_empty(args.run_id);
  if (!run_id) run_id = non_empty(env("DOMINO_RUN_ID"));
  if (!run_id) throw UsageError("A run id is required: pass --run-id ID or set DOMINO_RUN_ID");
  f.run_id = *run_id;

  f.workload_type = non_empty(args.workload_type);
  if (!f.workload_type) {
    if (auto pod_info = non_empty(env("POD_INFO_PATH"))) f.workload_type = workload_type_from_file(*pod_info);
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
