// The FUSE adapter without a kernel: each test drives FuseFs's operations the way the kernel's
// requests would (lookup, getattr, open, read, write, flush, forget, ...) over a real
// ConfigService whose fetches the test completes by hand, and checks the answers the wrappers
// would send and the notifications the kernel would get.
#include "fs/fuse_fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fakes.h"

namespace irsafs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::FakeClock;
using testing::FakeRandom;
using testing::ManualLauncher;

constexpr const char* kV1 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n";
constexpr const char* kV2 = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n\n[profile b]\nregion = x\n";
constexpr const char* kV3 = "[profile c]\nregion = y\n";
constexpr fuse_ino_t kV1Ino = FuseFs::kFirstVersionIno + 1;
constexpr fuse_ino_t kV2Ino = FuseFs::kFirstVersionIno + 2;
constexpr fuse_ino_t kV3Ino = FuseFs::kFirstVersionIno + 3;
constexpr std::size_t kAll = 1 << 20;

// The kernel's side of notifications: records them; can act like a busy directory (an entry
// drop that waits until released).
class RecordingKernel final : public KernelNotifier {
 public:
  int inval_entry(fuse_ino_t parent, std::string_view name) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !busy_; });
    seen_.push_back("entry " + std::to_string(parent) + "/" + std::string(name));
    return 0;
  }
  int inval_inode(fuse_ino_t ino, off_t off, off_t len) override {
    std::lock_guard lock(mu_);
    seen_.push_back("inode " + std::to_string(ino) + " " + std::to_string(off) + "+" + std::to_string(len));
    return 0;
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  void set_busy(bool busy) {
    {
      std::lock_guard lock(mu_);
      busy_ = busy;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
  std::vector<std::string> seen_;
};

using Seen = std::vector<std::string>;

class AdapterTest : public ::testing::Test {
 protected:
  AdapterTest() { make({}); }
  ~AdapterTest() override {
    kernel.set_busy(false);
    fs.reset();
  }

  void make(FsOptions fo) {
    fs.reset();
    svc.reset();
    ServiceOptions so;
    so.read_deadline = seconds(10);
    so.write_quiet = milliseconds(100);
    so.writable = !fo.read_only;
    svc = std::make_unique<ConfigService>(so, launcher, clock, random);
    fs = std::make_unique<FuseFs>(*svc, fo);  // registers itself as the service's listener
    fs->attach(kernel);
  }

  fuse_ino_t lookup_file() {
    const auto e = fs->lookup(FUSE_ROOT_ID, "config");
    EXPECT_TRUE(e.ok());
    return e.value.ino;
  }

  // An OPEN from a reader; a parked one's later answer lands in `later`.
  std::optional<OpenReply> open_reader(fuse_ino_t ino, std::vector<OpenReply>* later = nullptr,
                                       WaiterId* id = nullptr) {
    return fs->open(
        ino, O_RDONLY,
        [later](const OpenReply& r) {
          ASSERT_NE(later, nullptr) << "answered later, but the test expected an answer at once";
          later->push_back(r);
        },
        [id](WaiterId w) {
          if (id != nullptr) *id = w;
        });
  }

  std::string read_all(fuse_ino_t ino, off_t off = 0, std::uint64_t fh = 0) {
    const auto r = fs->read(ino, kAll, off, fh);
    EXPECT_TRUE(r.ok()) << "errno " << r.error;
    return std::string(r.value.bytes());
  }

  // The mount's first read: lookup, an open parked until the fetch of `text` completes.
  void serve_first(const char* text) {
    ASSERT_EQ(lookup_file(), kV1Ino);
    std::vector<OpenReply> later;
    ASSERT_FALSE(open_reader(kV1Ino, &later));
    launcher.succeed(text);
    ASSERT_EQ(later.size(), 1u);
    ASSERT_EQ(later[0].error, ENOSYS);
  }

  // A refresh (SIGHUP) that fetches `text`.
  void refresh_to(const char* text) {
    svc->refresh_now();
    ASSERT_EQ(launcher.pending.size(), 1u);
    launcher.succeed(text);
  }

  // The notifications sent once the notifier has caught up.
  Seen notices() {
    EXPECT_TRUE(fs->settle_notices(seconds(10)));
    return kernel.seen();
  }

  nlohmann::json status_json(const std::string& text) { return nlohmann::json::parse(text); }

  std::uint64_t fuse_requests() {
    const auto a = fs->open(FuseFs::kStatusIno, O_RDONLY, [](const OpenReply&) {});
    EXPECT_TRUE(a && a->error == 0);
    const std::string text = read_all(FuseFs::kStatusIno, 0, a->fh);
    fs->release(FuseFs::kStatusIno, a->fh);
    return status_json(text)["fuse_requests"].get<std::uint64_t>();
  }

  FakeClock clock;
  FakeRandom random{0.0};
  ManualLauncher launcher;
  RecordingKernel kernel;
  std::unique_ptr<ConfigService> svc;
  std::unique_ptr<FuseFs> fs;
};

// Before any content the file is version 1's inode, size 0, its attributes never cached (the
// kernel asks again before reading); looking it up or stat-ing it fetches nothing.
TEST_F(AdapterTest, BeforeAnyContentTheFileIsVersion1OfSize0WithAttributesNeverCached) {
  const auto e = fs->lookup(FUSE_ROOT_ID, "config");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e.value.ino, kV1Ino);
  EXPECT_EQ(e.value.attr.st_size, 0);
  EXPECT_EQ(e.value.attr_timeout, 0);
  EXPECT_EQ(e.value.entry_timeout, 86400);
  EXPECT_EQ(e.value.attr.st_mode, S_IFREG | 0644);
  const auto a = fs->getattr(kV1Ino);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value.st.st_size, 0);
  EXPECT_EQ(a.value.timeout, 0);
  EXPECT_TRUE(launcher.pending.empty());

  const auto status = fs->lookup(FUSE_ROOT_ID, ".status");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status.value.ino, FuseFs::kStatusIno);
  EXPECT_EQ(status.value.attr_timeout, 0);
  EXPECT_GT(status.value.attr.st_size, 0);
  EXPECT_EQ(status.value.attr.st_size % 4096, 0);

  const auto missing = fs->lookup(FUSE_ROOT_ID, "credentials");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing.value.ino, 0u);  // a negative entry, cached like the others
  EXPECT_EQ(missing.value.entry_timeout, 86400);
  EXPECT_EQ(fs->lookup(kV1Ino, "config").error, ENOENT);
  EXPECT_EQ(fs->getattr(5).error, ENOENT);
  EXPECT_TRUE(launcher.pending.empty());
}

// The first open waits without a thread: parked, answered by the fetch's completion with
// ENOSYS ("no open needed"); from then on opens are answered at once, FLUSH stops too, and the
// attributes carry the real size and are cached.
TEST_F(AdapterTest, AParkedOpenIsAnsweredWhenTheFetchCompletes) {
  ASSERT_EQ(lookup_file(), kV1Ino);
  std::vector<OpenReply> later;
  WaiterId id = 0;
  EXPECT_FALSE(open_reader(kV1Ino, &later, &id));
  EXPECT_NE(id, 0u);
  EXPECT_TRUE(later.empty());
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(fs->flush(kV1Ino, 7), 0);  // no reader has content yet: FLUSH must keep coming
  launcher.succeed(kV1);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].error, ENOSYS);

  const auto a = fs->getattr(kV1Ino);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value.st.st_size, static_cast<off_t>(std::strlen(kV1)));
  EXPECT_EQ(a.value.timeout, 86400);
  const auto now = open_reader(kV1Ino);
  ASSERT_TRUE(now);
  EXPECT_EQ(now->error, ENOSYS);
  EXPECT_EQ(fs->flush(kV1Ino, 7), ENOSYS);
  EXPECT_EQ(read_all(kV1Ino), kV1);
  // The first version is no replacement: the kernel is told nothing.
  EXPECT_EQ(notices(), Seen{});
}

TEST_F(AdapterTest, AFailedFetchAnswersEIOAndAnInterruptedReaderIsAnsweredOnlyOnce) {
  lookup_file();
  std::vector<OpenReply> first, second;
  WaiterId id1 = 0, id2 = 0;
  EXPECT_FALSE(open_reader(kV1Ino, &first, &id1));
  EXPECT_FALSE(open_reader(kV1Ino, &second, &id2));
  EXPECT_NE(id1, id2);
  EXPECT_TRUE(fs->interrupt(id1));   // the wrapper then replies EINTR
  EXPECT_FALSE(fs->interrupt(id1));  // never twice
  launcher.fail("HTTP 500");
  EXPECT_TRUE(first.empty());
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].error, EIO);
  EXPECT_FALSE(fs->interrupt(id2));  // already answered
  EXPECT_EQ(fs->read(kV1Ino, 10, 0, 0).error, EIO);  // no content for that version
}

TEST_F(AdapterTest, ReadsAtOffsetsGetThoseBytes) {
  serve_first(kV1);
  const std::string v1 = kV1;
  const auto head = fs->read(kV1Ino, 5, 0, 0);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head.value.bytes(), v1.substr(0, 5));
  EXPECT_EQ(read_all(kV1Ino, 10), v1.substr(10));
  EXPECT_EQ(fs->read(kV1Ino, 7, 12, 0).value.bytes(), v1.substr(12, 7));
  EXPECT_EQ(read_all(kV1Ino, static_cast<off_t>(v1.size())), "");
  EXPECT_EQ(read_all(kV1Ino, static_cast<off_t>(v1.size()) + 100), "");
  EXPECT_EQ(fs->read(FuseFs::ino_of(9), 10, 0, 0).error, EIO);  // a version never published
}

// .status opened with direct_io: each handle keeps the rendering it got at open (renewed only
// by a read at offset 0), so a reader reading in pieces gets one document whatever happens.
TEST_F(AdapterTest, EachStatusHandleReadsOneRenderingInPieces) {
  const auto h1 = fs->open(FuseFs::kStatusIno, O_RDONLY, [](const OpenReply&) {});
  ASSERT_TRUE(h1);
  ASSERT_EQ(h1->error, 0);
  EXPECT_TRUE(h1->direct_io);
  const auto piece = fs->read(FuseFs::kStatusIno, 20, 0, h1->fh);
  ASSERT_TRUE(piece.ok());
  const std::string start(piece.value.bytes());
  EXPECT_EQ(start.size(), 20u);

  // The state changes meanwhile: a fetch starts, requests are counted.
  lookup_file();
  EXPECT_FALSE(open_reader(kV1Ino, nullptr));
  const auto h2 = fs->open(FuseFs::kStatusIno, O_RDONLY, [](const OpenReply&) {});
  ASSERT_TRUE(h2 && h2->error == 0);
  EXPECT_NE(h2->fh, h1->fh);

  const nlohmann::json old = status_json(start + read_all(FuseFs::kStatusIno, 20, h1->fh));
  EXPECT_EQ(old["state"], "empty");
  EXPECT_EQ(old["fuse_requests"], 0);
  const nlohmann::json fresh = status_json(read_all(FuseFs::kStatusIno, 0, h2->fh));
  EXPECT_EQ(fresh["state"], "fetching");
  EXPECT_EQ(fresh["fuse_requests"], 2);  // the lookup and the open
  EXPECT_EQ(fresh["file"], "config");
  // A read from the start renders afresh.
  EXPECT_EQ(status_json(read_all(FuseFs::kStatusIno, 0, h1->fh))["state"], "fetching");

  // Released: the handle's rendering is gone; a read then gets the page-cache form.
  fs->release(FuseFs::kStatusIno, h1->fh);
  const std::string page = read_all(FuseFs::kStatusIno, 0, h1->fh);
  EXPECT_EQ(page.size() % 4096, 0u);
  EXPECT_EQ(status_json(page)["state"], "fetching");

  const auto w = fs->open(FuseFs::kStatusIno, O_WRONLY, [](const OpenReply&) {});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->error, EACCES);
}

// .status through the page cache: one size for every rendering (a multiple of 4096, the size
// GETATTR reports), attributes never cached, and a new mtime exactly when the text changed.
TEST_F(AdapterTest, StatusThroughThePageCacheKeepsItsSizeAndChangesMtimeOnlyWithItsText) {
  const auto a1 = fs->getattr(FuseFs::kStatusIno);
  ASSERT_TRUE(a1.ok());
  EXPECT_EQ(a1.value.timeout, 0);
  const off_t size = a1.value.st.st_size;
  EXPECT_EQ(size % 4096, 0);
  const auto a2 = fs->getattr(FuseFs::kStatusIno);
  EXPECT_EQ(a2.value.st.st_mtim.tv_sec, a1.value.st.st_mtim.tv_sec);
  EXPECT_EQ(a2.value.st.st_mtim.tv_nsec, a1.value.st.st_mtim.tv_nsec);
  const std::string text = read_all(FuseFs::kStatusIno);
  EXPECT_EQ(static_cast<off_t>(text.size()), size);
  EXPECT_EQ(status_json(text)["state"], "empty");

  std::this_thread::sleep_for(milliseconds(2));
  lookup_file();  // fuse_requests changes
  const auto a3 = fs->getattr(FuseFs::kStatusIno);
  EXPECT_EQ(a3.value.st.st_size, size);
  EXPECT_NE(std::make_pair(a3.value.st.st_mtim.tv_sec, a3.value.st.st_mtim.tv_nsec),
            std::make_pair(a1.value.st.st_mtim.tv_sec, a1.value.st.st_mtim.tv_nsec));
  const std::string changed = read_all(FuseFs::kStatusIno);
  EXPECT_EQ(static_cast<off_t>(changed.size()), size);
  EXPECT_EQ(status_json(changed)["fuse_requests"], 1);
}

// A refresh replaces the version the way rename(2) replaces a file: the entry is dropped (only
// it: fetched content went through no page cache), the old inode keeps serving its bytes and
// size to open descriptors, a new lookup finds the new inode.
TEST_F(AdapterTest, AVersionReplacedWhileOpenKeepsServingItsDescriptors) {
  serve_first(kV1);
  refresh_to(kV2);
  EXPECT_EQ(notices(), Seen{"entry 1/config"});
  EXPECT_EQ(read_all(kV1Ino), kV1);
  EXPECT_EQ(fs->getattr(kV1Ino).value.st.st_size, static_cast<off_t>(std::strlen(kV1)));
  EXPECT_EQ(lookup_file(), kV2Ino);
  EXPECT_EQ(read_all(kV2Ino), kV2);
  EXPECT_EQ(fs->getattr(kV2Ino).value.st.st_size, static_cast<off_t>(std::strlen(kV2)));
}

// Version 1's inode was looked up before its content existed; the content listener pins it
// when it is published, so it outlives its replacement.
TEST_F(AdapterTest, Version1LookedUpBeforeItsContentIsPinnedAtPublication) {
  ASSERT_EQ(lookup_file(), kV1Ino);
  svc->prefetch();
  launcher.succeed(kV1);  // no read in between: nothing but the listener pinned it
  refresh_to(kV2);
  EXPECT_EQ(read_all(kV1Ino), kV1);
  EXPECT_EQ(read_all(kV2Ino), kV2);
}

// A version's inode lives while the kernel's lookups of it last: forgetting the last one unpins
// it (EIO after), whichever order the kernel forgets them in; the current version stays
// readable whatever is forgotten.
TEST_F(AdapterTest, VersionsForgottenInAnyOrderAreUnpinnedOnlyAtTheirLastLookup) {
  std::array<fuse_ino_t, 3> order{kV1Ino, kV2Ino, kV3Ino};
  const std::map<fuse_ino_t, std::string> text{{kV1Ino, kV1}, {kV2Ino, kV2}, {kV3Ino, kV3}};
  int rounds = 0;
  do {
    SCOPED_TRACE("forget order " + std::to_string(order[0]) + " " + std::to_string(order[1]) + " " +
                 std::to_string(order[2]));
    launcher.pending.clear();
    make({});
    serve_first(kV1);
    lookup_file();  // version 1: two lookups
    refresh_to(kV2);
    ASSERT_EQ(lookup_file(), kV2Ino);
    refresh_to(kV3);
    ASSERT_EQ(lookup_file(), kV3Ino);
    std::map<fuse_ino_t, std::uint64_t> lookups{{kV1Ino, 2}, {kV2Ino, 1}, {kV3Ino, 1}};
    for (fuse_ino_t ino : order) {
      while (lookups[ino] > 0) {
        fs->forget(ino, 1);
        --lookups[ino];
        for (const auto& [other, n] : lookups) {
          const auto r = fs->read(other, kAll, 0, 0);
          if (n > 0 || other == kV3Ino) {
            ASSERT_TRUE(r.ok()) << "inode " << other;
            EXPECT_EQ(r.value.bytes(), text.at(other));
          } else {
            EXPECT_EQ(r.error, EIO) << "inode " << other << " should be unpinned";
          }
        }
      }
    }
    EXPECT_EQ(lookup_file(), kV3Ino);
    fs->forget(kV3Ino, 100);  // more than it has: clamped
    fs->forget(FuseFs::kStatusIno, 1);
    fs->forget(FuseFs::ino_of(42), 1);
    EXPECT_EQ(read_all(kV3Ino), kV3);
    ++rounds;
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(rounds, 6);
}

// Seeding before any content: the writer's open is direct_io, its truncate is staged, its
// text is served once flushed; nothing is fetched and the kernel is told nothing.
TEST_F(AdapterTest, AWrittenTextIsServedAfterFlushWithoutAnyFetch) {
  ASSERT_EQ(lookup_file(), kV1Ino);
  const auto w = fs->open(kV1Ino, O_WRONLY, [](const OpenReply&) {});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->error, 0);
  EXPECT_TRUE(w->direct_io);
  struct stat trunc{};
  const auto t = fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_SIZE, 7);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value.st.st_size, 0);
  EXPECT_EQ(fs->write(kV1Ino, kV1, 0, 7), 0);
  EXPECT_EQ(fs->flush(kV1Ino, 7), 0);
  EXPECT_EQ(fs->getattr(kV1Ino).value.st.st_size, static_cast<off_t>(std::strlen(kV1)));
  EXPECT_EQ(read_all(kV1Ino), kV1);
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(status_json(read_all(FuseFs::kStatusIno))["source"], "write");
  EXPECT_EQ(notices(), Seen{});
}

// A reader parked for the fetch is answered by the writer's FLUSH that publishes a text.
TEST_F(AdapterTest, AParkedReaderIsAnsweredByAWritersFlush) {
  lookup_file();
  std::vector<OpenReply> later;
  EXPECT_FALSE(open_reader(kV1Ino, &later));
  ASSERT_EQ(launcher.pending.size(), 1u);
  EXPECT_EQ(fs->write(kV1Ino, kV1, 0, 7), 0);
  EXPECT_EQ(fs->flush(kV1Ino, 7), 0);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].error, ENOSYS);
  EXPECT_EQ(read_all(kV1Ino), kV1);
}

// A truncate is staged: the reply keeps the served size, and readers keep the text.
TEST_F(AdapterTest, AStagedTruncateKeepsTheServedSize) {
  serve_first(kV1);
  struct stat trunc{};
  const auto t = fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_SIZE, 7);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value.st.st_size, static_cast<off_t>(std::strlen(kV1)));
  EXPECT_EQ(read_all(kV1Ino), kV1);
  EXPECT_EQ(fs->getattr(kV1Ino).value.st.st_size, static_cast<off_t>(std::strlen(kV1)));
  // Owner and mode belong to --uid/--gid/--mode; the root and .status are not the file.
  EXPECT_EQ(fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_MODE, 7).error, EPERM);
  EXPECT_EQ(fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_UID, 7).error, EPERM);
  EXPECT_EQ(fs->setattr(FUSE_ROOT_ID, trunc, FUSE_SET_ATTR_SIZE, 7).error, EPERM);
  EXPECT_EQ(fs->setattr(FuseFs::kStatusIno, trunc, FUSE_SET_ATTR_SIZE, 7).error, EACCES);
  EXPECT_EQ(notices(), Seen{});
}

// Written bytes that are not published may sit in the page cache readers share: refused with
// EINVAL (at the write, or at the flush), and every version inode's pages are dropped.
TEST_F(AdapterTest, AnInvalidWriteIsEINVALAndDropsThePagesReadersShare) {
  serve_first(kV1);
  EXPECT_EQ(fs->write(kV1Ino, "<!DOCTYPE html>\n", 0, 7), EINVAL);
  EXPECT_EQ(read_all(kV1Ino), kV1);
  EXPECT_EQ(notices(), Seen{"inode 17 0+0"});
  EXPECT_EQ(fs->write(kV1Ino, "[profile a]\njunk", 0, 8), 0);
  EXPECT_EQ(fs->flush(kV1Ino, 8), EINVAL);
  EXPECT_EQ(read_all(kV1Ino), kV1);
  const Seen seen = notices();
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.back(), "inode 17 0+0");
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "entry 1/config"), 0);
}

// A written replacement: the WRITE returns only once the entry was dropped (the writer's next
// open finds its text), and the older version's pages are dropped (the writer wrote through
// them); open descriptors of the old version still read the old bytes from us.
TEST_F(AdapterTest, AWriteThatReplacesTheContentRepliesAfterTheEntryDrop) {
  serve_first(kV1);
  struct stat trunc{};
  ASSERT_TRUE(fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_SIZE, 7).ok());  // O_TRUNC
  EXPECT_EQ(fs->write(kV1Ino, kV2, 0, 7), 0);
  ASSERT_FALSE(kernel.seen().empty());
  EXPECT_EQ(kernel.seen().front(), "entry 1/config");  // no settle: the WRITE waited for it
  EXPECT_EQ(notices(), (Seen{"entry 1/config", "inode 17 0+0"}));
  EXPECT_EQ(lookup_file(), kV2Ino);
  EXPECT_EQ(read_all(kV2Ino), kV2);
  EXPECT_EQ(read_all(kV1Ino), kV1);
}

// No handler waits for the kernel unboundedly: with the directory busy (an rm waiting for this
// very writer), the WRITE is answered after kEntryWait and the entry is dropped later.
TEST_F(AdapterTest, AWriteWaitsForABusyDirectoryOnlyBriefly) {
  serve_first(kV1);
  kernel.set_busy(true);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(fs->write(kV1Ino, kV2, 0, 7), 0);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, FuseFs::kEntryWait);
  EXPECT_LT(waited, seconds(5));
  EXPECT_EQ(kernel.seen(), Seen{});
  kernel.set_busy(false);
  EXPECT_EQ(notices(), (Seen{"entry 1/config", "inode 17 0+0"}));
}

// Once detached (shutdown), nothing reaches the kernel and writers do not wait for it.
TEST_F(AdapterTest, ADetachedAdapterSendsNothingAndWritersDoNotWait) {
  serve_first(kV1);
  kernel.set_busy(true);  // would hold a WRITE for kEntryWait if it were still attached
  fs->detach();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(fs->write(kV1Ino, kV2, 0, 7), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, FuseFs::kEntryWait);
  EXPECT_EQ(read_all(kV1Ino), kV1);
  kernel.set_busy(false);
  EXPECT_EQ(kernel.seen(), Seen{});
}

TEST_F(AdapterTest, AReadOnlyMountRefusesEveryWriteWithEROFS) {
  FsOptions fo;
  fo.read_only = true;
  make(fo);
  serve_first(kV1);
  const auto w = fs->open(kV1Ino, O_WRONLY, [](const OpenReply&) {});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->error, EROFS);
  EXPECT_EQ(fs->write(kV1Ino, kV2, 0, 7), EROFS);
  struct stat trunc{};
  EXPECT_EQ(fs->setattr(kV1Ino, trunc, FUSE_SET_ATTR_SIZE, 7).error, EROFS);
  EXPECT_EQ(fs->refuse(), EROFS);
  EXPECT_EQ(read_all(kV1Ino), kV1);
}

// The directory holds exactly two files: namespace operations are refused (EPERM), the root is
// not a file, .status is not writable, isatty() is answered ENOTTY.
TEST_F(AdapterTest, NamespaceOperationsAndNonFilesAreRefused) {
  EXPECT_EQ(fs->refuse(), EPERM);
  const auto dir = fs->open(FUSE_ROOT_ID, O_RDONLY, [](const OpenReply&) {});
  ASSERT_TRUE(dir);
  EXPECT_EQ(dir->error, EISDIR);
  EXPECT_EQ(fs->write(FuseFs::kStatusIno, "x", 0, 7), EACCES);
  EXPECT_EQ(fs->ioctl(kV1Ino), ENOTTY);
  EXPECT_EQ(fs->readdir(kV1Ino, 0).error, ENOTDIR);
  EXPECT_TRUE(launcher.pending.empty());
}

// Listing the directory names the file's current inode without looking it up: no fetch, no
// request counted.
TEST_F(AdapterTest, ReaddirListsTheCurrentInodeWithoutLookingItUp) {
  const auto all = fs->readdir(FUSE_ROOT_ID, 0);
  ASSERT_TRUE(all.ok());
  std::vector<std::string> names;
  std::vector<fuse_ino_t> inos;
  for (const DirEntry& d : all.value) {
    names.push_back(d.name);
    inos.push_back(d.ino);
  }
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", ".status", "config"}));
  EXPECT_EQ(inos, (std::vector<fuse_ino_t>{FUSE_ROOT_ID, FUSE_ROOT_ID, FuseFs::kStatusIno, kV1Ino}));
  EXPECT_EQ(all.value.back().next, 4);
  EXPECT_EQ(all.value.back().type, static_cast<mode_t>(S_IFREG));
  const auto rest = fs->readdir(FUSE_ROOT_ID, 2);
  ASSERT_EQ(rest.value.size(), 2u);
  EXPECT_EQ(rest.value[0].name, ".status");
  EXPECT_TRUE(fs->readdir(FUSE_ROOT_ID, 4).value.empty());
  EXPECT_TRUE(launcher.pending.empty());
  EXPECT_EQ(fuse_requests(), 0u);

  serve_first(kV1);
  refresh_to(kV2);
  EXPECT_EQ(fs->readdir(FUSE_ROOT_ID, 3).value.at(0).ino, kV2Ino);
}

// fuse_requests counts the requests about the file that reached the daemon; .status, the root
// and listings are not counted.
TEST_F(AdapterTest, OnlyRequestsAboutTheFileAreCounted) {
  fs->getattr(FUSE_ROOT_ID);
  fs->getattr(FuseFs::kStatusIno);
  fs->readdir(FUSE_ROOT_ID, 0);
  fs->lookup(FUSE_ROOT_ID, ".status");
  EXPECT_EQ(fuse_requests(), 0u);
  lookup_file();                     // 1
  fs->getattr(kV1Ino);               // 2
  EXPECT_FALSE(open_reader(kV1Ino, nullptr));  // 3 (parked; never answered in this test)
  fs->ioctl(kV1Ino);                 // 4
  fs->flush(kV1Ino, 7);              // 5
  fs->forget(kV1Ino, 1);             // not a request the daemon answers
  EXPECT_EQ(fuse_requests(), 5u);
}

TEST_F(AdapterTest, InitAsksForNoOpenAndPlainReaddirAndStagedTruncates) {
  fuse_conn_info conn{};
  conn.capable = FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS |
                 FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_WRITEBACK_CACHE;
  conn.want = FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_WRITEBACK_CACHE;
  fs->init(conn);
  EXPECT_TRUE(conn.want & FUSE_CAP_NO_OPEN_SUPPORT);
  EXPECT_TRUE(conn.want & FUSE_CAP_AUTO_INVAL_DATA);
  EXPECT_FALSE(conn.want & FUSE_CAP_READDIRPLUS);
  EXPECT_FALSE(conn.want & FUSE_CAP_READDIRPLUS_AUTO);
  EXPECT_FALSE(conn.want & FUSE_CAP_ATOMIC_O_TRUNC);
  EXPECT_FALSE(conn.want & FUSE_CAP_WRITEBACK_CACHE);
}

}  // namespace
}  // namespace irsafs
