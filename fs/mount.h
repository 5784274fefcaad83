// `irsafs mount`: the mount lifecycle around the FUSE adapter: the mount point (a stale mount
// left by a killed daemon is detached), the session, daemonizing, signals, the loop. The
// engine behind the file is a Daemon (core/daemon.h), built by the caller.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/daemon.h"
#include "fs/fuse_fs.h"

namespace irsafs {

struct MountSettings {
  std::string mountpoint;
  bool foreground = false;
  bool prefetch = false;  // fetch at once instead of at the first read
  FsOptions fs;
  // Made a symbolic link to the mounted file once the mount is up, removed at unmount: a
  // sidecar mounts on a subdirectory of the shared volume and links AWS_CONFIG_FILE to it
  // (docs/deploy.md says why).
  std::optional<std::string> link;
  std::string describe;                 // appended to the "Mounted" log line (e.g. the trust source)
  std::function<void()> on_terminal_lost;  // daemonized away from a terminal: move logging (syslog)
};

// Prepares the daemon's components, mounts, daemonizes unless foreground, starts the daemon
// and serves until unmounted or signalled (SIGTERM/SIGINT: unmount, exit 0; SIGHUP: refresh).
// Returns the exit status.
int run_mount(Daemon& daemon, const MountSettings& settings);

}  // namespace irsafs
