#include "fs/fuse_fs.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>
#include <vector>

namespace irsafs {
namespace {

constexpr const char* kStatusName = ".status";
constexpr std::size_t kPage = 4096;

// The ticket of the directory-entry notification queued by the content listener on this thread
// (0: none): a WRITE or FLUSH that replaced the content waits for it, bounded, before replying.
thread_local std::uint64_t tls_entry_ticket = 0;

timespec now_realtime() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

timespec to_timespec(WallTime t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

FuseFs* self(fuse_req_t req) { return static_cast<FuseFs*>(fuse_req_userdata(req)); }

// The adapter for a request about inode `ino`, counted when it is about the file.
FuseFs* self(fuse_req_t req, fuse_ino_t ino) {
  FuseFs* fs = self(req);
  if (ino >= FuseFs::kFirstVersionIno) fs->count_request();
  return fs;
}

// No exception may cross into libfuse: one place maps them to a reply.
template <typename F>
void guarded(fuse_req_t req, const char* op, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("Cannot complete {}: {}", op, e.what());
    fuse_reply_err(req, EIO);
  }
}

}  // namespace

// The static trampolines of the operations table.
struct Ops {
  static void init(void* userdata, fuse_conn_info* conn) { static_cast<FuseFs*>(userdata)->do_init(conn); }
  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, "lookup", [&] { self(req)->do_lookup(req, parent, name); });
  }
  static void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    self(req)->do_forget(ino, nlookup);
    fuse_reply_none(req);
  }
  static void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    for (size_t i = 0; i < count; ++i) self(req)->do_forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, "getattr", [&] { self(req, ino)->do_getattr(req, ino); });
  }
  static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
    guarded(req, "setattr", [&] { self(req, ino)->do_setattr(req, ino, attr, to_set); });
  }
  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "open", [&] { self(req, ino)->do_open(req, ino, fi); });
  }
  static void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, "read", [&] { self(req, ino)->do_read(req, ino, size, off, fi->fh); });
  }
  static void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
    guarded(req, "write", [&] { self(req, ino)->do_write(req, ino, buf, size, off); });
  }
  static void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, "flush", [&] { self(req, ino)->do_flush(req, ino); });
  }
  static void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "release", [&] { self(req)->do_release(req, ino, fi); });
  }
  // The directory holds exactly two files: nothing is created, removed or renamed. Answered at
  // once (ENOSYS would read "Function not implemented").
  static void mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { self(req)->do_refuse(req); }
  static void mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { self(req)->do_refuse(req); }
  static void unlink(fuse_req_t req, fuse_ino_t, const char*) { self(req)->do_refuse(req); }
  static void rmdir(fuse_req_t req, fuse_ino_t, const char*) { self(req)->do_refuse(req); }
  static void symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { self(req)->do_refuse(req); }
  static void rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) {
    self(req)->do_refuse(req);
  }
  static void link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { self(req)->do_refuse(req); }
  static void create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { self(req)->do_refuse(req); }
  // Python's open() asks isatty() on every open: the kernel sends FUSE_IOCTL each time (it does
  // not remember the answer). Answered here only to be counted with the file's requests.
  static void ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int, void*, fuse_file_info*, unsigned, const void*,
                    size_t, size_t) {
    self(req, ino);
    fuse_reply_err(req, ENOTTY);
  }
  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    guarded(req, "readdir", [&] { self(req)->do_readdir(req, ino, size, off); });
  }
};

const fuse_lowlevel_ops& FuseFs::operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = Ops::init;
    o.lookup = Ops::lookup;
    o.forget = Ops::forget;
    o.forget_multi = Ops::forget_multi;
    o.getattr = Ops::getattr;
    o.setattr = Ops::setattr;
    o.open = Ops::open;
    o.read = Ops::read;
    o.write = Ops::write;
    o.flush = Ops::flush;
    o.release = Ops::release;
    o.mknod = Ops::mknod;
    o.mkdir = Ops::mkdir;
    o.unlink = Ops::unlink;
    o.rmdir = Ops::rmdir;
    o.symlink = Ops::symlink;
    o.rename = Ops::rename;
    o.link = Ops::link;
    o.create = Ops::create;
    o.readdir = Ops::readdir;
    o.ioctl = Ops::ioctl;
    return o;
  }();
  return ops;
}

FuseFs::FuseFs(ConfigService& service, FsOptions options)
    : service_(service), options_(std::move(options)), started_(now_realtime()) {}

void FuseFs::do_init(fuse_conn_info* conn) {
  // No OPEN/RELEASE once content is known: the warm path then never reaches the daemon.
  if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
  // O_TRUNC must arrive as its own SETATTR so a writer's truncate is staged, not applied.
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  // Plain readdir: listing the directory must not look up (and so fetch) the file.
  conn->want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // .status read through the page cache keeps one size: a new mtime is what drops its pages.
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
}

struct stat FuseFs::attr_of(fuse_ino_t ino, double* timeout) {
  struct stat st{};
  st.st_ino = ino;
  st.st_uid = options_.uid;
  st.st_gid = options_.gid;
  st.st_atim = st.st_mtim = st.st_ctim = started_;
  st.st_blksize = 4096;
  *timeout = options_.cache_seconds;
  if (ino == FUSE_ROOT_ID) {
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
  } else if (ino == kStatusIno) {
    // Never cached, and a new mtime whenever the text changes: readers always see fresh JSON,
    // also when opens no longer reach the daemon.
    std::lock_guard lock(mu_);
    refresh_status_locked();
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(status_size_);
    st.st_mtim = st.st_ctim = status_mtime_;
    *timeout = 0;
  } else {
    st.st_mode = S_IFREG | (options_.mode & 07777);
    st.st_nlink = 1;
    if (ContentPtr c = content_of(ino)) {
      st.st_size = static_cast<off_t>(c->bytes.size());
      st.st_mtim = st.st_ctim = st.st_atim = to_timespec(c->obtained_at);
    } else {
      *timeout = 0;  // size unknown until the first fetch: the kernel must ask again
    }
  }
  st.st_blocks = (st.st_size + 511) / 512;
  return st;
}

ContentPtr FuseFs::content_of(fuse_ino_t ino) {
  if (!is_version(ino)) return nullptr;
  const std::uint64_t version = ino - kFirstVersionIno;
  {
    std::lock_guard lock(mu_);
    auto it = versions_.find(version);
    if (it != versions_.end() && it->second.content) return it->second.content;
  }
  // Not pinned yet: version 1's inode, looked up before any content. The service finds the
  // version also between its publication and our pin (the listener has not run yet).
  ContentPtr c = service_.find(version);
  if (c) {
    std::lock_guard lock(mu_);
    if (auto it = versions_.find(version); it != versions_.end() && !it->second.content) it->second.content = c;
  }
  return c;
}

void FuseFs::do_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e{};
  e.entry_timeout = options_.cache_seconds;  // also for negative entries (ino 0)
  if (parent != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (std::strcmp(name, kStatusName) == 0) {
    e.ino = kStatusIno;
  } else if (options_.file_name == name) {
    count_request();
    // The newest version, or version 1 while nothing is known; pinned in the same step, so a
    // version published meanwhile cannot leave this one without its content.
    std::lock_guard lock(mu_);
    ContentPtr current = service_.current();
    const std::uint64_t version = current ? current->version : 1;
    e.ino = ino_of(version);
    VersionInode& v = versions_[version];
    ++v.nlookup;
    if (current && !v.content) v.content = current;
  }
  if (e.ino != 0) e.attr = attr_of(e.ino, &e.attr_timeout);
  if (fuse_reply_entry(req, &e) != 0 && is_version(e.ino)) do_forget(e.ino, 1);
}

void FuseFs::do_forget(fuse_ino_t ino, std::uint64_t nlookup) {
  if (!is_version(ino)) return;
  std::lock_guard lock(mu_);
  auto it = versions_.find(ino - kFirstVersionIno);
  if (it == versions_.end()) return;
  it->second.nlookup -= std::min(nlookup, it->second.nlookup);
  if (it->second.nlookup == 0) versions_.erase(it);  // the current version lives in the service
}

void FuseFs::do_getattr(fuse_req_t req, fuse_ino_t ino) {
  if (ino != FUSE_ROOT_ID && ino != kStatusIno && !is_version(ino)) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  double timeout = 0;
  const struct stat st = attr_of(ino, &timeout);
  fuse_reply_attr(req, &st, timeout);
}

void FuseFs::do_setattr(fuse_req_t req, fuse_ino_t ino, const struct stat* attr, int to_set) {
  if (!is_version(ino)) {
    fuse_reply_err(req, ino == FUSE_ROOT_ID ? EPERM : EACCES);
    return;
  }
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    fuse_reply_err(req, EPERM);  // owner and mode are set by --uid, --gid and --mode
    return;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (options_.read_only) {
      fuse_reply_err(req, EROFS);
      return;
    }
    const int rc = service_.truncate(fuse_req_ctx(req)->pid, static_cast<std::uint64_t>(attr->st_size));
    if (rc != 0) {
      fuse_reply_err(req, rc);
      return;
    }
  }
  // The truncate is staged, not applied: the reply keeps the served size, so the kernel keeps
  // the page cache that concurrent readers use.
  double timeout = 0;
  const struct stat st = attr_of(ino, &timeout);
  fuse_reply_attr(req, &st, timeout);
}

void FuseFs::do_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino == kStatusIno) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
      fuse_reply_err(req, EACCES);
      return;
    }
    // While opens still reach us: direct_io, and this handle's own rendering, so that a reader
    // reading in pieces gets one document whatever other readers do meanwhile.
    {
      std::lock_guard lock(mu_);
      fi->fh = next_status_fh_++;
      status_handles_[fi->fh] = render_status();
    }
    fi->direct_io = 1;
    if (fuse_reply_open(req, fi) != 0) {
      std::lock_guard lock(mu_);
      status_handles_.erase(fi->fh);
    }
    return;
  }
  if (!is_version(ino)) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if ((fi->flags & O_ACCMODE) == O_WRONLY) {
    if (options_.read_only) {
      fuse_reply_err(req, EROFS);
      return;
    }
    // Before any content: the writer's bytes go straight to us, never through the page cache.
    fi->direct_io = 1;
    fuse_reply_open(req, fi);
    return;
  }
  // A reader: wait for the content. ENOSYS tells the kernel to stop sending OPEN (and RELEASE)
  // at all; it is only sent once content exists, so no open can then miss a fetch.
  const WaiterId id = next_waiter_.fetch_add(1);
  auto reply = [this, req](const ReadOutcome& outcome) {
    if (outcome.content) {
      content_seen_.store(true);
      fuse_reply_err(req, ENOSYS);
    } else {
      fuse_reply_err(req, outcome.error != 0 ? outcome.error : EIO);
    }
  };
  // Register for interrupts before parking: the request may be answered (and freed) by another
  // thread as soon as it is parked.
  fuse_req_interrupt_func(
      req,
      [](fuse_req_t r, void* data) {
        if (self(r)->service_.cancel(reinterpret_cast<WaiterId>(data))) {
          spdlog::debug("A waiting reader was interrupted");
          fuse_reply_err(r, EINTR);
        }
      },
      reinterpret_cast<void*>(id));
  // read() either parks the waiter (nullopt: whoever settles it replies, also when starting the
  // fetch failed) or leaves it unparked (an outcome, or an exception guarded() answers).
  if (auto now = service_.read(id, reply)) reply(*now);
}

void FuseFs::do_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, std::uint64_t fh) {
  if (ino == kStatusIno) {
    std::lock_guard lock(mu_);
    std::string_view text;
    if (auto it = status_handles_.find(fh); fh != 0 && it != status_handles_.end()) {
      // direct_io: this handle's rendering; a read from the start renders it afresh.
      if (off == 0) it->second = render_status();
      text = it->second;
    } else {
      // Through the page cache the kernel knows status_size_, the size of every rendering.
      if (status_text_.empty()) refresh_status_locked();
      text = status_text_;
    }
    const size_t start = std::min(text.size(), static_cast<size_t>(off));
    fuse_reply_buf(req, text.data() + start, std::min(size, text.size() - start));
    return;
  }
  ContentPtr c = content_of(ino);
  if (!c) {
    spdlog::error("Cannot read inode {}: no content for that version", ino);
    fuse_reply_err(req, EIO);
    return;
  }
  const std::string_view bytes = c->bytes;
  const size_t start = std::min(bytes.size(), static_cast<size_t>(off));
  fuse_reply_buf(req, bytes.data() + start, std::min(size, bytes.size() - start));
}

void FuseFs::do_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino == kStatusIno) {
    std::lock_guard lock(mu_);
    status_handles_.erase(fi->fh);
  }
  fuse_reply_err(req, 0);
}

void FuseFs::do_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off) {
  if (!is_version(ino) || options_.read_only) {
    fuse_reply_err(req, options_.read_only ? EROFS : EACCES);
    return;
  }
  const pid_t pid = fuse_req_ctx(req)->pid;
  if (pid == 0 && !warned_pid0_.exchange(true)) {
    // The kernel reports 0 for a writer it cannot name in our PID namespace (another
    // container's): all such writers share one write session.
    spdlog::warn("A write comes from a process outside irsafs's PID namespace; such writers cannot be told "
                 "apart and share one write session");
  }
  tls_entry_ticket = 0;
  const int rc = service_.write(static_cast<std::uint64_t>(pid), static_cast<std::uint64_t>(off),
                                std::string_view(buf, size));
  // A write that replaced the content: let the kernel drop the directory entry before the writer
  // can open the file again (it then reads its own text), but never wait unboundedly.
  if (const std::uint64_t ticket = std::exchange(tls_entry_ticket, 0)) await_notices(ticket, kEntryWait);
  if (rc != 0) {
    fuse_reply_err(req, rc);
  } else {
    fuse_reply_write(req, size);
  }
}

void FuseFs::do_flush(fuse_req_t req, fuse_ino_t ino) {
  if (is_version(ino)) {
    tls_entry_ticket = 0;
    std::optional<int> rc = service_.flush(fuse_req_ctx(req)->pid);
    if (const std::uint64_t ticket = std::exchange(tls_entry_ticket, 0)) await_notices(ticket, kEntryWait);
    if (rc) {
      fuse_reply_err(req, *rc);
      return;
    }
  }
  // Nothing staged. Once readers get content, ENOSYS stops FLUSH for good (every close would
  // otherwise cost a round trip); later writers are then committed when they fall quiet.
  fuse_reply_err(req, content_seen_.load() ? ENOSYS : 0);
}

void FuseFs::do_refuse(fuse_req_t req) { fuse_reply_err(req, options_.read_only ? EROFS : EPERM); }

void FuseFs::do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  ContentPtr current = service_.current();
  const struct {
    const char* name;
    fuse_ino_t ino;
    mode_t type;
  } entries[] = {
      {".", FUSE_ROOT_ID, S_IFDIR},
      {"..", FUSE_ROOT_ID, S_IFDIR},
      {kStatusName, kStatusIno, S_IFREG},
      {options_.file_name.c_str(), ino_of(current ? current->version : 1), S_IFREG},
  };
  std::string buf(size, '\0');
  size_t used = 0;
  for (off_t i = off; i < static_cast<off_t>(std::size(entries)); ++i) {
    struct stat st{};
    st.st_ino = entries[i].ino;
    st.st_mode = entries[i].type;
    const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name, &st, i + 1);
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void FuseFs::on_new_version(const ContentPtr& now, const ContentPtr& before) noexcept {
  try {
    {
      std::lock_guard lock(mu_);
      // Inodes the kernel knows keep their version: descriptors open on the old one keep
      // reading it until the kernel forgets it; version 1's inode (looked up before any
      // content) gets its content here, whichever listener call comes first.
      for (const ContentPtr& c : {now, before}) {
        if (!c) continue;
        if (auto it = versions_.find(c->version); it != versions_.end() && !it->second.content) it->second.content = c;
      }
    }
    // No notification for the new version's inode: only version 1's was looked up before its
    // content existed, and that lookup had attribute timeout 0, so the kernel asks again for its
    // size before any read; parked readers may be answered at once.
    if (!before) return;
    // New lookups must find the new inode. A writer wrote through the page cache of the inode it
    // had open: readers of older versions re-read them from us.
    tls_entry_ticket = queue_notices(true, now->source == ContentSource::kWrite, false);
  } catch (const std::exception& e) {
    spdlog::error("Cannot queue the kernel notifications for version {}: {}", now->version, e.what());
  }
}

void FuseFs::on_discarded_write() noexcept {
  try {
    queue_notices(false, false, true);
  } catch (const std::exception& e) {
    spdlog::error("Cannot queue dropping the kernel's cache of refused written bytes: {}", e.what());
  }
}

std::uint64_t FuseFs::queue_notices(bool entry, bool drop_old_pages, bool drop_all_pages) {
  std::uint64_t ticket = 0;
  {
    std::lock_guard lock(notify_mu_);
    entry_pending_ |= entry;
    drop_old_pending_ |= drop_old_pages;
    drop_all_pending_ |= drop_all_pages;
    ticket = ++notices_queued_;
  }
  notify_cv_.notify_all();
  return ticket;
}

bool FuseFs::await_notices(std::uint64_t ticket, std::chrono::milliseconds limit) {
  std::unique_lock lock(notify_mu_);
  if (notify_cv_.wait_for(lock, limit, [&] { return entry_sent_ >= ticket || session_.load() == nullptr; })) {
    return true;
  }
  spdlog::debug("The kernel's directory entry was not dropped within {} ms (the directory is busy); replying "
                "anyway",
                limit.count());
  return false;
}

void FuseFs::attach(fuse_session* session) {
  session_.store(session);
  notifier_ = std::jthread([this](std::stop_token stop) { notifier_loop(stop); });
}

void FuseFs::detach() {
  notifier_.request_stop();
  if (notifier_.joinable()) notifier_.join();
  session_.store(nullptr);
  notify_cv_.notify_all();
}

void FuseFs::notifier_loop(std::stop_token stop) {
  for (;;) {
    bool entry = false, drop_old = false, drop_all = false;
    std::uint64_t ticket = 0;
    {
      std::unique_lock lock(notify_mu_);
      if (!notify_cv_.wait(lock, stop, [this] { return notices_queued_ > notices_sent_; })) return;
      entry = std::exchange(entry_pending_, false);
      drop_old = std::exchange(drop_old_pending_, false);
      drop_all = std::exchange(drop_all_pending_, false);
      ticket = notices_queued_;
    }
    fuse_session* se = session_.load();
    if (se != nullptr && entry) {
      const int rc = fuse_lowlevel_notify_inval_entry(se, FUSE_ROOT_ID, options_.file_name.c_str(),
                                                      options_.file_name.size());
      if (rc != 0 && rc != -ENOENT) {
        spdlog::warn("Cannot drop the kernel's directory entry of {}: {}", options_.file_name, std::strerror(-rc));
      }
    }
    {
      // Before the pages: a page drop may wait for the very WRITE that waits for this.
      std::lock_guard lock(notify_mu_);
      entry_sent_ = std::max(entry_sent_, ticket);
    }
    notify_cv_.notify_all();
    if (se != nullptr && (drop_old || drop_all)) {
      // The version inodes the kernel knows, read now: a version published meanwhile is current.
      std::vector<fuse_ino_t> inodes;
      ContentPtr current = service_.current();
      {
        std::lock_guard lock(mu_);
        for (const auto& [version, v] : versions_) {
          if (drop_all || !current || version != current->version) inodes.push_back(ino_of(version));
        }
      }
      for (fuse_ino_t ino : inodes) {
        const int rc = fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
        if (rc != 0 && rc != -ENOENT) {
          spdlog::warn("Cannot drop the kernel's cache of inode {}: {}", ino, std::strerror(-rc));
        }
      }
    }
    {
      std::lock_guard lock(notify_mu_);
      notices_sent_ = std::max(notices_sent_, ticket);
      entry_sent_ = std::max(entry_sent_, ticket);
    }
    notify_cv_.notify_all();
  }
}

void FuseFs::refresh_status_locked() {
  // Through the page cache the kernel reads .status at the size it last learnt: every rendering
  // has that size (padded with spaces, JSON whitespace), so a rendering made between a reader's
  // GETATTR and its READ is still read whole, and the reader's final read finds the end where
  // it expects it. The size grows in whole pages when a rendering needs more, never shrinks.
  // An unchanged text keeps its mtime, so the kernel keeps the pages a reader is reading; a
  // changed one gets a new mtime, which makes the kernel drop them (auto_inval_data).
  std::string text = render_status();
  status_size_ = std::max(status_size_, (text.size() + kPage - 1) / kPage * kPage);
  if (text.size() < status_size_) {
    text.back() = ' ';
    text.resize(status_size_ - 1, ' ');
    text.push_back('\n');
  }
  if (text != status_text_) {
    status_text_ = std::move(text);
    status_mtime_ = now_realtime();
  }
}

std::string FuseFs::render_status() {
  nlohmann::ordered_json j = service_.status();
  j["file"] = options_.file_name;
  j["fuse_requests"] = requests_.load();
  return j.dump(2) + "\n";
}

}  // namespace irsafs
