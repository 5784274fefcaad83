// The FUSE adapter: maps low-level FUSE requests to ConfigService calls and the results to
// exactly one reply each. It owns only FUSE bookkeeping: inode numbers, the kernel's lookup
// counts, and when to tell the kernel that a version changed. See docs/THREADING.md.
//
// Inodes: 1 the root, 2 ".status", kFirstVersionIno + v for version v of the file. Each
// version has its own inode, like a file replaced by rename(2): descriptors keep the version
// they opened; a new lookup gets the newest one. Version 1's inode exists before any content
// (size 0, attributes never cached) so that the first open can wait for the fetch.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "core/config_service.h"

namespace irsafs {

struct FsOptions {
  std::string file_name = "config";
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0644;
  bool read_only = false;
  double cache_seconds = 86400;  // entry and attribute lifetime once the content is known
};

class FuseFs {
 public:
  static constexpr fuse_ino_t kStatusIno = 2;
  static constexpr fuse_ino_t kFirstVersionIno = 16;  // + version
  static constexpr std::uint64_t kFreshStatusFh = 1;   // .status opened with direct_io

  FuseFs(ConfigService& service, FsOptions options);
  FuseFs(const FuseFs&) = delete;
  FuseFs& operator=(const FuseFs&) = delete;

  // The operations table; userdata must be this object.
  static const fuse_lowlevel_ops& operations();

  // Enables kernel notifications once the session exists (and starts the invalidator thread);
  // detach() stops them and joins the thread.
  void attach(fuse_session* session);
  void detach();

  // Requests about the file that reached the daemon (shown in .status as fuse_requests; the
  // warm path adds none, and reading .status adds none).
  void count_request() { requests_.fetch_add(1, std::memory_order_relaxed); }

  // ConfigService's content listener: drops the kernel's view of the old version.
  void on_new_version(const ContentPtr& now, const ContentPtr& before);

 private:
  struct VersionInode {
    std::uint64_t nlookup = 0;
    ContentPtr content;  // pinned once the version is no longer current
  };
  friend struct Ops;

  // Each do_* sends exactly one reply.
  void do_init(fuse_conn_info* conn);
  void do_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void do_forget(fuse_ino_t ino, std::uint64_t nlookup);
  void do_getattr(fuse_req_t req, fuse_ino_t ino);
  void do_setattr(fuse_req_t req, fuse_ino_t ino, const struct stat* attr, int to_set);
  void do_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void do_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool fresh);
  void do_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  void do_flush(fuse_req_t req, fuse_ino_t ino);
  void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);

  struct stat attr_of(fuse_ino_t ino, double* timeout);
  ContentPtr content_of(fuse_ino_t ino);
  std::string render_status();
  void refresh_status_locked();  // renders .status; a new mtime only when the text changed
  void invalidator_loop(std::stop_token stop);
  static bool is_version(fuse_ino_t ino) { return ino >= kFirstVersionIno; }
  static fuse_ino_t ino_of(std::uint64_t version) { return kFirstVersionIno + version; }

  ConfigService& service_;
  const FsOptions options_;
  const timespec started_;
  std::atomic<fuse_session*> session_{nullptr};
  std::atomic<std::uint64_t> next_waiter_{1};
  std::atomic<bool> content_seen_{false};
  std::atomic<std::uint64_t> requests_{0};  // some reader got content: opens may be skipped

  // Lock order: mu_ before the service's lock (render_status holds mu_ and asks the service).
  std::mutex mu_;
  std::map<std::uint64_t, VersionInode> versions_;  // guarded by mu_
  std::string status_text_;                         // guarded by mu_: last rendered .status
  timespec status_mtime_{};                         // guarded by mu_: when status_text_ changed

  // Old versions' cached pages are dropped from this thread: the kernel may hold their page
  // locks while it waits for the very request (a WRITE) that published the new version.
  std::mutex inval_mu_;
  std::condition_variable_any inval_cv_;
  std::deque<fuse_ino_t> inval_queue_;  // guarded by inval_mu_
  std::jthread invalidator_;
};

}  // namespace irsafs
