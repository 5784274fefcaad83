// The adapter's answers: no fuse_req_t, no session, no reply in here (fs/fuse_ops.cc sends
// them). See fs/fuse_fs.h.
#include "fs/fuse_fs.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

namespace irsafs {
namespace {

constexpr std::string_view kStatusName = ".status";
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

// The bytes of `text` a READ of `size` at `off` gets.
std::pair<std::size_t, std::size_t> slice(std::size_t total, std::size_t size, off_t off) {
  const std::size_t start = std::min(total, static_cast<std::size_t>(std::max<off_t>(off, 0)));
  return {start, std::min(size, total - start)};
}

}  // namespace

FuseFs::FuseFs(ConfigService& service, FsOptions options)
    : service_(service), options_(std::move(options)), started_(now_realtime()) {
  service_.set_content_listener([this](const ContentPtr& now, const ContentPtr& before) { on_new_version(now, before); });
  service_.set_discard_listener([this] { on_discarded_write(); });
  // .status and the HTTP /status are one rendering: the service's, with the adapter's fields.
  service_.set_status_extras("fs", [this](nlohmann::ordered_json& j) {
    j["file"] = options_.file_name;
    j["fuse_requests"] = requests_.load();
  });
}

FuseFs::~FuseFs() {
  service_.set_content_listener({});
  service_.set_discard_listener({});
  service_.set_status_extras("fs", {});
  detach();
}

void FuseFs::init(fuse_conn_info& conn) const {
  // No OPEN/RELEASE once content is known: the warm path then never reaches the daemon.
  if (conn.capable & FUSE_CAP_NO_OPEN_SUPPORT) conn.want |= FUSE_CAP_NO_OPEN_SUPPORT;
  // O_TRUNC must arrive as its own SETATTR so a writer's truncate is staged, not applied.
  conn.want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  // Plain readdir: listing the directory must not look up (and so fetch) the file.
  conn.want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
  conn.want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // .status read through the page cache keeps one size: a new mtime is what drops its pages.
  if (conn.capable & FUSE_CAP_AUTO_INVAL_DATA) conn.want |= FUSE_CAP_AUTO_INVAL_DATA;
}

Attr FuseFs::attr_of(fuse_ino_t ino) {
  Attr a;
  struct stat& st = a.st;
  st.st_ino = ino;
  st.st_uid = options_.uid;
  st.st_gid = options_.gid;
  st.st_atim = st.st_mtim = st.st_ctim = started_;
  st.st_blksize = 4096;
  a.timeout = options_.cache_seconds;
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
    a.timeout = 0;
  } else {
    st.st_mode = S_IFREG | (options_.mode & 07777);
    st.st_nlink = 1;
    if (ContentPtr c = content_of(ino)) {
      st.st_size = static_cast<off_t>(c->bytes.size());
      st.st_mtim = st.st_ctim = st.st_atim = to_timespec(c->obtained_at);
    } else {
      a.timeout = 0;  // size unknown until the first fetch: the kernel must ask again
    }
  }
  st.st_blocks = (st.st_size + 511) / 512;
  return a;
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

Answer<fuse_entry_param> FuseFs::lookup(fuse_ino_t parent, std::string_view name) {
  if (parent != FUSE_ROOT_ID) return Answer<fuse_entry_param>::fail(ENOENT);
  Answer<fuse_entry_param> a;
  fuse_entry_param& e = a.value;
  e.entry_timeout = options_.cache_seconds;  // also for negative entries (ino 0)
  if (name == kStatusName) {
    e.ino = kStatusIno;
  } else if (name == options_.file_name) {
    requests_.fetch_add(1, std::memory_order_relaxed);
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
  if (e.ino != 0) {
    try {
      const Attr attr = attr_of(e.ino);
      e.attr = attr.st;
      e.attr_timeout = attr.timeout;
    } catch (...) {
      if (is_version(e.ino)) forget(e.ino, 1);  // the kernel never hears of this lookup
      throw;
    }
  }
  return a;
}

void FuseFs::forget(fuse_ino_t ino, std::uint64_t nlookup) {
  if (!is_version(ino)) return;
  std::lock_guard lock(mu_);
  auto it = versions_.find(ino - kFirstVersionIno);
  if (it == versions_.end()) return;
  it->second.nlookup -= std::min(nlookup, it->second.nlookup);
  if (it->second.nlookup == 0) versions_.erase(it);  // the current version lives in the service
}

Answer<Attr> FuseFs::getattr(fuse_ino_t ino) {
  count_request(ino);
  if (ino != FUSE_ROOT_ID && ino != kStatusIno && !is_version(ino)) return Answer<Attr>::fail(ENOENT);
  return {0, attr_of(ino)};
}

Answer<Attr> FuseFs::setattr(fuse_ino_t ino, const struct stat& attr, int to_set, std::uint64_t writer) {
  count_request(ino);
  if (!is_version(ino)) return Answer<Attr>::fail(ino == FUSE_ROOT_ID ? EPERM : EACCES);
  // Owner and mode are set by --uid, --gid and --mode.
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) return Answer<Attr>::fail(EPERM);
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (options_.read_only) return Answer<Attr>::fail(EROFS);
    const int rc = service_.truncate(writer, static_cast<std::uint64_t>(attr.st_size));
    if (rc != 0) return Answer<Attr>::fail(rc);
  }
  // The truncate is staged, not applied: the reply keeps the served size, so the kernel keeps
  // the page cache that concurrent readers use.
  return {0, attr_of(ino)};
}

std::optional<OpenReply> FuseFs::open(fuse_ino_t ino, int flags, OpenDone done,
                                      const std::function<void(WaiterId)>& before_wait) {
  count_request(ino);
  if (ino == kStatusIno) {
    if ((flags & O_ACCMODE) != O_RDONLY) return OpenReply{EACCES};
    // While opens still reach us: direct_io, and this handle's own rendering, so that a reader
    // reading in pieces gets one document whatever other readers do meanwhile.
    std::lock_guard lock(mu_);
    const std::uint64_t fh = next_status_fh_++;
    status_handles_[fh] = render_status();
    return OpenReply{0, fh, true};
  }
  if (!is_version(ino)) return OpenReply{EISDIR};
  if ((flags & O_ACCMODE) == O_WRONLY) {
    if (options_.read_only) return OpenReply{EROFS};
    // Before any content: the writer's bytes go straight to us, never through the page cache.
    return OpenReply{0, 0, true};
  }
  // A reader: wait for the content. ENOSYS tells the kernel to stop sending OPEN (and RELEASE)
  // at all; it is only sent once content exists, so no open can then miss a fetch.
  auto answer = [this](const ReadOutcome& outcome) {
    if (outcome.content) {
      content_seen_.store(true);
      return OpenReply{ENOSYS};
    }
    return OpenReply{outcome.error != 0 ? outcome.error : EIO};
  };
  const WaiterId id = next_waiter_.fetch_add(1);
  if (before_wait) before_wait(id);
  // read() either parks the waiter (nullopt: whoever settles it calls `done`, also when starting
  // the fetch failed) or leaves it unparked (an outcome now, or an exception before parking).
  if (auto now = service_.read(id, [answer, done = std::move(done)](const ReadOutcome& o) { done(answer(o)); })) {
    return answer(*now);
  }
  return std::nullopt;
}

bool FuseFs::interrupt(WaiterId id) { return service_.cancel(id); }

Answer<ReadData> FuseFs::read(fuse_ino_t ino, std::size_t size, off_t off, std::uint64_t fh) {
  count_request(ino);
  Answer<ReadData> a;
  ReadData& d = a.value;
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
    const auto [start, n] = slice(text.size(), size, off);
    d.text.assign(text.substr(start, n));
    d.size = n;
    return a;
  }
  d.content = content_of(ino);
  if (!d.content) {
    spdlog::error("Cannot read inode {}: no content for that version", ino);
    return Answer<ReadData>::fail(EIO);
  }
  std::tie(d.offset, d.size) = slice(d.content->bytes.size(), size, off);
  return a;
}

void FuseFs::release(fuse_ino_t ino, std::uint64_t fh) {
  if (ino != kStatusIno) return;
  std::lock_guard lock(mu_);
  status_handles_.erase(fh);
}

void FuseFs::warn_pid0(std::uint64_t writer) {
  if (writer == 0 && !warned_pid0_.exchange(true)) {
    // The kernel reports 0 for a writer it cannot name in our PID namespace (another
    // container's): all such writers share one write session.
    spdlog::warn("A write comes from a process outside irsafs's PID namespace; such writers cannot be told "
                 "apart and share one write session");
  }
}

int FuseFs::write(fuse_ino_t ino, std::string_view data, off_t off, std::uint64_t writer) {
  count_request(ino);
  if (!is_version(ino) || options_.read_only) return options_.read_only ? EROFS : EACCES;
  warn_pid0(writer);
  tls_entry_ticket = 0;
  const int rc = service_.write(writer, static_cast<std::uint64_t>(off), data);
  // A write that replaced the content: let the kernel drop the directory entry before the writer
  // can open the file again (it then reads its own text), but never wait unboundedly.
  if (const std::uint64_t ticket = std::exchange(tls_entry_ticket, 0)) await_notices(ticket, kEntryWait);
  return rc;
}

int FuseFs::flush(fuse_ino_t ino, std::uint64_t writer) {
  count_request(ino);
  if (is_version(ino)) {
    tls_entry_ticket = 0;
    std::optional<int> rc = service_.flush(writer);
    if (const std::uint64_t ticket = std::exchange(tls_entry_ticket, 0)) await_notices(ticket, kEntryWait);
    if (rc) return *rc;
  }
  // Nothing staged. Once readers get content, ENOSYS stops FLUSH for good (every close would
  // otherwise cost a round trip); later writers are then committed when they fall quiet.
  return content_seen_.load() ? ENOSYS : 0;
}

int FuseFs::ioctl(fuse_ino_t ino) {
  count_request(ino);
  return ENOTTY;
}

int FuseFs::refuse() const { return options_.read_only ? EROFS : EPERM; }

Answer<std::vector<DirEntry>> FuseFs::readdir(fuse_ino_t ino, off_t off) const {
  if (ino != FUSE_ROOT_ID) return Answer<std::vector<DirEntry>>::fail(ENOTDIR);
  // The file's current inode without looking it up: listing must not fetch, nor pin a version.
  ContentPtr current = service_.current();
  const DirEntry all[] = {
      {".", FUSE_ROOT_ID, S_IFDIR, 1},
      {"..", FUSE_ROOT_ID, S_IFDIR, 2},
      {std::string(kStatusName), kStatusIno, S_IFREG, 3},
      {options_.file_name, ino_of(current ? current->version : 1), S_IFREG, 4},
  };
  Answer<std::vector<DirEntry>> a;
  for (off_t i = std::max<off_t>(off, 0); i < static_cast<off_t>(std::size(all)); ++i) a.value.push_back(all[i]);
  return a;
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
  if (notify_cv_.wait_for(lock, limit, [&] { return entry_sent_ >= ticket || notifier_.load() == nullptr; })) {
    return true;
  }
  spdlog::debug("The kernel's directory entry was not dropped within {} ms (the directory is busy); replying "
                "anyway",
                limit.count());
  return false;
}

bool FuseFs::settle_notices(std::chrono::milliseconds limit) {
  std::unique_lock lock(notify_mu_);
  return notify_cv_.wait_for(lock, limit,
                             [&] { return notices_sent_ >= notices_queued_ || notifier_.load() == nullptr; });
}

void FuseFs::attach(KernelNotifier& notifier) {
  notifier_.store(&notifier);
  notifier_thread_ = std::jthread([this](std::stop_token stop) { notifier_loop(stop); });
}

void FuseFs::detach() {
  notifier_thread_.request_stop();
  if (notifier_thread_.joinable()) notifier_thread_.join();
  {
    // Under notify_mu_: a waiter checks notifier_ under it, so it cannot miss this change.
    std::lock_guard lock(notify_mu_);
    notifier_.store(nullptr);
  }
  notify_cv_.notify_all();
  session_notifier_.reset();
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
    KernelNotifier* kernel = notifier_.load();
    if (kernel != nullptr && entry) {
      const int rc = kernel->inval_entry(FUSE_ROOT_ID, options_.file_name);
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
    if (kernel != nullptr && (drop_old || drop_all)) {
      // The version inodes the kernel knows, read now: a version published meanwhile is current.
      std::vector<fuse_ino_t> inodes;
      try {
        ContentPtr current = service_.current();
        std::lock_guard lock(mu_);
        for (const auto& [version, v] : versions_) {
          if (drop_all || !current || version != current->version) inodes.push_back(ino_of(version));
        }
      } catch (const std::exception& e) {
        spdlog::error("Cannot list the version inodes whose cache to drop: {}", e.what());
      }
      for (fuse_ino_t ino : inodes) {
        const int rc = kernel->inval_inode(ino, 0, 0);
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
  return service_.status().dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace irsafs
