#include "app/cli.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "app/endpoint.h"
#include "app/log.h"
#include "app/options.h"
#include "app/verify_setup.h"
#include "app/peer_options.h"
#include "common/exit_codes.h"
#include "common/text.h"
#include "fetcher/curl_transport.h"
#include "fetcher/fetcher.h"
#include "fs/mount.h"
#include "http/listen.h"

namespace irsafs {
namespace {

constexpr const char* kFooter = R"(
Environment (used when the flag is not given):
  DOMINO_IRSA_ENDPOINT   irsa-svc URL                  (--endpoint)
  DOMINO_API_PROXY       token proxy; + /access-token  (--token-url)
  DOMINO_RUN_ID          the run id                    (--run-id)
  DOMINO_IRSA_PROXY      the old sidecar's URL, e.g. http://localhost:6003: its
                         host and port are where mount serves HTTP (--listen)
  POD_INFO_PATH          downward-API labels file; its label
                         dominodatalab.com/irsa-workload-type gives --workload-type
  DOMINO_IRSA_SSL_CERT   CA bundle for irsa-svc        (--ca-file); else the
                         certificates in /etc/ssl/certs/irsa; else the system store
  IRSAFS_PEER            a serving peer's URL          (--peer)

Examples:
  irsafs fetch --run-id R -o /var/run/.aws/config
  irsafs mount /var/run/.aws          # then AWS_CONFIG_FILE=/var/run/.aws/config
  cat /var/run/.aws/.status           # state, source, size, sha256, errors (JSON)
  irsafs mount --listen 127.0.0.1:6003 /var/run/.aws
  irsafs mount -f --link /var/run/.aws/config /var/run/.aws/.irsafs   # a sidecar
  curl localhost:6003/refresh         # fetch again now; also /healthz /readyz /metrics
  irsafs mount --serve-peers 0.0.0.0:6010 /var/run/.aws                 # a Ray head
  irsafs mount --peer http://ray-head:6010 /var/run/.aws                # its workers

Exit status: 0 success, 1 the fetch or mount failed, 2 bad usage.)";

// What the command line gives `irsafs mount` beyond the shared options.
struct MountArgs {
  std::string mountpoint;
  bool foreground = false;
  std::string file_name = "config";
  bool prefetch = false;
  double refresh_interval_seconds = 0;
  bool read_only = false;
  std::optional<std::string> listen;
  std::optional<std::string> link;
};

struct LogArgs {
  std::string level = "info";
  std::string format = "text";
};

void add_common(CLI::App& cmd, CommonArgs& a, LogArgs& log) {
  cmd.add_option("--endpoint", a.endpoint, "irsa-svc URL that returns the AWS config [env DOMINO_IRSA_ENDPOINT]")
      ->type_name("URL");
  cmd.add_option("--token-url", a.token_url,
                 "URL that returns the access token [env DOMINO_API_PROXY + /access-token]")
      ->type_name("URL");
  cmd.add_option("--run-id", a.run_id, "Domino run id sent to irsa-svc (required) [env DOMINO_RUN_ID]")
      ->type_name("ID");
  cmd.add_option("--workload-type", a.workload_type,
                 "irsa_workload_type sent to irsa-svc [label from POD_INFO_PATH; omitted when unknown]")
      ->type_name("TYPE");
  cmd.add_option("--ca-file", a.ca_file, "CA bundle that verifies irsa-svc [env DOMINO_IRSA_SSL_CERT]")
      ->type_name("PATH");
  cmd.add_flag("--insecure", a.insecure, "Do not verify irsa-svc's certificate (warns at every fetch)");
  cmd.add_option("--timeout", a.timeout_seconds, "Limit of one HTTP request")->capture_default_str()->type_name("SECONDS");
  cmd.add_option("--deadline", a.deadline_seconds, "Limit of a whole fetch, retries included")->capture_default_str()
      ->type_name("SECONDS");
  cmd.add_option("--log-level", log.level, "trace, debug, info, warn or error")->capture_default_str()
      ->check(CLI::IsMember(std::vector<std::string>(kLogLevels.begin(), kLogLevels.end())));
  cmd.add_option("--log-format", log.format, "text or json (logs go to stderr)")->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
}

// Writes `content` to `path` so that readers see the old file or the new one, never a part:
// a temporary file in the same directory, fsync, rename, fsync of the directory.
void write_atomically(const std::string& path, std::string_view content) {
  const std::filesystem::path target(path);
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  std::string tmp = (dir / ("." + target.filename().string() + ".irsafs-XXXXXX")).string();
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    const int err = errno;
    throw std::runtime_error("Cannot create a temporary file in " + dir.string() + ": " + std::strerror(err));
  }
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return std::runtime_error(std::string("Cannot ") + what + " " + tmp + ": " + std::strerror(err));
  };
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("write");
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0) throw fail("chmod");
  if (::fsync(fd) != 0) throw fail("fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("Cannot close " + tmp + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error("Cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
  }
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

int run_fetch(const ResolvedOptions& options, const PeerPlan& peers, const VerifyPlan& verify,
              const std::optional<std::string>& output) {
  CurlGlobal curl;
  CurlTransport transport(options.transport);
  SystemClock clock;
  SystemRandom random;
  const SourceFactory make_source = peer_source_factory(peers, options, verifying_source_factory(verify, nullptr));
  const std::unique_ptr<ConfigSource> source = make_source(SourceContext{options.fetch, transport, clock, random});
  if (options.transport.tls.insecure) {
    spdlog::warn("TLS verification is off (--insecure): irsa-svc's identity is not checked");
  }
  spdlog::debug("Fetching from {} (token from {}, trust: {})", peers.peer ? peers.peer->url : options.fetch.endpoint,
                peers.peer ? peers.peer->token_file : options.fetch.token_url, options.ca_source);
  FetchResult result = source->fetch();
  const int requests = result.requests + result.peer_requests;
  if (!result.ok) {
    spdlog::error("Cannot fetch the AWS config: {} ({} requests in {})", result.error, requests,
                  format_seconds(result.elapsed));
    return kExitFailure;
  }
  spdlog::info("Fetched the AWS config ({} bytes) {}in {} with {} request{}", result.content.size(),
               result.origin == FetchOrigin::kPeer ? "from the peer " : "", format_seconds(result.elapsed), requests,
               requests == 1 ? "" : "s");
  if (output) {
    try {
      write_atomically(*output, result.content);
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
      return kExitFailure;
    }
    return kExitOk;
  }
  std::cout.write(result.content.data(), static_cast<std::streamsize>(result.content.size()));
  std::cout.flush();
  if (!std::cout) {
    spdlog::error("Cannot write the config to standard output: {}", std::strerror(errno));
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{
      "irsafs serves a Domino workload's AWS config file (AWS_CONFIG_FILE), as returned by\n"
      "irsa-svc, from a FUSE mount: fetched lazily on first read, once for all readers, then\n"
      "served from the page cache. `irsafs fetch` fetches it once, for clusters without FUSE.",
      "irsafs"};
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("irsafs ") + IRSAFS_VERSION);
  app.require_subcommand(1);

  CommonArgs common;
  LogArgs log;
  VerifyArgs verify_args;
  std::optional<std::string> output;
  CLI::App* fetch = app.add_subcommand("fetch", "Fetch the config once; print it, or write it with -o");
  add_common(*fetch, common, log);
  add_verify_options(*fetch, verify_args);
  PeerArgs peer_args;
  add_peer_options(*fetch, peer_args, false);
  fetch->add_option("-o,--output", output,
                    "Write to FILE atomically (mode 0644) instead of standard output")
      ->type_name("FILE");

  MountArgs mount_args;
  CLI::App* mount = app.add_subcommand("mount", "Mount the virtual config file on MOUNTPOINT");
  add_common(*mount, common, log);
  add_verify_options(*mount, verify_args);
  add_peer_options(*mount, peer_args, true);
  mount->add_option("MOUNTPOINT", mount_args.mountpoint, "An existing directory")->required();
  mount->add_flag("-f,--foreground", mount_args.foreground,
                  "Stay in the foreground (else daemonize once the mount is ready)");
  mount->add_option("--file", mount_args.file_name, "Name of the file in the mount")->capture_default_str()->type_name("NAME");
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::string mode = "0644";
  mount->add_option("--uid", uid, "Owner of the file [the daemon's uid]")->type_name("N");
  mount->add_option("--gid", gid, "Group of the file [the daemon's gid]")->type_name("N");
  mount->add_option("--mode", mode, "Permission bits of the file, octal")->capture_default_str()->type_name("OCTAL");
  mount->add_flag("--prefetch", mount_args.prefetch, "Fetch at mount time instead of at the first read");
  mount->add_option("--refresh-interval", mount_args.refresh_interval_seconds,
                    "Fetch again this long after each success (0: never; SIGHUP refreshes now)")->capture_default_str()
      ->type_name("SECONDS");
  mount->add_flag("--read-only", mount_args.read_only, "Refuse writes (no seeding by write)");
  mount->add_option("--link", mount_args.link,
                    "Once mounted, make PATH a symbolic link to the file (replacing what is there); removed "
                    "at unmount. For a sidecar: mount on a subdirectory of the shared volume, link "
                    "AWS_CONFIG_FILE")
      ->type_name("PATH");
  mount->add_option("--listen", mount_args.listen,
                    "HTTP endpoints /healthz /readyz /refresh /status /metrics on ADDR:PORT, or none "
                    "[host and port of env DOMINO_IRSA_PROXY; else none]")
      ->type_name("ADDR:PORT");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  try {
    const int level = parse_log_level(log.level);
    const LogFormat format = parse_log_format(log.format);
    setup_logging(level, format);
    const ResolvedOptions options = resolve_options(common, process_environment());
    const VerifyPlan verify = resolve_verify(verify_args, options, process_environment());
    const PeerPlan peers = resolve_peers(peer_args, options, process_environment());
    if (*fetch) return run_fetch(options, peers, verify, output);

    if (mode.empty() || mode.find_first_not_of("01234567") != std::string::npos || mode.size() > 4) {
      throw UsageError("--mode must be octal permission bits such as 0644, not '" + mode + "'");
    }
    // Bounded so the interval fits the clock's range (nanoseconds in 64 bits: 292 years).
    constexpr double kMaxRefreshSeconds = 30 * 24 * 3600;
    if (!std::isfinite(mount_args.refresh_interval_seconds) || mount_args.refresh_interval_seconds < 0 ||
        mount_args.refresh_interval_seconds > kMaxRefreshSeconds) {
      throw UsageError("--refresh-interval must be 0 (never) or a number of seconds up to 2592000 (30 days)");
    }
    const std::string& file = mount_args.file_name;
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == ".." || file == ".status") {
      throw UsageError("--file must be a plain file name other than .status, not '" + printable(file) + "'");
    }
    // The name is shown in .status (JSON, UTF-8 only) and in logs, and AWS_CONFIG_FILE names it:
    // a name that is not UTF-8 is refused rather than shown mangled. Longer than NAME_MAX, no
    // lookup could ever reach it.
    if (const auto at = invalid_utf8_at(file)) {
      throw UsageError("Cannot use the file name given by --file: not valid UTF-8 (byte " + std::to_string(*at + 1) +
                       ")");
    }
    if (file.size() > NAME_MAX) {
      throw UsageError("Cannot use the file name given by --file: longer than " + std::to_string(NAME_MAX) + " bytes");
    }
    MountSettings ms;
    ms.mountpoint = mount_args.mountpoint;
    ms.foreground = mount_args.foreground;
    ms.prefetch = mount_args.prefetch;
    ms.fs.file_name = file;
    ms.fs.uid = uid.value_or(::getuid());
    ms.fs.gid = gid.value_or(::getgid());
    ms.fs.mode = static_cast<mode_t>(std::stoul(mode, nullptr, 8));
    ms.fs.read_only = mount_args.read_only;
    ms.link = mount_args.link;
    ms.describe = "trust: " + options.ca_source + "; " + verify.describe +
                  (peers.peer ? "; peer: " + peers.peer->url : std::string());
    ms.on_terminal_lost = [level, format] { setup_logging(level, format, LogSink::kSyslog); };
    DaemonSettings ds;
    ds.fetch = options.fetch;
    ds.service.refresh_interval =
        std::chrono::duration_cast<Duration>(std::chrono::duration<double>(mount_args.refresh_interval_seconds));
    ds.service.writable = !mount_args.read_only;
    auto verification = std::make_shared<VerificationReport>();
    ds.source = peer_source_factory(peers, options, verifying_source_factory(verify, verification));
    const EnvLookup env = process_environment();
    const std::optional<ListenAddress> listen = resolve_listen(mount_args.listen, env("DOMINO_IRSA_PROXY"));
    CurlGlobal curl;  // before any thread
    Daemon daemon(ds, std::make_unique<CurlTransport>(options.transport));
    show_verification(daemon.service(), verification);
    if (listen) {
      HttpServerOptions ho;
      ho.address = *listen;
      daemon.add(std::make_unique<EndpointComponent>(daemon.service(), ho));
    }
    add_peer_server(daemon, peers, peer_args);
    if (options.transport.tls.insecure) spdlog::warn("TLS verification is off (--insecure)");
    return run_mount(daemon, ms);
  } catch (const UsageError& e) {
    std::cerr << "irsafs: " << e.what() << "\nRun 'irsafs --help' for the options.\n";
    return kExitUsage;
  } catch (const std::invalid_argument& e) {
    std::cerr << "irsafs: " << e.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitFailure;
  }
}

}  // namespace irsafs
