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

#include "common/clock.h"
#include "common/sha256.h"
#include "common/validator.h"
#include "fetcher/result.h"
#include "fetcher/retry.h"

namespace irsafs {

// kPeer: fetched from a serving peer (--peer), which had it from irsa-svc.
enum class ContentSource { kIrsaSvc, kWrite, kPeer };

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
// Chosen by the caller. Callers sharing a service use disjoint ranges: the FUSE adapter counts
// from 1, the peer endpoint from kPeerWaiterIds.
using WaiterId = std::uint64_t;
inline constexpr WaiterId kPeerWaiterIds = WaiterId{1} << 63;

// No content, the last fetch failed, and the next may not start before `remaining` has passed.
struct HoldOff {
  Duration remaining{};
  std::string why;  // the last fetch's error
};

// What a refresh() caller gets (an HTTP /refresh answer is made from it).
struct RefreshResult {
  enum class Kind {
    kOk,            // the fetch succeeded: version/bytes/sha256 are the content served now
    kFailed,        // the fetch failed (why); the served content (version, 0 if none) is unchanged
    kConflict,      // the mount is seeded by a write (why): irsa-svc is not called (HTTP 409)
    kShuttingDown,  // the daemon stops (why)
  };
  Kind kind = Kind::kFailed;
  std::uint64_t version = 0;  // the version served when the fetch ended (0: none)
  bool changed = false;       // kOk: the fetch published a new version
  std::size_t bytes = 0;      // size of `version`
  std::string sha256;         // of `version` (lower-case hex), empty if none
  std::string why;            // kFailed, kConflict, kShuttingDown: one line, never the content
  bool ok() const { return kind == Kind::kOk; }
};
using RefreshDone = std::function<void(RefreshResult)>;
const char* to_string(RefreshResult::Kind k);

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
  // After n failed fetches in a row, the next one waits min(60 s, 1 s * 2^(n-1)) * U(0.5, 1).
  RetryPolicy hold_off{.base = std::chrono::seconds(1), .growth = 2.0, .cap = std::chrono::seconds(60),
                       .jitter_floor = 0.5};
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
  // Adds fields to status() (called without the service's lock), one function per contributor
  // `owner` (an empty function removes it): the FUSE adapter's file name and request count, and
  // what other components report, so that .status and the HTTP /status are one rendering.
  void set_status_extras(const std::string& owner, std::function<void(nlohmann::ordered_json&)> f);
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
  // Set while no content is known and a failed fetch's hold-off runs: a caller that can tell
  // its client when to come back (the peer endpoint's 503 + Retry-After) need not wait for it.
  std::optional<HoldOff> hold_off() const;
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
  // Fetches again now, like refresh_now(), and calls `done` exactly once, without any lock of
  // the service held (possibly before refresh() returns), when that fetch ends (at the latest
  // read_deadline + 1 s after it started). A fetch already running (a first fetch, a refresh)
  // is joined; a refresh arriving less than kRefreshShare after the last fetch ended, when that
  // was a refresh (SIGHUP, interval, refresh() or joined by one), shares its outcome, with no
  // new fetch. On a mount seeded by a write: kConflict at once, no fetch
  // (also for refreshes pending when a written text is published); after or at shutdown():
  // kShuttingDown.
  void refresh(RefreshDone done);
  static constexpr Duration kRefreshShare = std::chrono::seconds(1);
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
    std::vector<std::pair<RefreshDone, RefreshResult>> refresh_replies;
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
  nlohmann::ordered_json own_status() const;  // status() without the extras
  State state_locked() const;
  bool covered_by_fetch_locked(const Parked& p, TimePoint now) const;
  Duration hold_off_locked();
  RefreshResult served_locked(RefreshResult::Kind kind, std::string why) const;
  void answer_refreshes_locked(const RefreshResult& r, Effects& fx);

  const ServiceOptions options_;
  FetchLauncher& launcher_;
  Clock& clock_;
  Random& random_;
  std::function<void(const ContentPtr&, const ContentPtr&)> on_content_;
  std::function<void()> wake_;
  std::map<std::string, std::function<void(nlohmann::ordered_json&)>> status_extras_;  // guarded by mu_
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
  std::vector<RefreshDone> refreshes_pending_;  // guarded by mu_: refresh() callers of the running fetch
  // The running fetch is a refresh: started by refresh(), refresh_now() or the interval, or
  // joined by one of them.
  bool refresh_fetch_ = false;
  // The outcome of the last fetch that ended if it was a refresh, and when it ended (a fetch of
  // another kind ending clears it).
  std::optional<RefreshResult> last_outcome_;
  TimePoint last_outcome_at_{};
  // Counters and history for status().
  std::uint64_t fetches_ = 0, fetch_failures_ = 0, requests_ = 0, token_requests_ = 0, peer_requests_ = 0;
  std::uint64_t writes_committed_ = 0, writes_rejected_ = 0;
  std::uint64_t fetch_successes_ = 0;
  std::uint64_t refreshes_signal_ = 0, refreshes_http_ = 0, refreshes_interval_ = 0;  // requested, by trigger
  std::string last_error_;
  std::optional<WallTime> last_error_at_;
  std::optional<WallTime> last_success_at_;
  Duration last_fetch_duration_{};
  TimePoint fetch_started_{};
  WallTime started_wall_;
};

}  // namespace irsafs
