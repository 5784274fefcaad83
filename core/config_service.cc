#include "core/config_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "common/text.h"
#include "common/validator.h"

namespace irsafs {
namespace {

// How long past its deadline a running fetch may take to report before its readers time out.
constexpr Duration kFetchGrace = std::chrono::seconds(1);

double millis(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

const char* to_string(State s) {
  switch (s) {
    case State::kEmpty: return "empty";
    case State::kFetching: return "fetching";
    case State::kReady: return "ready";
    case State::kError: return "error";
  }
  return "?";
}

const char* to_string(ContentSource s) {
  switch (s) {
    case ContentSource::kIrsaSvc: return "irsa-svc";
    case ContentSource::kWrite: return "write";
    case ContentSource::kPeer: return "peer";
  }
  return "?";
}

const char* to_string(RefreshResult::Kind k) {
  switch (k) {
    case RefreshResult::Kind::kOk: return "ok";
    case RefreshResult::Kind::kFailed: return "failed";
    case RefreshResult::Kind::kConflict: return "conflict";
    case RefreshResult::Kind::kShuttingDown: return "shutting_down";
  }
  return "?";
}

ConfigService::ConfigService(ServiceOptions options, FetchLauncher& launcher, Clock& clock, Random& random)
    : options_(options), launcher_(launcher), clock_(clock), random_(random), started_wall_(clock.wall_now()) {}

ConfigService::~ConfigService() = default;

void ConfigService::set_content_listener(std::function<void(const ContentPtr&, const ContentPtr&)> f) {
  std::lock_guard lock(mu_);
  on_content_ = std::move(f);
}

void ConfigService::set_status_extras(const std::string& owner, std::function<void(nlohmann::ordered_json&)> f) {
  std::lock_guard lock(mu_);
  if (f) {
    status_extras_[owner] = std::move(f);
  } else {
    status_extras_.erase(owner);
  }
}

void ConfigService::set_wake_hook(std::function<void()> f) {
  std::lock_guard lock(mu_);
  wake_ = std::move(f);
}

void ConfigService::set_discard_listener(std::function<void()> f) {
  std::lock_guard lock(mu_);
  on_discard_ = std::move(f);
}

void ConfigService::run(Effects& fx) {
  // Order matters: the adapter must learn of a new version (and tell the kernel) before
  // readers parked for it are answered.
  std::function<void(const ContentPtr&, const ContentPtr&)> on_content;
  std::function<void()> wake;
  std::function<void()> on_discard;
  {
    std::lock_guard lock(mu_);
    on_content = on_content_;
    wake = wake_;
    on_discard = on_discard_;
  }
  if (fx.published && on_content) on_content(fx.published, fx.replaced);
  if (fx.discarded && on_discard) on_discard();
  for (auto& [waiter, outcome] : fx.replies) waiter(outcome);
  for (auto& [done, outcome] : fx.refresh_replies) done(std::move(outcome));
  if (fx.cancel_fetch) launcher_.cancel();
  if (fx.launch) {
    launcher_.launch([this](FetchResult r) { on_fetch_done(std::move(r)); });
  }
  if (fx.wake && wake) wake();
}

std::optional<ReadOutcome> ConfigService::read(WaiterId id, Waiter waiter) {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    if (content_) return ReadOutcome{content_, 0, {}};
    if (stopping_) return ReadOutcome{nullptr, EIO, "irsafs is shutting down"};
    waiters_.emplace(id, Parked{std::move(waiter), clock_.now() + options_.read_deadline});
    maybe_start_fetch_locked(fx);
    fx.wake = true;
  }
  try {
    run(fx);
  } catch (const std::exception& e) {
    // The waiter is parked: whoever settles it (at the latest its deadline) replies; the caller
    // must not, or the request would be answered twice.
    spdlog::error("Cannot start the fetch for a waiting reader: {}", e.what());
  }
  return std::nullopt;
}

std::optional<HoldOff> ConfigService::hold_off() const {
  std::lock_guard lock(mu_);
  const TimePoint now = clock_.now();
  if (content_ || fetching_ || !hold_until_ || *hold_until_ <= now) return std::nullopt;
  return HoldOff{*hold_until_ - now, last_error_};
}

bool ConfigService::cancel(WaiterId id) {
  std::lock_guard lock(mu_);
  return waiters_.erase(id) > 0;
}

ContentPtr ConfigService::current() const {
  std::lock_guard lock(mu_);
  return content_;
}

ContentPtr ConfigService::find(std::uint64_t version) const {
  std::lock_guard lock(mu_);
  if (content_ && content_->version == version) return content_;
  auto it = published_.find(version);
  return it == published_.end() ? nullptr : it->second.lock();
}

void ConfigService::maybe_start_fetch_locked(Effects& fx) {
  if (content_ || fetching_ || stopping_ || waiters_.empty() || !sessions_.empty()) return;
  if (hold_until_ && clock_.now() < *hold_until_) return;  // tick() starts it when due
  start_fetch_locked(fx);
}

void ConfigService::start_fetch_locked(Effects& fx) {
  fetching_ = true;
  refresh_fetch_ = false;
  fetch_started_ = clock_.now();
  ++fetches_;
  fx.launch = true;
}

Duration ConfigService::hold_off_locked() { return options_.hold_off.backoff(consecutive_failures_, random_); }

void ConfigService::publish_locked(std::string bytes, ContentSource source, Effects& fx) {
  auto next = std::make_shared<Content>();
  next->version = next_version_++;
  next->sha256 = sha256_hex(bytes);
  next->bytes = std::move(bytes);
  next->source = source;
  next->obtained_at = clock_.wall_now();
  fx.replaced = content_;
  content_ = next;
  std::erase_if(published_, [](const auto& p) { return p.second.expired(); });
  published_.emplace(next->version, next);
  published_at_ = clock_.now();
  fx.published = next;
  for (auto& [id, parked] : waiters_) fx.replies.emplace_back(std::move(parked.waiter), ReadOutcome{next, 0, {}});
  waiters_.clear();
}

RefreshResult ConfigService::served_locked(RefreshResult::Kind kind, std::string why) const {
  RefreshResult r;
  r.kind = kind;
  r.why = std::move(why);
  if (content_) {
    r.version = content_->version;
    r.bytes = content_->bytes.size();
    r.sha256 = content_->sha256;
  }
  return r;
}

void ConfigService::answer_refreshes_locked(const RefreshResult& r, Effects& fx) {
  for (auto& done : refreshes_pending_) fx.refresh_replies.emplace_back(std::move(done), r);
  refreshes_pending_.clear();
}

namespace {
constexpr const char* kSeeded = "the mount is seeded by a write: irsa-svc is not called for it";
}  // namespace

void ConfigService::fail_waiters_locked(int error, const std::string& why, Effects& fx) {
  for (auto& [id, parked] : waiters_) fx.replies.emplace_back(std::move(parked.waiter), ReadOutcome{nullptr, error, why});
  waiters_.clear();
}

void ConfigService::on_fetch_done(FetchResult result) {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    fetching_ = false;
    requests_ += static_cast<std::uint64_t>(result.requests);
    token_requests_ += static_cast<std::uint64_t>(result.token_requests);
    peer_requests_ += static_cast<std::uint64_t>(result.peer_requests);
    last_fetch_duration_ = clock_.now() - fetch_started_;
    const bool refresh = content_ != nullptr;
    RefreshResult outcome;  // for refresh() callers
    if (result.ok) ++fetch_successes_;
    if (content_ && content_->source == ContentSource::kWrite) {
      outcome = served_locked(RefreshResult::Kind::kConflict, kSeeded);
      // The fetch was running when a written text was published (and was cancelled then):
      // whatever its outcome, irsa-svc is not called again for this mount.
      if (result.ok) {
        last_success_at_ = clock_.wall_now();
        spdlog::info("Fetched the AWS config in {} but discarded it: the content was written meanwhile",
                     format_seconds(result.elapsed));
      } else {
        spdlog::info("The fetch running when the content was written ended ({}) after {} request(s) in {}; "
                     "irsa-svc is not called again",
                     result.cancelled ? std::string("cancelled") : printable(result.error), result.requests,
                     format_seconds(result.elapsed));
      }
      consecutive_failures_ = 0;
      hold_until_.reset();
      next_refresh_.reset();
    } else if (result.ok) {
      consecutive_failures_ = 0;
      hold_until_.reset();
      last_success_at_ = clock_.wall_now();
      bool changed = false;
      // Requests to irsa-svc, or to the serving peer (--peer).
      const bool peer = result.origin == FetchOrigin::kPeer;
      const int made = result.requests + result.peer_requests;
      if (content_ && content_->bytes == result.content) {
        spdlog::info("Refreshed the AWS config{} in {} with {} request(s): unchanged ({} bytes)",
                     peer ? " from the peer" : "", format_seconds(result.elapsed), made, content_->bytes.size());
      } else {
        spdlog::info("{} the AWS config{} in {} with {} request(s): {} bytes", refresh ? "Refreshed" : "Fetched",
                     peer ? " from the peer" : "", format_seconds(result.elapsed), made, result.content.size());
        publish_locked(std::move(result.content),
                       result.origin == FetchOrigin::kPeer ? ContentSource::kPeer : ContentSource::kIrsaSvc, fx);
        changed = true;
      }
      outcome = served_locked(RefreshResult::Kind::kOk, {});
      outcome.changed = changed;
      if (options_.refresh_interval > Duration::zero() && content_->source != ContentSource::kWrite) {
        next_refresh_ = clock_.now() + options_.refresh_interval;
      }
    } else {
      ++fetch_failures_;
      ++consecutive_failures_;
      last_error_ = printable(result.error);  // JSON in .status: valid UTF-8 whatever the source
      last_error_at_ = clock_.wall_now();
      if (!result.cancelled) {
        const Duration wait = hold_off_locked();
        hold_until_ = clock_.now() + wait;
        if (refresh) {
          spdlog::error("Cannot refresh the AWS config: {}; still serving version {}, next try in {}",
                        result.error, content_->version, format_seconds(wait));
          if (options_.refresh_interval > Duration::zero()) {
            next_refresh_ = clock_.now() + std::min(options_.refresh_interval, wait);
          }
        } else {
          spdlog::error("Cannot fetch the AWS config: {} ({} request(s) in {}); {} reader(s) get EIO",
                        result.error, result.requests + result.peer_requests, format_seconds(result.elapsed),
                        waiters_.size());
        }
      }
      if (!content_) fail_waiters_locked(EIO, "fetch failed: " + result.error, fx);
      outcome = served_locked(RefreshResult::Kind::kFailed, last_error_);
    }
    if (refresh_fetch_) {
      last_outcome_ = outcome;
      last_outcome_at_ = clock_.now();
    } else {
      last_outcome_.reset();
    }
    answer_refreshes_locked(outcome, fx);
    fx.wake = true;
  }
  run(fx);
}

namespace {

// A write of whole 4 KiB pages is most likely one piece of a longer text: what writers and the
// kernel cut a text into (stdio and Python buffers, dd, cp, FUSE's max_write) are multiples of
// the page size; a text's last piece, or a text written at once, almost never is.
bool looks_like_a_piece(std::size_t bytes) { return bytes % 4096 == 0; }

}  // namespace

int ConfigService::truncate(std::uint64_t writer, std::uint64_t size) {
  if (!options_.writable) return EROFS;
  if (size > kMaxConfigBytes) return EFBIG;
  Effects fx;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(writer);
    if (it == sessions_.end()) {
      // ftruncate without a prior write works on the current text, like on a regular file.
      it = sessions_.emplace(writer, Session(size == 0 || !content_ ? std::string() : content_->bytes)).first;
    }
    Session& s = it->second;
    s.text.resize(size, '\0');
    s.last_write = clock_.now();
    s.checker.reset();  // judged again from the start at the next write or at the commit
    s.prefix_version = 0;
    fx.wake = true;  // the session is committed when quiet: the ticker must know
  }
  run(fx);
  return 0;
}

int ConfigService::write(std::uint64_t writer, std::uint64_t offset, std::string_view data) {
  if (!options_.writable) return EROFS;
  if (offset + data.size() > kMaxConfigBytes) return EFBIG;
  Effects fx;
  int rc = 0;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(writer);
    if (it == sessions_.end()) {
      // A write at 0 starts a session (O_TRUNC may have been folded away); elsewhere it edits
      // the current text in place, as on a regular file.
      it = sessions_.emplace(writer, Session(offset == 0 || !content_ ? std::string() : content_->bytes)).first;
    }
    Session& s = it->second;
    if (offset < s.checker.seen()) s.checker.reset();  // not an append: judged again from the start
    if (offset < s.prefix_checked) s.prefix_version = 0;
    if (s.text.size() < offset + data.size()) s.text.resize(offset + data.size(), '\0');
    s.text.replace(offset, data.size(), data);
    s.last_write = clock_.now();
    s.wrote = true;
    // Appends are judged incrementally (O(new bytes + the last line)), under the lock but
    // without re-reading the whole text at every write.
    if (Validation v = s.checker.append(s.text); !v) {
      ++writes_rejected_;
      last_error_ = "write refused: not an AWS config: " + v.reason;
      last_error_at_ = clock_.wall_now();
      spdlog::error("Refused a write of {} bytes at offset {}: the text is not an AWS config ({})",
                    data.size(), offset, v.reason);
      sessions_.erase(it);
      rc = EINVAL;
      fx.discarded = true;  // the kernel's page cache may hold this session's earlier writes
      maybe_start_fetch_locked(fx);  // readers waiting on this writer fall back to a fetch
    } else if (content_ && !looks_like_a_piece(data.size()) &&
               (s.published_bytes == 0 || s.text.size() >= 2 * s.published_bytes) &&
               !prefix_of_content_locked(s) && s.checker.complete(s.text)) {
      // A different, complete-looking text over served content: publish it now, so the writer
      // (and everyone) reads it back at once; the kernel would otherwise show the writer's bytes
      // over the old text until the session ends. A rewrite of the same text is a prefix of
      // the content all along and is never published early. Not after a write of whole pages
      // (more is most likely coming), and again in the same session only once the text has
      // doubled: a text written in many pieces is published a few times at most, whole at the
      // session's end. The session stays open; its end counts it as committed.
      s.published_bytes = s.text.size();
      publish_written_locked(s.text, fx);
    }
    fx.wake = true;
  }
  run(fx);
  return rc;
}

// Kept up to date by appends in O(new bytes); computed again after anything else.
bool ConfigService::prefix_of_content_locked(Session& s) const {
  if (!content_) return false;
  if (s.prefix_version != content_->version || s.prefix_checked > s.text.size()) {
    s.prefix_version = content_->version;
    s.prefix_checked = 0;
    s.is_prefix = true;
  }
  if (s.is_prefix && s.prefix_checked < s.text.size()) {
    const std::string_view text = s.text;
    const std::string_view content = content_->bytes;
    s.is_prefix = text.size() <= content.size() &&
                  text.substr(s.prefix_checked) == content.substr(s.prefix_checked, text.size() - s.prefix_checked);
    s.prefix_checked = text.size();
  }
  return s.is_prefix;
}

int ConfigService::commit_locked(std::uint64_t writer, Effects& fx) {
  auto node = sessions_.extract(writer);
  Session& s = node.mapped();
  if (!s.wrote && s.text.empty()) {
    // A truncate to 0 and no write: an open with O_TRUNC that wrote nothing (also a reader's
    // O_RDONLY|O_TRUNC, or a writer whose write starts a new session after the quiet period).
    // An empty config is never served, and nothing was written to reject: nothing changes.
    spdlog::info("A truncate to 0 was not followed by a write; content unchanged");
    maybe_start_fetch_locked(fx);  // readers waiting on this writer fall back to a fetch
    return 0;
  }
  if (content_ && s.last_write < published_at_ && content_->bytes != s.text) {
    // Newer content (another writer's, or a refresh) was published after this session's last
    // write: the older text does not come back.
    spdlog::debug("A write session of {} bytes was superseded by version {}", s.text.size(), content_->version);
    fx.discarded = true;
    return 0;
  }
  Validation v = s.checker.append(s.text);
  if (v) v = s.checker.complete(s.text);
  if (!v) {
    ++writes_rejected_;
    last_error_ = "write rejected: not an AWS config: " + v.reason;
    last_error_at_ = clock_.wall_now();
    spdlog::error("Rejected written text of {} bytes: not an AWS config ({}); content unchanged", s.text.size(),
                  v.reason);
    maybe_start_fetch_locked(fx);
    fx.discarded = true;
    return EINVAL;
  }
  ++writes_committed_;
  if (content_ && content_->bytes == s.text) {
    spdlog::debug("Written text equals version {}; nothing to change", content_->version);
    return 0;
  }
  publish_written_locked(std::move(s.text), fx);
  return 0;
}

void ConfigService::publish_written_locked(std::string text, Effects& fx) {
  spdlog::info("Serving written content: {} bytes (irsa-svc will not be called for this mount)", text.size());
  next_refresh_.reset();
  hold_until_.reset();
  // "Never" includes the retries of a fetch already running: cancel it.
  if (fetching_) fx.cancel_fetch = true;
  publish_locked(std::move(text), ContentSource::kWrite, fx);
  // Refreshes waiting for that fetch will not get a fetched config now.
  answer_refreshes_locked(served_locked(RefreshResult::Kind::kConflict, kSeeded), fx);
}

std::optional<int> ConfigService::flush(std::uint64_t writer) {
  Effects fx;
  int rc = 0;
  {
    std::lock_guard lock(mu_);
    if (!sessions_.contains(writer)) return std::nullopt;
    rc = commit_locked(writer, fx);
  }
  run(fx);
  return rc;
}

void ConfigService::prefetch() {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    if (content_ || fetching_ || stopping_) return;
    start_fetch_locked(fx);
  }
  run(fx);
}

void ConfigService::refresh_now() {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    ++refreshes_signal_;
    if (stopping_) return;
    if (content_ && content_->source == ContentSource::kWrite) {
      spdlog::info("Refresh requested but ignored: the content was written, irsa-svc is not called");
      return;
    }
    if (fetching_) {
      spdlog::info("Refresh requested; a fetch is already running");
      refresh_fetch_ = true;
      return;
    }
    spdlog::info("Refresh requested");
    start_fetch_locked(fx);
    refresh_fetch_ = true;
  }
  run(fx);
}

void ConfigService::refresh(RefreshDone done) {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    ++refreshes_http_;
    if (stopping_) {
      fx.refresh_replies.emplace_back(std::move(done),
                                      served_locked(RefreshResult::Kind::kShuttingDown, "irsafs is shutting down"));
    } else if (content_ && content_->source == ContentSource::kWrite) {
      spdlog::debug("Refresh requested but refused: the content was written");
      fx.refresh_replies.emplace_back(std::move(done), served_locked(RefreshResult::Kind::kConflict, kSeeded));
    } else if (fetching_) {
      // Joins the running fetch (first fetch, SIGHUP, interval or another refresh).
      fx.wake = refreshes_pending_.empty();  // next_wakeup() now bounds the wait
      refreshes_pending_.push_back(std::move(done));
      refresh_fetch_ = true;
    } else if (last_outcome_ && clock_.now() < last_outcome_at_ + kRefreshShare) {
      fx.refresh_replies.emplace_back(std::move(done), *last_outcome_);
    } else {
      spdlog::info("Refresh requested");
      refreshes_pending_.push_back(std::move(done));
      start_fetch_locked(fx);
      refresh_fetch_ = true;
      fx.wake = true;
    }
  }
  try {
    run(fx);
  } catch (const std::exception& e) {
    // `done` is pending: tick() answers it at the fetch's deadline at the latest.
    spdlog::error("Cannot start the fetch for a refresh: {}", e.what());
  }
}

void ConfigService::tick() {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    const TimePoint now = clock_.now();
    std::size_t expired = 0;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->second.deadline <= now && !covered_by_fetch_locked(it->second, now)) {
        fx.replies.emplace_back(std::move(it->second.waiter),
                                ReadOutcome{nullptr, EIO, "no content within the deadline"});
        it = waiters_.erase(it);
        ++expired;
      } else {
        ++it;
      }
    }
    if (expired > 0) {
      spdlog::error("{} reader(s) waited {} for the AWS config without result ({}); they get EIO", expired,
                    format_seconds(options_.read_deadline),
                    fetching_ ? "the fetch is still running"
                              : (last_error_.empty() ? "no fetch could start" : "last error: " + last_error_));
    }
    std::vector<std::uint64_t> quiet;
    for (const auto& [writer, s] : sessions_) {
      if (s.last_write + options_.write_quiet <= now) quiet.push_back(writer);
    }
    for (std::uint64_t writer : quiet) commit_locked(writer, fx);
    if (fetching_ && !refreshes_pending_.empty() && now >= fetch_started_ + options_.read_deadline + kFetchGrace) {
      spdlog::error("{} refresh(es) waited for a fetch that did not end within its deadline",
                    refreshes_pending_.size());
      answer_refreshes_locked(
          served_locked(RefreshResult::Kind::kFailed, "the fetch did not end within the deadline"), fx);
    }
    if (next_refresh_ && *next_refresh_ <= now && !fetching_ && !stopping_) {
      next_refresh_.reset();
      ++refreshes_interval_;
      start_fetch_locked(fx);
      refresh_fetch_ = true;
    }
    maybe_start_fetch_locked(fx);
  }
  run(fx);
}

// Only times at which tick() will act: a time tick() would pass over (a refresh or the end of a
// hold-off while a fetch runs) comes back at once once past, and the ticker would spin. The
// end of a fetch wakes the ticker instead.
std::optional<TimePoint> ConfigService::next_wakeup() const {
  std::lock_guard lock(mu_);
  std::optional<TimePoint> t;
  auto consider = [&t](TimePoint c) { t = t ? std::min(*t, c) : c; };
  for (const auto& [id, parked] : waiters_) {
    consider(covered_by_fetch_locked(parked, parked.deadline) ? fetch_started_ + options_.read_deadline + kFetchGrace
                                                               : parked.deadline);
  }
  for (const auto& [writer, s] : sessions_) consider(s.last_write + options_.write_quiet);
  if (fetching_ && !refreshes_pending_.empty()) consider(fetch_started_ + options_.read_deadline + kFetchGrace);
  if (stopping_ || fetching_) return t;
  if (next_refresh_) consider(*next_refresh_);
  // The conditions of maybe_start_fetch_locked: only then does the end of the hold-off start one.
  if (hold_until_ && !waiters_.empty() && !content_ && sessions_.empty()) consider(*hold_until_);
  return t;
}

void ConfigService::shutdown() {
  Effects fx;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    fail_waiters_locked(EIO, "irsafs is shutting down", fx);
    answer_refreshes_locked(served_locked(RefreshResult::Kind::kShuttingDown, "irsafs is shutting down"), fx);
  }
  run(fx);
}

// A fetch that started by the time the reader arrived (or within kFetchGrace after) ends by
// itself within its own deadline, the same length as the reader's: the reader then gets the
// fetch's outcome, with its reason, rather than a bare timeout a moment earlier.
bool ConfigService::covered_by_fetch_locked(const Parked& p, TimePoint now) const {
  const TimePoint arrival = p.deadline - options_.read_deadline;
  return fetching_ && fetch_started_ <= arrival + kFetchGrace &&
         now < fetch_started_ + options_.read_deadline + kFetchGrace;
}

State ConfigService::state_locked() const {
  if (content_) return State::kReady;
  if (fetching_) return State::kFetching;
  return fetch_failures_ > 0 || writes_rejected_ > 0 ? State::kError : State::kEmpty;
}

nlohmann::ordered_json ConfigService::status() const {
  nlohmann::ordered_json j = own_status();
  std::map<std::string, std::function<void(nlohmann::ordered_json&)>> extras;
  {
    std::lock_guard lock(mu_);
    extras = status_extras_;
  }
  for (const auto& [owner, add] : extras) add(j);  // without the lock: each takes its own
  return j;
}

nlohmann::ordered_json ConfigService::own_status() const {
  std::lock_guard lock(mu_);
  const TimePoint now = clock_.now();
  const WallTime wall = clock_.wall_now();
  auto wall_of = [&](TimePoint t) { return iso8601(wall + std::chrono::duration_cast<WallTime::duration>(t - now)); };
  using json = nlohmann::ordered_json;
  json j;
  j["state"] = to_string(state_locked());
  j["refreshing"] = fetching_ && content_ != nullptr;
  j["source"] = content_ ? json(to_string(content_->source)) : json(nullptr);
  j["version"] = content_ ? content_->version : 0;
  j["bytes"] = content_ ? content_->bytes.size() : 0;
  j["sha256"] = content_ ? json(content_->sha256) : json(nullptr);
  j["obtained_at"] = content_ ? json(iso8601(content_->obtained_at)) : json(nullptr);
  j["last_success_at"] = last_success_at_ ? json(iso8601(*last_success_at_)) : json(nullptr);
  j["last_fetch_ms"] = fetches_ > 0 && !fetching_ ? json(millis(last_fetch_duration_)) : json(nullptr);
  j["fetches"] = fetches_;
  j["fetch_successes"] = fetch_successes_;
  j["upstream_requests"] = requests_;
  j["token_requests"] = token_requests_;
  j["peer_requests"] = peer_requests_;
  j["failures"] = fetch_failures_;
  j["refreshes"] = {{"signal", refreshes_signal_}, {"http", refreshes_http_}, {"interval", refreshes_interval_}};
  j["last_error"] = last_error_.empty() ? json(nullptr) : json(last_error_);
  j["last_error_at"] = last_error_at_ ? json(iso8601(*last_error_at_)) : json(nullptr);
  j["next_refresh_at"] = next_refresh_ ? json(wall_of(*next_refresh_)) : json(nullptr);
  j["next_fetch_not_before"] =
      hold_until_ && *hold_until_ > now ? json(wall_of(*hold_until_)) : json(nullptr);
  j["waiting_readers"] = waiters_.size();
  j["writes"] = {{"committed", writes_committed_}, {"rejected", writes_rejected_}, {"pending", sessions_.size()}};
  j["started_at"] = iso8601(started_wall_);
  return j;
}

}  // namespace irsafs
