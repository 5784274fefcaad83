// The FUSE adapter: maps low-level FUSE requests to ConfigService calls and the results to
// exactly one reply each. It owns only FUSE bookkeeping: inode numbers, the kernel's lookup
// counts, and when to tell the kernel that a version changed. See docs/THREADING.md.
//
// Kernel notifications never run in a request handler: they are queued for the notifier thread
// (see docs/THREADING.md, "Kernel notifications").
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
#include <chrono>
#include <map>
#include <memory>
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
  // The longest time a WRITE or FLUSH that replaced the content waits for the notifier to
  // drop the directory entry (so that the writer's next open finds the new version). Bounded:
  // the notifier may wait for the directory lock, held by a process that waits for this very
  // writer (rm, mv); that process proceeds once the WRITE is answered.
  static constexpr std::chrono::milliseconds kEntryWait{100};

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

  // ConfigService's content listener: pins the old version for its open descriptors and
  // queues the kernel notifications (never sends them itself).
  void on_new_version(const ContentPtr& now, const ContentPtr& before) noexcept;
  // ConfigService's discard listener: written bytes were not published; the kernel's page cache
  // may hold them, so it is dropped for every version inode (from the notifier thread).
  void on_discarded_write() noexcept;

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
  void do_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, std::uint64_t fh);
  void do_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  void do_flush(fuse_req_t req, fuse_ino_t ino);
  void do_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void do_refuse(fuse_req_t req);  // namespace operations: EPERM (EROFS when read-only)

  struct stat attr_of(fuse_ino_t ino, double* timeout);
  ContentPtr content_of(fuse_ino_t ino);
  std::string render_status();
  void refresh_status_locked();  // renders .status; a new mtime only when the text changed
  void notifier_loop(std::stop_token stop);
  // Queues notifications; returns their ticket (done once notified_ reaches it).
  std::uint64_t queue_notices(bool entry, bool drop_old_pages, bool drop_all_pages);
  // Waits (at most `limit`) until the directory entry drop of `ticket` was sent.
  bool await_notices(std::uint64_t ticket, std::chrono::milliseconds limit);
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
  // .status read through the page cache (once opens no longer reach us): the last rendering,
  // padded with spaces to status_size_ (a multiple of 4096 that never shrinks), so that the
  // size the kernel knows is the size of every rendering.
  std::string status_text_;                         // guarded by mu_
  std::size_t status_size_ = 0;                     // guarded by mu_
  timespec status_mtime_{};                         // guarded by mu_: when status_text_ changed
  // .status opened with direct_io: one rendering per open file handle, re-rendered only by a
  // read at offset 0 of that handle, freed at release.
  std::map<std::uint64_t, std::string> status_handles_;  // guarded by mu_
  std::uint64_t next_status_fh_ = 1;                     // guarded by mu_

  // Every kernel notification is sent from the notifier thread, never from a request handler:
  // the kernel may hold a lock the notification needs (the directory's for an entry, a page's
  // for an inode) while it waits for the very request being handled. Pending work is coalesced.
  std::mutex notify_mu_;
  std::condition_variable_any notify_cv_;
  bool entry_pending_ = false;         // guarded by notify_mu_: drop the file's directory entry
  bool drop_old_pending_ = false;      // guarded by notify_mu_: pages of non-current versions
  bool drop_all_pending_ = false;      // guarded by notify_mu_: pages of every version inode
  std::uint64_t notices_queued_ = 0;   // guarded by notify_mu_: tickets issued
  std::uint64_t notices_sent_ = 0;     // guarded by notify_mu_: tickets done
  std::uint64_t entry_sent_ = 0;       // guarded by notify_mu_: tickets whose entry drop is done
  std::atomic<bool> warned_pid0_{false};
  std::jthread notifier_;
};

}  // namespace irsafs
