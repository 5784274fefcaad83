// The libfuse side of the adapter: the operations table, one wrapper per operation that asks
// FuseFs for the answer (fs/fuse_fs.cc) and sends exactly one reply, and the session's
// KernelNotifier. No exception crosses into libfuse. See fs/fuse_fs.h and docs/THREADING.md.
#include <spdlog/spdlog.h>

#include <cerrno>
#include <exception>
#include <memory>
#include <string>

#include "fs/fuse_fs.h"

namespace irsafs {
namespace {

FuseFs& fs_of(fuse_req_t req) { return *static_cast<FuseFs*>(fuse_req_userdata(req)); }

// The writer as the kernel names it: the calling thread's id in our PID namespace (0 outside).
std::uint64_t writer_of(fuse_req_t req) { return static_cast<std::uint64_t>(fuse_req_ctx(req)->pid); }

// Every answer is computed before any reply is sent, so an exception means no reply yet: one
// place maps it to EIO.
template <typename F>
void guarded(fuse_req_t req, const char* op, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("Cannot complete {}: {}", op, e.what());
    fuse_reply_err(req, EIO);
  }
}

void reply_attr(fuse_req_t req, const Answer<Attr>& a) {
  if (!a.ok()) {
    fuse_reply_err(req, a.error);
  } else {
    fuse_reply_attr(req, &a.value.st, a.value.timeout);
  }
}

// An OPEN's answer; `fi` is the request's, or a copy of it for a parked reader (the kernel's
// fuse_file_info lives only as long as the handler).
void reply_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, const OpenReply& r) {
  if (r.error != 0) {
    fuse_reply_err(req, r.error);
    return;
  }
  fi->fh = r.fh;
  if (r.direct_io) fi->direct_io = 1;
  // The handle is gone if the opener is (interrupted meanwhile): free its .status rendering.
  if (fuse_reply_open(req, fi) != 0) fs_of(req).release(ino, r.fh);
}

class SessionNotifier final : public KernelNotifier {
 public:
  explicit SessionNotifier(fuse_session* se) : se_(se) {}
  int inval_entry(fuse_ino_t parent, std::string_view name) override {
    const std::string n(name);  // NUL-terminated for libfuse
    return fuse_lowlevel_notify_inval_entry(se_, parent, n.c_str(), n.size());
  }
  int inval_inode(fuse_ino_t ino, off_t off, off_t len) override {
    return fuse_lowlevel_notify_inval_inode(se_, ino, off, len);
  }

 private:
  fuse_session* se_;
};

}  // namespace

// The static wrappers of the operations table.
struct Ops {
  static void init(void* userdata, fuse_conn_info* conn) { static_cast<FuseFs*>(userdata)->init(*conn); }

  static void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, "lookup", [&] {
      FuseFs& fs = fs_of(req);
      const Answer<fuse_entry_param> a = fs.lookup(parent, name);
      if (!a.ok()) {
        fuse_reply_err(req, a.error);
      } else if (fuse_reply_entry(req, &a.value) != 0 && FuseFs::is_version(a.value.ino)) {
        fs.forget(a.value.ino, 1);  // the kernel never got the entry: it will never forget it
      }
    });
  }
  static void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    fs_of(req).forget(ino, nlookup);
    fuse_reply_none(req);
  }
  static void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  }
  static void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, "getattr", [&] { reply_attr(req, fs_of(req).getattr(ino)); });
  }
  static void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
    guarded(req, "setattr", [&] { reply_attr(req, fs_of(req).setattr(ino, *attr, to_set, writer_of(req))); });
  }
  static void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "open", [&] {
      FuseFs& fs = fs_of(req);
      // A parked reader is answered from another thread, after this handler returned.
      auto later = [req, ino, copy = *fi](const OpenReply& r) mutable { reply_open(req, ino, &copy, r); };
      // Register for interrupts before parking: the request may be answered (and freed) by
      // another thread as soon as it is parked. The waiter id, not a pointer, is the callback's
      // data: no lifetime to get wrong.
      auto before_wait = [req](WaiterId id) {
        fuse_req_interrupt_func(
            req,
            [](fuse_req_t r, void* data) {
              if (fs_of(r).interrupt(reinterpret_cast<WaiterId>(data))) {
                spdlog::debug("A waiting reader was interrupted");
                fuse_reply_err(r, EINTR);
              }
            },
            reinterpret_cast<void*>(id));
      };
      if (auto now = fs.open(ino, fi->flags, std::move(later), before_wait)) reply_open(req, ino, fi, *now);
    });
  }
  static void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, "read", [&] {
      const Answer<ReadData> a = fs_of(req).read(ino, size, off, fi->fh);
      if (!a.ok()) {
        fuse_reply_err(req, a.error);
        return;
      }
      const std::string_view bytes = a.value.bytes();
      fuse_reply_buf(req, bytes.data(), bytes.size());
    });
  }
  static void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
    guarded(req, "write", [&] {
      const int rc = fs_of(req).write(ino, std::string_view(buf, size), off, writer_of(req));
      if (rc != 0) {
        fuse_reply_err(req, rc);
      } else {
        fuse_reply_write(req, size);
      }
    });
  }
  static void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, "flush", [&] { fuse_reply_err(req, fs_of(req).flush(ino, writer_of(req))); });
  }
  static void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, "release", [&] {
      fs_of(req).release(ino, fi->fh);
      fuse_reply_err(req, 0);
    });
  }
  // The directory holds exactly two files: nothing is created, removed or renamed. Answered at
  // once (ENOSYS would read "Function not implemented").
  static void refuse(fuse_req_t req) { fuse_reply_err(req, fs_of(req).refuse()); }
  static void mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { refuse(req); }
  static void mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { refuse(req); }
  static void unlink(fuse_req_t req, fuse_ino_t, const char*) { refuse(req); }
  static void rmdir(fuse_req_t req, fuse_ino_t, const char*) { refuse(req); }
  static void symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { refuse(req); }
  static void rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) { refuse(req); }
  static void link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { refuse(req); }
  static void create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { refuse(req); }
  // Python's open() asks isatty() on every open: the kernel sends FUSE_IOCTL each time (it does
  // not remember the answer). Answered here only to be counted with the file's requests.
  static void ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int, void*, fuse_file_info*, unsigned, const void*,
                    size_t, size_t) {
    fuse_reply_err(req, fs_of(req).ioctl(ino));
  }
  static void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    guarded(req, "readdir", [&] {
      const Answer<std::vector<DirEntry>> a = fs_of(req).readdir(ino, off);
      if (!a.ok()) {
        fuse_reply_err(req, a.error);
        return;
      }
      std::string buf(size, '\0');
      size_t used = 0;
      for (const DirEntry& d : a.value) {
        struct stat st{};
        st.st_ino = d.ino;
        st.st_mode = d.type;
        const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, d.name.c_str(), &st, d.next);
        if (n > size - used) break;
        used += n;
      }
      fuse_reply_buf(req, buf.data(), used);
    });
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

void FuseFs::attach(fuse_session* session) {
  session_notifier_ = std::make_unique<SessionNotifier>(session);
  attach(*session_notifier_);
}

}  // namespace irsafs
