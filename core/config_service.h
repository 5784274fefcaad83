// The state machine behind the mounted file: which content readers get, when to fetch, who
// waits, refresh, and seeding by write. No FUSE and no curl in here: fetches go through a
// FetchLauncher, time through a Clock, so every behaviour is unit-tested with fakes.
//
// Threading: one mutex (mu_) guards all state. Callbacks (waiter replies, the content-change
// listener, the launcher, the wake hook) are always invoked after mu_ is released, so they
// may call back into the service.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fetcher/clock.h"
#include "fetcher/fetcher.h"
#include "fetcher/validator.h"

namespace irsafs {

enum class ContentSource { kIrsaSvc, kWrite };

// One version of the file. Immutable once published; shared with readers.
struct Content {
  std::uint64_t version = 0;  // 1, 2, ... in publication order
  std::string bytes;
  std::string sha256;  // lower-case hex
  ContentSource source = ContentSource::kIrsaSvc;
  WallTime obtained_at{};
};
using ContentPtr = std::shared_ptr<const Content>;

enum class State { kEmpty, kFetching, kReady, kError };
const char* to_string(State s);
const char* to_string(ContentSource s);

// What a reader gets: the content, or an errno with the reason.
struct ReadOutcome {
  ContentPtr content;
  int error = 0;
  std::string why;
};
using Waiter = std::function<void(const ReadOutcome&)>;
using WaiterId = std::uint64_t;

// Starts fetches. `done` must be called exactly once, from any thread, with no lock of the
// caller's held.
class FetchLauncher {
 public:
  virtual ~FetchLauncher() = default;
  virtual void launch(std::function<void(FetchResult)> done) = 0;
  // Cancels the fetches launched so far: no further attempt or backoff sleep (a request on the
  // wire may be cut short, or finish); each `done` is still called once, then with a cancelled
  // result unless the fetch ended first. Called with no lock of the caller's held.
  virtual void cancel() = 0;
};

struct ServiceOptions {
  Duration read_deadline = std::chrono::seconds(60);  // no reader waits longer
  Duration refresh_interval = Duration::zero();       // zero: never
  // After a failed fetch, the next one waits base * 2^(n-1) (capped) scaled by U(0.5, 1).
  Duration hold_off_base = std::chrono::seconds(1);
  Duration hold_off_cap = std::chrono::seconds(60);
  // A write session with no write for this long is complete (once FLUSH no longer comes).
  // Long enough that a writer pausing between two write()s is not cut in two.
  Duration write_quiet = std::chrono::seconds(1);
  bool writable = true;  // seeding by write allowed
};

class ConfigService {
 public:
  ConfigService(ServiceOptions options, FetchLauncher& launcher, Clock& clock, Random& random);
  ~ConfigService();
  ConfigService(const ConfigService&) = delete;
  ConfigService& operator=(const ConfigService&) = delete;

  // Called (without locks) after a new version is published; `before` may be null.
  void set_content_listener(std::function<void(const ContentPtr& now, const ContentPtr& before)> f);
  // Called (without locks) when next_wakeup() may have moved earlier.
  void set_wake_hook(std::function<void()> f);
  // Called (without locks) when written bytes were not published (a refused write, a rejected
  // or superseded session): the kernel's page cache may hold them.
  void set_discard_listener(std::function<void()> f);

  // --- readers -------------------------------------------------------------------------
  // The content at once when known (then `waiter` is dropped), or nullopt after parking
  // `waiter` under `id`; a parked waiter is called exactly once, unless cancel() takes it back.
  // May start a fetch.
  std::optional<ReadOutcome> read(WaiterId id, Waiter waiter);
  // Takes back a parked waiter (an interrupted reader). True if it was still parked; the
  // caller then owns the reply.
  bool cancel(WaiterId id);
  ContentPtr current() const;
  // Version `version` if it is current or still held anywhere (e.g. by a listener call in
  // progress, between its publication and the adapter's pin), else null.
  ContentPtr find(std::uint64_t version) const;

  // --- writers (seeding) -----------------------------------------------------------------
  // Writers are told apart by `writer` (the kernel's thread id of the caller). A session starts
  // with a truncate to 0 or a write at offset 0, collects writes by offset, and is committed by
  // flush(), or when no write came for write_quiet. Returns 0 or an errno.
  int truncate(std::uint64_t writer, std::uint64_t size);
  int write(std::uint64_t writer, std::uint64_t offset, std::string_view data);
  // Commits the writer's session now: 0, or EINVAL when its text is invalid (the content is
  // left unchanged). nullopt when the writer has no session.
  std::optional<int> flush(std::uint64_t writer);

  // --- control ---------------------------------------------------------------------------
  void prefetch();      // fetch now unless content is known or a fetch runs
  void refresh_now();   // SIGHUP
  void tick();          // run what is due: deadlines, hold-off ends, refreshes, quiet writes
  std::optional<TimePoint> next_wakeup() const;
  void shutdown();      // fail waiters with EIO, start no more fetches
  nlohmann::ordered_json status() const;

 private:
  struct Parked {
    Waiter waiter;
    TimePoint deadline;
  };
  struct Session {
    explicit Session(std::string initial) : text(std::move(initial)) {}
    std::string text;
    TimePoint last_write{};
    bool wrote = false;  // a write came (a session may be a truncate alone: O_TRUNC)
    // Judges the text as it grows, so a text written in many pieces is validated in O(size).
    ConfigChecker checker;
    // Whether `text` is a prefix of the content of version prefix_version, checked through
    // prefix_checked bytes (0: not known).
    std::uint64_t prefix_version = 0;
    std::size_t prefix_checked = 0;
    bool is_prefix = false;
    std::size_t published_bytes = 0;  // the size of this session's last early publication
  };
  // Work decided under the lock, done after it is released.
  struct Effects {
    std::vector<std::pair<Waiter, ReadOutcome>> replies;
    bool launch = false;
    bool cancel_fetch = false;  // a written text made the running fetch useless
    bool wake = false;
    bool discarded = false;  // written bytes were not published
    ContentPtr published;
    ContentPtr replaced;
  };

  void run(Effects& fx);
  void on_fetch_done(FetchResult result);
  void maybe_start_fetch_locked(Effects& fx);
  void start_fetch_locked(Effects& fx);
  void publish_locked(std::string bytes, ContentSource source, Effects& fx);
  void publish_written_locked(std::string text, Effects& fx);
  void fail_waiters_locked(int error, const std::string& why, Effects& fx);
  int commit_locked(std::uint64_t writer, Effects& fx);
  bool prefix_of_content_locked(Session& s) const;
  State state_locked() const;
  bool covered_by_fetch_locked(const Parked& p, TimePoint now) const;
  Duration hold_off_locked();

  const ServiceOptions options_;
  FetchLauncher& launcher_;
  Clock& clock_;
  Random& random_;
  std::function<void(const ContentPtr&, const ContentPtr&)> on_content_;
  std::function<void()> wake_;
  std::function<void()> on_discard_;

  mutable std::mutex mu_;
  ContentPtr content_;                 // guarded by mu_
  std::map<std::uint64_t, std::weak_ptr<const Content>> published_;  // guarded by mu_: for find()
  TimePoint published_at_{};           // guarded by mu_: when content_ was published
  std::uint64_t next_version_ = 1;     // guarded by mu_
  bool fetching_ = false;              // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  std::map<WaiterId, Parked> waiters_;            // guarded by mu_
  std::map<std::uint64_t, Session> sessions_;     // guarded by mu_
  std::optional<TimePoint> hold_until_;           // no fetch before this (after a failure)
  std::optional<TimePoint> next_refresh_;
  int consecutive_failures_ = 0;
  // Counters and history for status().
  std::uint64_t fetches_ = 0, fetch_failures_ = 0, requests_ = 0, token_requests_ = 0;
  std::uint64_t writes_committed_ = 0, writes_rejected_ = 0;
  std::string last_error_;
  std::optional<WallTime> last_error_at_;
  std::optional<WallTime> last_success_at_;
  Duration last_fetch_duration_{};
  TimePoint fetch_started_{};
  WallTime started_wall_;
};

std::string sha256_hex(std::string_view data);

}  // namespace irsafs
