// `irsafs mount`: the mount lifecycle (stale-mount clean-up, daemonizing, signals) around the
// FUSE adapter.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

#include "fetcher/log.h"
#include "fetcher/options.h"

namespace irsafs {

struct MountArgs {
  std::string mountpoint;
  bool foreground = false;
  std::string file_name = "config";
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  mode_t mode = 0644;
  bool prefetch = false;
  double refresh_interval_seconds = 0;
  bool read_only = false;
  int log_level = 2;  // spdlog::level::info
  LogFormat log_format = LogFormat::kText;
};

// Mounts and serves until unmounted or signalled. Returns the exit status.
int run_mount(const ResolvedOptions& options, const MountArgs& args);

}  // namespace irsafs
