// The FUSE adapter, in two halves (libfuse's passthrough_hp style):
//
// - FuseFs (fs/fuse_fs.cc) computes each operation's answer — an errno, an entry, attributes,
//   data, directory entries — from plain values (inode numbers, names, open flags, the writer's
//   id) and returns it. It never sees a fuse_req_t or a session, so unit tests drive it directly
//   (tests/unit/fuse_fs_test.cc). It owns only FUSE bookkeeping: inode numbers, the kernel's
//   lookup counts, the .status renderings, and when to tell the kernel that a version changed.
// - The operations table (fs/fuse_ops.cc): one wrapper per operation that unpacks the request,
//   asks FuseFs and sends exactly one reply; no exception crosses into libfuse.
//
// Kernel notifications never run in a request handler: they are queued for the notifier thread,
// which sends them through a KernelNotifier (the session's in the daemon, a recording fake in
// tests). See docs/THREADING.md, "Kernel notifications".
//
// Inodes: 1 the root, 2 ".status", kFirstVersionIno + v for version v of the file. Each
// version has its own inode, like a file replaced by rename(2): descriptors keep the version
// they opened; a new lookup gets the newest one. Version 1's inode exists before any content
// (size 0, attributes never cached) so that the first open can wait for the fetch.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

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

// Where kernel notifications go: fuse_lowlevel_notify_* on the session in the daemon, a
// recording fake in tests. Called only from the notifier thread, never under a lock of ours.
// Each returns 0 or a negative errno (-ENOENT: the kernel did not know it).
class KernelNotifier {
 public:
  virtual ~KernelNotifier() = default;
  // Drops the directory entry `name` of `parent` (the next lookup asks us).
  virtual int inval_entry(fuse_ino_t parent, std::string_view name) = 0;
  // Drops the cached pages of `ino` in [off, off + len) (len 0: to the end) and its attributes.
  virtual int inval_inode(fuse_ino_t ino, off_t off, off_t len) = 0;
};

// An answer: `value`, or an errno (error != 0).
template <typename T>
struct Answer {
  int error = 0;
  T value{};

  static Answer fail(int e) { return Answer{e, T{}}; }
  bool ok() const { return error == 0; }
};

// Attributes with their lifetime in the kernel's cache (seconds).
struct Attr {
  struct stat st{};
  double timeout = 0;
};

// The answer to an OPEN: an errno (ENOSYS: "no open needed", the content exists), or a handle.
struct OpenReply {
  int error = 0;
  std::uint64_t fh = 0;
  bool direct_io = false;
};
using OpenDone = std::function<void(const OpenReply&)>;

// The answer to a READ: the bytes, kept alive by `content` (a version) or held in `text` (.status).
struct ReadData {
  ContentPtr content;
  std::string text;
  std::size_t offset = 0;
  std::size_t size = 0;
  std::string_view bytes() const {
    const std::string_view all = content ? std::string_view(content->bytes) : std::string_view(text);
    return all.substr(offset, size);
  }
};

struct DirEntry {
  std::string name;
  fuse_ino_t ino = 0;
  mode_t type = 0;  // S_IFDIR or S_IFREG
  off_t next = 0;   // the offset of the entry after this one
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

  // Registers the adapter as `service`'s content and discard listener (unregistered by the
  // destructor).
  FuseFs(ConfigService& service, FsOptions options);
  ~FuseFs();
  FuseFs(const FuseFs&) = delete;
  FuseFs& operator=(const FuseFs&) = delete;

  // The operations table (fs/fuse_ops.cc); userdata must be this object.
  static const fuse_lowlevel_ops& operations();

  // Enables kernel notifications and starts the notifier thread: through the session's
  // fuse_lowlevel_notify_* (fs/fuse_ops.cc), or through `notifier` (which must outlive
  // detach()). detach() stops the thread and joins it; queued notifications are then dropped.
  void attach(fuse_session* session);
  void attach(KernelNotifier& notifier);
  void detach();

  static fuse_ino_t ino_of(std::uint64_t version) { return kFirstVersionIno + version; }
  static bool is_version(fuse_ino_t ino) { return ino >= kFirstVersionIno; }

  // --- operations: each computes one request's answer; the wrapper sends it ----------------
  // `writer` is the requesting thread's id as the kernel reports it (fuse_ctx pid; 0 when it
  // is outside our PID namespace).
  void init(fuse_conn_info& conn) const;
  // ino 0 in the value: a negative entry (cached for cache_seconds). A version inode gets one
  // more kernel lookup; if the entry cannot be delivered, the wrapper calls forget(ino, 1).
  Answer<fuse_entry_param> lookup(fuse_ino_t parent, std::string_view name);
  void forget(fuse_ino_t ino, std::uint64_t nlookup);
  Answer<Attr> getattr(fuse_ino_t ino);
  Answer<Attr> setattr(fuse_ino_t ino, const struct stat& attr, int to_set, std::uint64_t writer);
  // An answer now, or nullopt: the reader is parked and `done` is called exactly once later,
  // from whichever thread settles it (unless interrupt() takes it back). `before_wait(id)` is
  // called before parking (the wrapper registers the interrupt for that id there: once parked,
  // `done` may run on another thread at once).
  std::optional<OpenReply> open(fuse_ino_t ino, int flags, OpenDone done,
                                const std::function<void(WaiterId)>& before_wait = {});
  // Takes back the parked reader `id` (an interrupted open): true if it was still parked; the
  // caller then replies EINTR.
  bool interrupt(WaiterId id);
  // `fh` is the handle open() gave (0 when opens no longer reach us).
  Answer<ReadData> read(fuse_ino_t ino, std::size_t size, off_t off, std::uint64_t fh);
  // 0, or an errno; the wrapper replies the byte count on 0.
  int write(fuse_ino_t ino, std::string_view data, off_t off, std::uint64_t writer);
  int flush(fuse_ino_t ino, std::uint64_t writer);  // 0 or an errno (ENOSYS: no more FLUSH)
  void release(fuse_ino_t ino, std::uint64_t fh);
  // Entries from offset `off` on (the wrapper packs as many as fit).
  Answer<std::vector<DirEntry>> readdir(fuse_ino_t ino, off_t off) const;
  int ioctl(fuse_ino_t ino);  // ENOTTY (counted with the file's requests: Python asks isatty())
  int refuse() const;         // namespace operations: EPERM (EROFS when read-only)

  // Requests about the file that reached the daemon (shown in .status as fuse_requests; the
  // warm path adds none, and reading .status adds none).
  void count_request(fuse_ino_t ino) {
    if (is_version(ino)) requests_.fetch_add(1, std::memory_order_relaxed);
  }

  // ConfigService's content listener: pins the old version for its open descriptors and
  // queues the kernel notifications (never sends them itself).
  void on_new_version(const ContentPtr& now, const ContentPtr& before) noexcept;
  // ConfigService's discard listener: written bytes were not published; the kernel's page cache
  // may hold them, so it is dropped for every version inode (from the notifier thread).
  void on_discarded_write() noexcept;

  // Waits (at most `limit`) until every notification queued so far was sent (or dropped by
  // detach()). For tests and diagnostics: no request handler waits for this.
  bool settle_notices(std::chrono::milliseconds limit);

 private:
  struct VersionInode {
    std::uint64_t nlookup = 0;
    ContentPtr content;  // pinned once the version is no longer current
  };

  Attr attr_of(fuse_ino_t ino);
  ContentPtr content_of(fuse_ino_t ino);
  std::string render_status();
  void refresh_status_locked();  // renders .status; a new mtime only when the text changed
  void notifier_loop(std::stop_token stop);
  // Queues notifications; returns their ticket (done once notices_sent_ reaches it).
  std::uint64_t queue_notices(bool entry, bool drop_old_pages, bool drop_all_pages);
  // Waits (at most `limit`) until the directory entry drop of `ticket` was sent.
  bool await_notices(std::uint64_t ticket, std::chrono::milliseconds limit);
  void warn_pid0(std::uint64_t writer);

  ConfigService& service_;
  const FsOptions options_;
  const timespec started_;
  std::atomic<std::uint64_t> next_waiter_{1};
  std::atomic<bool> content_seen_{false};  // some reader got content: opens may be skipped
  std::atomic<std::uint64_t> requests_{0};

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
  std::unique_ptr<KernelNotifier> session_notifier_;  // attach(fuse_session*)'s
  std::atomic<KernelNotifier*> notifier_{nullptr};    // null: not attached
  std::mutex notify_mu_;
  std::condition_variable_any notify_cv_;
  bool entry_pending_ = false;         // guarded by notify_mu_: drop the file's directory entry
  bool drop_old_pending_ = false;      // guarded by notify_mu_: pages of non-current versions
  bool drop_all_pending_ = false;      // guarded by notify_mu_: pages of every version inode
  std::uint64_t notices_queued_ = 0;   // guarded by notify_mu_: tickets issued
  std::uint64_t notices_sent_ = 0;     // guarded by notify_mu_: tickets done
  std::uint64_t entry_sent_ = 0;       // guarded by notify_mu_: tickets whose entry drop is done
  std::atomic<bool> warned_pid0_{false};
  std::jthread notifier_thread_;
};

}  // namespace irsafs
