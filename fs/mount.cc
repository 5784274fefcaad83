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
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/exit_codes.h"
#include "core/daemon.h"
#include "fs/fuse_fs.h"

extern char** environ;

namespace irsafs {
namespace {

class MountError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The root of a mount, as the kernel says (statx, Linux 5.8): no mount table to parse. Only
// a FUSE mount whose daemon died answers ENOTCONN, and that is a mount point too.
bool is_mount_point(const std::string& path) {
  struct statx stx {};
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, 0, &stx) != 0) return errno == ENOTCONN;
  return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
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

// What `--link PATH` points at: the file, relative to PATH's directory. A reader in another
// container follows it in its own view: it works wherever that container mounts the volumes,
// as long as it mounts them side by side as the sidecar does (docs/deploy.md).
std::string link_target(const std::string& link, const std::string& file) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::absolute(link).lexically_normal().parent_path();
  const fs::path rel = fs::path(file).lexically_relative(dir);
  return rel.empty() ? file : rel.string();
}

// Makes `link` a symbolic link to `target`, replacing a file or link there in one rename, so a
// reader of `link` sees the old file or the new link, never nothing.
void make_link(const std::string& link, const std::string& target) {
  const std::string tmp = link + ".irsafs-link";
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) {
    const int err = errno;
    throw MountError("Cannot create the link " + link + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw MountError("Cannot create the link " + link + ": " + std::strerror(err) +
                     (err == EISDIR ? " (a directory is there)" : ""));
  }
}

// Removes `link` if it still points at `target` (another process may have replaced it).
void remove_link(const std::string& link, const std::string& target) {
  std::error_code ec;
  if (std::filesystem::read_symlink(link, ec) == target && !ec && ::unlink(link.c_str()) != 0) {
    spdlog::warn("Cannot remove the link {}: {}", link, std::strerror(errno));
  }
}

// RAII for the parts of a libfuse session.
struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct ArgsHolder {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~ArgsHolder() { fuse_opt_free_args(&args); }
};

// Signals blocked in this thread (and in every thread it starts) until the scope ends.
class BlockedSignals {
 public:
  explicit BlockedSignals(std::initializer_list<int> signals) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : signals) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, &previous_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

 private:
  sigset_t previous_;
};

using SessionPtr = std::unique_ptr<fuse_session, SessionDeleter>;

// A session mounted on `mountpoint`, with libfuse's SIGTERM/SIGINT handlers (they end the loop).
SessionPtr mount_session(FuseFs& fs, const std::string& mountpoint, bool read_only) {
  std::string mount_opts = "fsname=irsafs,subtype=irsafs,default_permissions,nosuid,nodev,noatime";
  if (::geteuid() == 0) mount_opts += ",allow_other";
  if (read_only) mount_opts += ",ro";
  ArgsHolder fargs;
  for (const char* a : {"irsafs", "-o", mount_opts.c_str()}) fuse_opt_add_arg(&fargs.args, a);
  SessionPtr se(fuse_session_new(&fargs.args, &FuseFs::operations(), sizeof(fuse_lowlevel_ops), &fs));
  if (!se) throw MountError("Cannot create the FUSE session (is libfuse3 installed?)");
  if (fuse_set_signal_handlers(se.get()) != 0) throw MountError("Cannot install the signal handlers");
  if (fuse_session_mount(se.get(), mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(se.get());
    throw MountError("Cannot mount irsafs on " + mountpoint +
                     " (is /dev/fuse present, and are we allowed to mount? in a container: --device /dev/fuse "
                     "--cap-add SYS_ADMIN)");
  }
  return se;
}

// Forks into the background; the parent exits 0 once this returns in the child. Logging stays
// where the caller sees it when that is a pipe or a container log; `on_terminal_lost` moves it
// (to syslog) when it was a terminal we are about to leave.
void daemonize(const std::function<void()>& on_terminal_lost) {
  const bool keep_stderr = ::isatty(STDERR_FILENO) == 0;
  const int saved_stderr = keep_stderr ? ::dup(STDERR_FILENO) : -1;
  if (fuse_daemonize(0) != 0) throw MountError("Cannot daemonize");
  if (saved_stderr >= 0) {
    ::dup2(saved_stderr, STDERR_FILENO);
    ::close(saved_stderr);
  } else if (on_terminal_lost) {
    on_terminal_lost();
  }
}

}  // namespace

int run_mount(Daemon& daemon, const MountSettings& settings) {
  // SIGHUP means "refresh" from the moment the mount exists: blocked in every thread, taken
  // only by the thread that waits for it.
  const BlockedSignals hup_everywhere({SIGHUP});
  FuseFs fs(daemon.service(), settings.fs);
  std::string mountpoint;
  std::string link_to;  // the target of settings.link once made
  SessionPtr se;
  try {
    mountpoint = prepare_mountpoint(settings.mountpoint);
    daemon.prepare();  // e.g. the endpoint's port: taken → exit 1 before anything is mounted
    se = mount_session(fs, mountpoint, settings.fs.read_only);
    if (settings.link) {
      link_to = link_target(*settings.link, mountpoint + "/" + settings.fs.file_name);
      make_link(*settings.link, link_to);
    }
    if (!settings.foreground) daemonize(settings.on_terminal_lost);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    if (!link_to.empty()) remove_link(*settings.link, link_to);
    if (se) {
      fuse_session_unmount(se.get());
      fuse_remove_signal_handlers(se.get());
    }
    return kExitFailure;
  }
  std::jthread hup_thread;
  {
    // Our own threads take no signals: SIGTERM/SIGINT go to libfuse's loop.
    const BlockedSignals quiet({SIGTERM, SIGINT});
    fs.attach(se.get());
    daemon.start();
    hup_thread = std::jthread([&daemon](std::stop_token stop) {
      sigset_t hup;
      sigemptyset(&hup);
      sigaddset(&hup, SIGHUP);
      const timespec poll{0, 200 * 1000 * 1000};
      while (!stop.stop_requested()) {
        if (sigtimedwait(&hup, nullptr, &poll) == SIGHUP) daemon.service().refresh_now();
      }
    });
  }
  const FsOptions& fo = settings.fs;
  spdlog::info("Mounted irsafs on {}: {}/{} (uid {}, gid {}, mode {:04o}{}){}; fetching {}; {}", mountpoint, mountpoint,
               fo.file_name, fo.uid, fo.gid, fo.mode, fo.read_only ? ", read-only" : "",
               settings.link ? fmt::format(", linked from {} -> {}", *settings.link, link_to) : "",
               settings.prefetch ? "now" : "on first read", settings.describe);
  if (settings.prefetch) daemon.service().prefetch();

  fuse_loop_config* loop_config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(loop_config, 16);
  fuse_loop_cfg_set_idle_threads(loop_config, 2);
  const int rc = fuse_session_loop_mt(se.get(), loop_config);
  fuse_loop_cfg_destroy(loop_config);

  spdlog::info("Unmounting {}", mountpoint);
  if (settings.link) remove_link(*settings.link, link_to);
  daemon.stop();
  hup_thread.request_stop();
  hup_thread.join();
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
