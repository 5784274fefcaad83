#include "verify/verifier.h"

#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>

#include "common/text.h"

namespace irsafs {
namespace {

// A token file larger than this is not a service-account token (they are about 1 KiB).
constexpr std::size_t kMaxTokenBytes = 64 * 1024;
// No attempt starts with less time than this before the release.
constexpr Duration kMinAttempt = std::chrono::milliseconds(100);

// The token, read fresh: the kubelet rotates it, and botocore reads it at each call too.
// Returns an error message instead when it cannot be read.
std::string read_token(const std::string& path, Secret& token) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return std::strerror(errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return std::strerror(err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return "not a regular file";
  }
  // One buffer, sized once: no reallocation leaves a copy of the token behind.
  std::string text;
  text.reserve(kMaxTokenBytes + 1);
  text.resize(kMaxTokenBytes + 1);
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      Secret::wipe_string(text);
      return std::strerror(err);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (got > kMaxTokenBytes) {
    Secret::wipe_string(text);
    return "larger than 64 KiB";
  }
  text.resize(got);
  if (got == 0) return "empty";
  token = Secret(std::move(text));
  return {};
}

// Runs `fn` on a thread of its own whose whole stack irsafs maps, and wipes and unmaps after the
// thread ended. STS's answer (credentials) passes through libcurl, glibc and pugixml: they, and
// the dynamic linker's lazy binding (which saves the vector registers, still holding pieces of
// the last memcpy, on the stack), leave pieces of it in stack memory that no free() wipes. glibc
// puts a thread's control block and static TLS at the top of a stack given to it, so they are
// wiped too. Falls back to running `fn` at once, on the caller's thread, when a thread cannot be
// made.
class WipedStackThread {
 public:
  explicit WipedStackThread(std::function<void()> fn) : fn_(std::move(fn)) {
    void* m = ::mmap(nullptr, kSize + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
      fn_();
      return;
    }
    mapping_ = m;
    ::mprotect(mapping_, kGuard, PROT_NONE);  // the stack grows down onto this
    pthread_attr_t attr;
    bool started = false;
    if (::pthread_attr_init(&attr) == 0) {
      started = ::pthread_attr_setstack(&attr, static_cast<char*>(mapping_) + kGuard, kSize) == 0 &&
                ::pthread_create(&thread_, &attr, &WipedStackThread::run, this) == 0;
      ::pthread_attr_destroy(&attr);
    }
    if (!started) {
      release();
      fn_();
      return;
    }
    joinable_ = true;
  }
  ~WipedStackThread() { join(); }
  WipedStackThread(const WipedStackThread&) = delete;
  WipedStackThread& operator=(const WipedStackThread&) = delete;

  void join() {
    if (joinable_) {
      ::pthread_join(thread_, nullptr);
      joinable_ = false;
    }
    release();
  }

 private:
  static constexpr std::size_t kSize = 2 * 1024 * 1024;  // libcurl with OpenSSL stays far below
  static constexpr std::size_t kGuard = 64 * 1024;

  static void* run(void* self) {
    static_cast<WipedStackThread*>(self)->fn_();
    return nullptr;
  }
  void release() {
    if (mapping_ == nullptr) return;
    explicit_bzero(static_cast<char*>(mapping_) + kGuard, kSize);
    ::munmap(mapping_, kSize + kGuard);
    mapping_ = nullptr;
  }

  std::function<void()> fn_;
  void* mapping_ = nullptr;
  pthread_t thread_{};
  bool joinable_ = false;
};

bool readable(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

std::string session_name(const Clock& clock) {
  const auto unix_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(clock.wall_now().time_since_epoch()).count();
  return "irsafs-verify-" + std::to_string(unix_seconds);
}

std::string plural(std::size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

const char* to_string(VerifyMode m) {
  switch (m) {
    case VerifyMode::kOff: return "off";
    case VerifyMode::kOn: return "on";
    case VerifyMode::kAuto: return "auto";
  }
  return "?";
}

const char* to_string(RoleState s) {
  switch (s) {
    case RoleState::kPending: return "pending";
    case RoleState::kVerified: return "verified";
    case RoleState::kUnverified: return "unverified";
    case RoleState::kPermanent: return "permanent";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// The report

void VerificationReport::configure(VerifyMode mode, std::string endpoint) {
  std::lock_guard lock(mu_);
  mode_ = mode;
  endpoint_ = std::move(endpoint);
}

void VerificationReport::begin(bool enabled, const std::vector<WebIdentityRole>& roles) {
  std::lock_guard lock(mu_);
  enabled_ = enabled;
  roles_.clear();
  if (!enabled) {
    running_ = false;
    return;
  }
  running_ = true;
  ++runs_;
  for (const auto& r : roles) {
    RoleReport rr;
    rr.role_arn = printable(r.role_arn, 256);
    for (const auto& p : r.profiles) rr.profiles.push_back(printable(p, 256));
    roles_.push_back(std::move(rr));
  }
}

void VerificationReport::attempted(std::size_t role) {
  std::lock_guard lock(mu_);
  ++attempts_total_;
  if (role < roles_.size()) ++roles_[role].attempts;
}

void VerificationReport::update(std::size_t role, RoleState state, std::string error_code, std::string why) {
  std::lock_guard lock(mu_);
  if (role >= roles_.size()) return;
  roles_[role].state = state;
  if (!error_code.empty()) roles_[role].last_error_code = std::move(error_code);
  roles_[role].why = std::move(why);
}

void VerificationReport::finish(Duration total) {
  std::lock_guard lock(mu_);
  running_ = false;
  total_ = total;
}

std::vector<RoleReport> VerificationReport::roles() const {
  std::lock_guard lock(mu_);
  return roles_;
}

nlohmann::ordered_json VerificationReport::to_json() const {
  std::lock_guard lock(mu_);
  nlohmann::ordered_json j;
  j["mode"] = to_string(mode_);
  j["enabled"] = enabled_;
  j["endpoint"] = printable(endpoint_, 512);
  j["running"] = running_;
  j["total_seconds"] = total_ ? nlohmann::ordered_json(std::chrono::duration<double>(*total_).count())
                              : nlohmann::ordered_json(nullptr);
  j["attempts_total"] = attempts_total_;
  j["runs"] = runs_;
  nlohmann::ordered_json roles = nlohmann::ordered_json::array();
  for (const auto& r : roles_) {
    nlohmann::ordered_json o;
    o["role_arn"] = r.role_arn;
    o["profiles"] = r.profiles;
    o["state"] = to_string(r.state);
    o["verified"] = r.state == RoleState::kVerified;
    o["attempts"] = r.attempts;
    o["last_error_code"] =
        r.last_error_code.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.last_error_code);
    roles.push_back(std::move(o));
  }
  j["roles"] = std::move(roles);
  return j;
}

// ---------------------------------------------------------------------------------------------
// The verifier

struct RoleVerifier::Run {
  std::vector<WebIdentityRole> roles;
  TimePoint release_by;
  std::string session;
  std::stop_source abandon;               // every worker stops: cancelled, or STS unreachable
  std::atomic<bool> unreachable{false};   // why `abandon` fired, when not cancelled
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::string unreachable_why;  // guarded by mu: written once, by the worker that gave up
  // Since when no request to STS got an answer, of any role (guarded by mu): STS is one
  // endpoint, reachable for all roles or for none.
  bool no_answer = false;
  TimePoint no_answer_since{};

  void answered() {
    std::lock_guard lock(mu);
    no_answer = false;
  }
  TimePoint not_answered(TimePoint attempt_start) {
    std::lock_guard lock(mu);
    if (!no_answer) {
      no_answer = true;
      no_answer_since = attempt_start;
    }
    return no_answer_since;
  }
  std::optional<TimePoint> unanswered_since() {
    std::lock_guard lock(mu);
    return no_answer ? std::optional<TimePoint>(no_answer_since) : std::nullopt;
  }
};

RoleVerifier::RoleVerifier(std::unique_ptr<ConfigSource> inner, std::unique_ptr<Transport> sts,
                           VerifySettings settings, Clock& clock, Random& random,
                           std::shared_ptr<VerificationReport> report)
    : inner_(std::move(inner)),
      sts_(std::move(sts)),
      settings_(std::move(settings)),
      clock_(clock),
      random_(random),
      report_(report ? std::move(report) : std::make_shared<VerificationReport>()) {
  report_->configure(settings_.mode, settings_.endpoint);
}

RoleVerifier::~RoleVerifier() = default;

FetchResult RoleVerifier::fetch(std::stop_token stop) {
  const TimePoint start = clock_.now();
  FetchResult result = inner_->fetch(stop);
  if (!result.ok || settings_.mode == VerifyMode::kOff) return result;
  if (!verify(result.content, start + settings_.deadline - settings_.margin, stop)) {
    result.ok = false;
    result.cancelled = true;
    result.error = "fetch cancelled";
    Secret::wipe_string(result.content);
  }
  result.elapsed = clock_.now() - start;
  return result;
}

bool RoleVerifier::verify(std::string_view content, TimePoint release_by, std::stop_token stop) {
  std::vector<WebIdentityRole> roles = web_identity_roles(content);
  if (settings_.token_file) {
    for (auto& r : roles) r.token_file = *settings_.token_file;
  }
  if (roles.empty()) {
    spdlog::debug("No profile with web_identity_token_file and role_arn: nothing to verify with STS");
    report_->begin(false, {});
    return true;
  }
  if (settings_.mode == VerifyMode::kAuto) {
    const WebIdentityRole* readable_role = nullptr;
    for (const auto& r : roles) {
      if (readable(r.token_file)) {
        readable_role = &r;
        break;
      }
    }
    const bool on = readable_role != nullptr;
    if (!auto_on_ || *auto_on_ != on) {
      if (on) {
        spdlog::info("Role verification is on (--verify-roles auto): the token file {} is readable",
                     printable(readable_role->token_file, 256));
      } else {
        const int err = ::access(roles.front().token_file.c_str(), R_OK) == 0 ? 0 : errno;
        spdlog::info("Role verification is off (--verify-roles auto): the token file {} is not readable ({})",
                     printable(roles.front().token_file, 256), std::strerror(err));
      }
    }
    auto_on_ = on;
    if (!on) {
      report_->begin(false, {});
      return true;
    }
  }

  const TimePoint start = clock_.now();
  report_->begin(true, roles);
  Run run;
  run.roles = std::move(roles);
  run.release_by = release_by;
  run.session = session_name(clock_);
  spdlog::info("Verifying {} with STS at {} before releasing the config (at the latest in {})",
               plural(run.roles.size(), "web-identity role"), settings_.endpoint,
               format_seconds(std::max(Duration::zero(), release_by - start)));
  {
    // The caller's stop cancels every worker through `abandon`.
    std::stop_callback forward(stop, [&run] { run.abandon.request_stop(); });
    // Every STS call runs on a worker whose stack is wiped after it (WipedStackThread); this
    // thread only waits.
    const std::size_t workers = std::max<std::size_t>(1, std::min(settings_.concurrency, run.roles.size()));
    std::vector<std::unique_ptr<WipedStackThread>> threads;
    threads.reserve(workers);
    auto work = [this, &run] {
      for (std::size_t i = run.next++; i < run.roles.size(); i = run.next++) verify_role(run, i);
    };
    for (std::size_t w = 0; w < workers; ++w) threads.push_back(std::make_unique<WipedStackThread>(work));
    for (auto& t : threads) t->join();
  }
  const Duration total = clock_.now() - start;
  report_->finish(total);
  if (stop.stop_requested()) return false;

  std::size_t verified = 0, unverified = 0, permanent = 0;
  for (const auto& r : report_->roles()) {
    if (r.state == RoleState::kVerified) ++verified;
    else if (r.state == RoleState::kPermanent) ++permanent;
    else ++unverified;
  }
  spdlog::info("Releasing the config after {} of role verification: {} verified, {} unverified, {} permanent",
               format_seconds(total), verified, unverified, permanent);
  return true;
}

void RoleVerifier::verify_role(Run& run, std::size_t index) {
  const WebIdentityRole& role = run.roles[index];
  const std::string arn = printable(role.role_arn, 256);
  const std::stop_token stop = run.abandon.get_token();
  const TimePoint started = clock_.now();
  int attempts = 0;
  int successes = 0;
  int backoff_step = 0;
  bool told_denied = false;
  StsAnswer last;

  const auto give_up = [&](RoleState state, const std::string& why) {
    report_->update(index, state, last.code, why);
  };
  const auto last_error = [&] {
    if (last.code.empty()) return std::string("no answer from STS yet");
    return "last answer " + last.code + (last.message.empty() ? "" : ": " + last.message);
  };

  for (;;) {
    if (stop.stop_requested()) {
      if (run.unreachable.load()) {
        std::string why;
        {
          std::lock_guard lock(run.mu);
          why = run.unreachable_why;
        }
        spdlog::warn("Role {} not verified: {}; released without verification", arn, why);
        give_up(RoleState::kUnverified, why);
      } else {
        give_up(RoleState::kUnverified, "cancelled");
      }
      return;
    }
    const TimePoint now = clock_.now();
    const std::optional<TimePoint> unreachable_since = run.unanswered_since();
    if (unreachable_since && now - *unreachable_since >= settings_.unreachable_give_up) {
      const std::string why = "STS at " + settings_.endpoint + " unreachable for " +
                              format_seconds(now - *unreachable_since) +
                              (last.message.empty() ? "" : " (" + last.message + ")");
      {
        std::lock_guard lock(run.mu);
        if (!run.unreachable.exchange(true)) run.unreachable_why = why;
      }
      spdlog::warn("Role {} not verified: {}; released without verification", arn, why);
      give_up(RoleState::kUnverified, why);
      run.abandon.request_stop();
      return;
    }
    if (now + kMinAttempt > run.release_by) {
      spdlog::warn("Role {} not verified after {} in {} ({}): released unverified so that readers are answered "
                   "within the deadline of {}",
                   arn, plural(static_cast<std::size_t>(attempts), "attempt"), format_seconds(now - started),
                   last_error(), format_seconds(settings_.deadline));
      give_up(RoleState::kUnverified, "not verified before the deadline (" + last_error() + ")");
      return;
    }

    Secret token;
    if (std::string err = read_token(role.token_file, token); !err.empty()) {
      last.code = "TokenFileUnreadable";
      last.message = err;
      spdlog::warn("Role {} will not be verified: cannot read its web_identity_token_file {}: {}", arn,
                   printable(role.token_file, 256), err);
      give_up(RoleState::kPermanent, "cannot read the token file: " + err);
      return;
    }
    HttpRequest request;
    request.method = HttpRequest::Method::kPost;
    request.url = settings_.endpoint;
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}};
    request.body = assume_role_body(role.role_arn, run.session, token);
    token.wipe();
    Duration budget = run.release_by - now;
    if (unreachable_since) budget = std::min(budget, *unreachable_since + settings_.unreachable_give_up - now);
    request.timeout = std::max(kMinAttempt, budget);
    ++attempts;
    report_->attempted(index);
    HttpResponse response = sts_->perform(request, stop);
    Secret::wipe_string(request.body);
    last = judge_sts_response(response);  // wipes the body, credentials and all

    Duration delay = Duration::zero();
    switch (last.verdict) {
      case StsVerdict::kSuccess:
        run.answered();
        if (++successes >= settings_.confirmations) {
          spdlog::info("Role {} verified with STS ({} in {})", arn,
                       plural(static_cast<std::size_t>(attempts), "attempt"), format_seconds(clock_.now() - started));
          last.code.clear();
          report_->update(index, RoleState::kVerified, {}, {});
          return;
        }
        delay = settings_.confirm_delay;
        break;
      case StsVerdict::kNotPropagated:
        run.answered();
        if (successes > 0) {
          spdlog::info("Role {}: STS denied it again after {} (IAM still propagating): {}", arn,
                       plural(static_cast<std::size_t>(successes), "success"), last.message);
        } else if (!told_denied) {
          spdlog::info("Role {} not assumable yet (IAM has not propagated its trust policy): {}: {}; retrying", arn,
                       last.code, last.message);
        }
        told_denied = true;
        successes = 0;
        delay = settings_.retry.backoff(++backoff_step, random_);
        report_->update(index, RoleState::kPending, last.code, {});
        break;
      case StsVerdict::kTransient:
        run.answered();
        spdlog::debug("Role {}: STS answered {} (HTTP {}): {}; retrying", arn, last.code, last.status, last.message);
        delay = settings_.retry.backoff(++backoff_step, random_);
        if (last.retry_after) delay = std::max(delay, std::min(*last.retry_after, settings_.retry.cap));
        report_->update(index, RoleState::kPending, last.code, {});
        break;
      case StsVerdict::kUnreachable: {
        const TimePoint since = run.not_answered(now);
        spdlog::debug("Role {}: STS at {} not reached: {}", arn, settings_.endpoint, last.message);
        delay = settings_.retry.backoff(++backoff_step, random_);
        delay = std::min(delay, std::max(Duration::zero(), since + settings_.unreachable_give_up - clock_.now()));
        report_->update(index, RoleState::kPending, last.code, {});
        break;
      }
      case StsVerdict::kPermanent: {
        if (last.status != 0) run.answered();
        const std::string why = "STS answered " + last.code + (last.status ? " (HTTP " + std::to_string(last.status) + ")" : "") +
                                (last.message.empty() ? "" : ": " + last.message);
        spdlog::warn("Role {} will not be verified: {}; released without verification", arn, why);
        give_up(RoleState::kPermanent, why);
        return;
      }
      case StsVerdict::kCancelled:
        continue;  // the loop's top says why
    }
    const TimePoint wake = std::min(clock_.now() + delay, run.release_by);
    if (wake > clock_.now()) clock_.sleep_until(wake, stop);
  }
}

}  // namespace irsafs
