#include "fs/mount.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/config_service.h"
#include "core/runtime.h"
#include "fetcher/curl_transport.h"
#include "fs/exit_codes.h"
#include "fs/fuse_fs.h"

extern char** environ;

namespace irsafs {
namespace {

class MountError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Mount points in /proc/self/mountinfo use octal escapes for spaces and the like.
std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool is_mount_point(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (unescape_mountinfo(point) == path) return true;
  }
  return false;
}

int run_quietly(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Checks the mount point and clears a stale mount left by a killed daemon. Returns the
// canonical path.
// The daemon of an earlier mount died: its mount answers "Transport endpoint is not
// connected". stat() of the mount point may still succeed from cached attributes; statfs()
// always asks the daemon.
bool is_stale(const std::string& path) {
  struct statfs sfs{};
  return ::statfs(path.c_str(), &sfs) != 0 && errno == ENOTCONN;
}

void detach_stale(const std::string& path) {
  spdlog::warn("{} holds a stale FUSE mount (its daemon is gone); detaching it", path);
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && run_quietly({"fusermount3", "-uz", path}) != 0) {
    throw MountError("Cannot detach the stale mount on " + path + " (run: fusermount3 -uz " + path + ")");
  }
}

// Checks the mount point and clears a stale mount left by a killed daemon. Returns the
// canonical path.
std::string prepare_mountpoint(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err != ENOTCONN) {
      throw MountError("Cannot mount on " + path + ": " + std::strerror(err) +
                       (err == ENOENT ? " (create the directory first)" : ""));
    }
    detach_stale(path);
    if (::stat(path.c_str(), &st) != 0) {
      const int e2 = errno;
      throw MountError("Cannot mount on " + path + " after detaching the stale mount: " + std::strerror(e2));
    }
  }
  if (!S_ISDIR(st.st_mode)) throw MountError("Cannot mount on " + path + ": not a directory");
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    const int err = errno;
    throw MountError("Cannot resolve " + path + ": " + std::strerror(err));
  }
  if (is_mount_point(resolved) && is_stale(resolved)) detach_stale(resolved);
  if (is_mount_point(resolved)) {
    throw MountError("Cannot mount on " + path + ": it is busy, something is already mounted there (unmount it first)");
  }
  return resolved;
}

// RAII for the parts of a libfuse session.
struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct ArgsHolder {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~ArgsHolder() { fuse_opt_free_args(&args); }
};

}  // namespace

int run_mount(const ResolvedOptions& options, const MountArgs& args) {
  // The kernel never looks up a longer name: the file would be listed but could not be opened.
  if (args.file_name.size() > NAME_MAX) {
    spdlog::error("Cannot use --file: the name is {} bytes long, a file name has at most {} bytes",
                  args.file_name.size(), NAME_MAX);
    return kExitUsage;
  }
  // SIGHUP means "refresh" from the moment the mount exists: blocked in every thread from now
  // on, and taken by the thread that waits for it.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);

  CurlGlobal curl;  // before any thread
  CurlTransport transport(options.transport);
  SystemClock clock;
  SystemRandom random;
  Fetcher fetcher(options.fetch, transport, clock, random);
  FetchThread fetch_thread(fetcher);

  ServiceOptions so;
  so.read_deadline = options.fetch.deadline;
  so.refresh_interval = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(args.refresh_interval_seconds));
  so.writable = !args.read_only;
  ConfigService service(so, fetch_thread, clock, random);

  FsOptions fo;
  fo.file_name = args.file_name;
  fo.uid = args.uid.value_or(::getuid());
  fo.gid = args.gid.value_or(::getgid());
  fo.mode = args.mode;
  fo.read_only = args.read_only;
  FuseFs fs(service, fo);

  std::string mountpoint;
  try {
    mountpoint = prepare_mountpoint(args.mountpoint);
  } catch (const MountError& e) {
    spdlog::error("{}", e.what());
    return kExitFailure;
  }

  std::string mount_opts = "fsname=irsafs,subtype=irsafs,default_permissions,nosuid,nodev,noatime";
  if (::geteuid() == 0) mount_opts += ",allow_other";
  if (args.read_only) mount_opts += ",ro";
  ArgsHolder fargs;
  for (const char* a : {"irsafs", "-o", mount_opts.c_str()}) fuse_opt_add_arg(&fargs.args, a);
  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(&fargs.args, &FuseFs::operations(), sizeof(fuse_lowlevel_ops), &fs));
  if (!se) {
    spdlog::error("Cannot create the FUSE session (is libfuse3 installed?)");
    return kExitFailure;
  }
  if (fuse_set_signal_handlers(se.get()) != 0) {
    spdlog::error("Cannot install the signal handlers");
    return kExitFailure;
  }
  if (fuse_session_mount(se.get(), mountpoint.c_str()) != 0) {
    spdlog::error("Cannot mount irsafs on {} (is /dev/fuse present, and are we allowed to mount? "
                  "in a container: --device /dev/fuse --cap-add SYS_ADMIN)", mountpoint);
    fuse_remove_signal_handlers(se.get());
    return kExitFailure;
  }

  if (!args.foreground) {
    // Keep logging where the caller can see it when that is a pipe or a container log;
    // syslog when it is a terminal we are about to leave.
    const bool keep_stderr = ::isatty(STDERR_FILENO) == 0;
    const int saved_stderr = keep_stderr ? ::dup(STDERR_FILENO) : -1;
    if (fuse_daemonize(0) != 0) {
      spdlog::error("Cannot daemonize");
      fuse_session_unmount(se.get());
      return kExitFailure;
    }
    if (saved_stderr >= 0) {
      ::dup2(saved_stderr, STDERR_FILENO);
      ::close(saved_stderr);
    } else {
      setup_logging(args.log_level, args.log_format, LogSink::kSyslog);
    }
  }

  // Our own threads take no signals: SIGTERM/SIGINT go to libfuse's loop, SIGHUP to the
  // thread that waits for it.
  sigset_t all, previous;
  sigemptyset(&all);
  for (int s : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&all, s);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  Ticker ticker(service);
  service.set_wake_hook([&ticker] { ticker.wake(); });
  service.set_content_listener([&fs](const ContentPtr& now, const ContentPtr& before) { fs.on_new_version(now, before); });
  service.set_discard_listener([&fs] { fs.on_discarded_write(); });
  fs.attach(se.get());
  fetch_thread.start();
  ticker.start();
  std::jthread hup_thread([&service, &hup](std::stop_token stop) {
    const timespec poll{0, 200 * 1000 * 1000};
    while (!stop.stop_requested()) {
      if (sigtimedwait(&hup, nullptr, &poll) == SIGHUP) service.refresh_now();
    }
  });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);  // SIGHUP stays blocked

  spdlog::info("Mounted irsafs on {}: {}/{} (uid {}, gid {}, mode {:04o}{}); fetching {}; trust: {}", mountpoint,
               mountpoint, args.file_name, fo.uid, fo.gid, fo.mode, args.read_only ? ", read-only" : "",
               args.prefetch ? "now" : "on first read", options.ca_source);
  if (options.transport.tls.insecure) spdlog::warn("TLS verification is off (--insecure)");
  if (args.prefetch) service.prefetch();

  fuse_loop_config* loop_config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(loop_config, 16);
  fuse_loop_cfg_set_idle_threads(loop_config, 2);
  const int rc = fuse_session_loop_mt(se.get(), loop_config);
  fuse_loop_cfg_destroy(loop_config);

  spdlog::info("Unmounting {}", mountpoint);
  service.shutdown();
  hup_thread.request_stop();
  hup_thread.join();
  ticker.stop();
  fetch_thread.stop();
  fs.detach();
  fuse_session_unmount(se.get());
  fuse_remove_signal_handlers(se.get());
  if (rc != 0 && rc != SIGTERM && rc != SIGINT) {
    spdlog::error("The FUSE loop ended with an error ({})", rc);
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace irsafs
