#include "auth/oidc_authenticator.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/text.h"
#include "fetcher/curl_transport.h"

namespace irsafs {
namespace {

// A projected token is about 1 KiB; a file much larger than a token is not one.
constexpr std::size_t kMaxTokenFileBytes = 64 * 1024;
// Checks waiting for a load at once (each holds a token of at most 8 KiB): far more than a
// cluster's workers, few enough to bound the memory a flood of unknown kids can hold.
constexpr std::size_t kMaxWaiting = 4096;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// "Bearer <token>" (the scheme is case-insensitive, RFC 7235 §2.1); false when it is not.
bool bearer_token(std::string_view authorization, std::string_view& token) {
  authorization = trim(authorization);
  const std::size_t space = authorization.find(' ');
  if (space == std::string_view::npos || !iequals(authorization.substr(0, space), "Bearer")) return false;
  token = trim(authorization.substr(space + 1));
  return !token.empty();
}

long long mtime_ns(const struct stat& st) {
  return static_cast<long long>(st.st_mtim.tv_sec) * 1'000'000'000LL + st.st_mtim.tv_nsec;
}

// A whole small file, or false with the reason.
bool read_small_file(const std::string& path, std::size_t max, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = std::strerror(errno);
    return false;
  }
  out.assign(max + 1, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  if (in.bad()) {
    Secret::wipe_string(out);
    error = "read error";
    return false;
  }
  out.resize(static_cast<std::size_t>(in.gcount()));
  if (out.size() > max) {
    Secret::wipe_string(out);
    error = "larger than " + std::to_string(max) + " bytes";
    return false;
  }
  return true;
}

std::string first_line(std::string_view body) {
  std::string out = printable(body.substr(0, body.find_first_of("\r\n")), 120);
  return out.empty() ? "(empty body)" : out;
}

}  // namespace

// ---- JwksFileSource -------------------------------------------------------------------------

std::optional<JwksFileSource::Stamp> JwksFileSource::stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return Stamp{st.st_dev, st.st_ino, st.st_size, mtime_ns(st)};
}

bool JwksFileSource::load(const std::string&, KeySet& out, std::string& error, std::stop_token) {
  // The stamp is taken before the read: a change during the read is seen as a change next time.
  const std::optional<Stamp> stamp = stamp_of(path_);
  {
    std::lock_guard lock(mu_);
    loaded_ = stamp;
  }
  std::string text;
  std::string why;
  if (!read_small_file(path_, kMaxJwksBytes, text, why)) {
    error = "JWKS file " + path_ + ": " + why;
    return false;
  }
  if (!KeySet::parse(text, out, why)) {
    error = "JWKS file " + path_ + ": " + why;
    return false;
  }
  return true;
}

bool JwksFileSource::changed() {
  const std::optional<Stamp> now = stamp_of(path_);
  std::lock_guard lock(mu_);
  return now != loaded_;
}

// ---- OidcDiscoverySource --------------------------------------------------------------------

std::string OidcDiscoverySource::discovery_url(const std::string& issuer) {
  std::string base = issuer;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/.well-known/openid-configuration";
}

bool OidcDiscoverySource::get(const std::string& url, std::string& body, std::string& error,
                              std::stop_token stop) {
  HttpRequest request;
  request.url = url;
  request.headers = {{"Accept", "application/json"}};
  request.timeout = timeout_;
  HttpResponse r = transport_->perform(request, stop);
  switch (r.outcome) {
    case HttpResponse::Outcome::kCompleted:
      break;
    case HttpResponse::Outcome::kCancelled:
      error = url + ": cancelled";
      return false;
    case HttpResponse::Outcome::kTooLarge:
      error = url + ": response larger than the limit";
      return false;
    case HttpResponse::Outcome::kTransportError:
      error = url + ": " + r.error;
      return false;
  }
  if (r.status != 200) {
    error = url + ": HTTP " + std::to_string(r.status) + ": " + first_line(r.body);
    return false;
  }
  body = std::move(r.body);
  return true;
}

bool OidcDiscoverySource::load(const std::string& issuer, KeySet& out, std::string& error,
                               std::stop_token stop) {
  // Keys fetched over plain HTTP would be anyone's keys.
  if (issuer.rfind("https://", 0) != 0) {
    error = "issuer " + printable(issuer, 200) + " is not an https URL: discovery needs one (or give --peer-jwks-file)";
    return false;
  }
  const std::string url = discovery_url(issuer);
  std::string body;
  if (!get(url, body, error, stop)) return false;
  const nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    error = url + ": not a JSON object";
    return false;
  }
  // OpenID Connect Discovery 1.0 §4.3: the document's issuer is the issuer it was asked for.
  const auto doc_issuer = doc.find("issuer");
  if (doc_issuer == doc.end() || !doc_issuer->is_string() || doc_issuer->get<std::string>() != issuer) {
    error = url + ": its \"issuer\" is not " + printable(issuer, 200);
    return false;
  }
  const auto jwks_uri = doc.find("jwks_uri");
  if (jwks_uri == doc.end() || !jwks_uri->is_string() || jwks_uri->get<std::string>().rfind("https://", 0) != 0) {
    error = url + ": no https \"jwks_uri\"";
    return false;
  }
  const std::string jwks_url = jwks_uri->get<std::string>();
  if (!get(jwks_url, body, error, stop)) return false;
  std::string why;
  if (!KeySet::parse(body, out, why)) {
    error = printable(jwks_url, 200) + ": " + why;
    return false;
  }
  return true;
}

// ---- OidcAuthenticator ----------------------------------------------------------------------

OidcAuthenticator::OidcAuthenticator(PeerAuthSettings settings, std::unique_ptr<KeySource> keys, Clock& clock)
    : settings_(std::move(settings)), source_(std::move(keys)), clock_(clock) {}

OidcAuthenticator::~OidcAuthenticator() { stop(); }

void OidcAuthenticator::start() {
  JwtIdentity id;
  std::string error;
  const bool known = identity(id, error);
  if (!known) {
    spdlog::warn("Peer authentication: the head's own token cannot be read: {}; requests get 503 until it can be",
                 error);
  }
  std::lock_guard lock(mu_);
  if (stopped_ || thread_.joinable()) return;
  if (known) {
    spdlog::info("Peer authentication: tokens of issuer {}, subject {}, audience {}; keys from {}",
                 printable(id.iss, 200), printable(id.sub, 200), printable(settings_.audience, 200),
                 source_->describe());
    load_wanted_ = true;
    wanted_issuer_ = id.iss;
  }
  thread_ = std::jthread([this](std::stop_token stop) { loader(stop); });
}

void OidcAuthenticator::stop() {
  std::deque<Waiting> batch;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    batch.swap(waiting_);
  }
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  for (Waiting& w : batch) w.done(unavailable("the head is shutting down"));
}

int OidcAuthenticator::loads_started() const {
  std::lock_guard lock(mu_);
  return loads_started_;
}

bool OidcAuthenticator::has_keys() const {
  std::lock_guard lock(mu_);
  return keys_ != nullptr;
}

bool OidcAuthenticator::identity(JwtIdentity& out, std::string& error) {
  std::lock_guard lock(identity_mu_);
  IdentityCache& c = identity_;
  struct stat st {};
  if (::stat(settings_.token_file.c_str(), &st) != 0) {
    error = settings_.token_file + ": " + std::strerror(errno);
    c.stamp_mtime_ns = -1;
    return false;
  }
  // kubelet replaces a projected token by swapping a symlink: a new inode and mtime.
  const bool same = c.stamp_mtime_ns == mtime_ns(st) && c.stamp_ino == st.st_ino && c.stamp_size == st.st_size;
  if (!same) {
    c.stamp_mtime_ns = mtime_ns(st);
    c.stamp_ino = st.st_ino;
    c.stamp_size = st.st_size;
    std::string text;
    std::string why;
    c.ok = read_small_file(settings_.token_file, kMaxTokenFileBytes, text, why);
    if (c.ok) {
      Secret token(std::string(trim(text)));
      Secret::wipe_string(text);
      c.ok = read_identity(token.reveal(), c.id, why);
    }
    c.error = c.ok ? "" : settings_.token_file + ": " + why;
    if (c.ok && !settings_.oidc_provider.empty() && c.warned_iss != c.id.iss) {
      std::string provider = settings_.oidc_provider;
      while (!provider.empty() && provider.back() == '/') provider.pop_back();
      if (c.id.iss != "https://" + provider) {
        c.warned_iss = c.id.iss;
        spdlog::warn("Peer authentication: OIDC_PROVIDER {} is not the issuer of the head's token ({}); "
                     "the token's issuer is used", printable(provider, 200), printable(c.id.iss, 200));
      }
    }
  }
  if (!c.ok) {
    error = c.error;
    return false;
  }
  out = c.id;
  return true;
}

AuthResult OidcAuthenticator::conclude(const JwtVerdict& v) {
  AuthResult r{v.status(), v.why()};
  if (r.ok()) {
    spdlog::debug("Peer request accepted: kid={} iss={} sub={}", v.facts.kid, v.facts.iss, v.facts.sub);
  } else if (v.facts.alg.empty()) {
    spdlog::warn("Peer request refused ({}): {}", r.status, r.why);
  } else {
    spdlog::warn("Peer request refused ({}): {} [alg={} kid={} iss={} sub={}]", r.status, r.why,
                 v.facts.alg, v.facts.kid, v.facts.iss, v.facts.sub);
  }
  return r;
}

AuthResult OidcAuthenticator::unavailable(std::string why) {
  spdlog::warn("Peer request refused (503): {}", why);
  return AuthResult{503, std::move(why)};
}

void OidcAuthenticator::check(std::string_view authorization, std::function<void(AuthResult)> done) {
  std::string_view token;
  if (!bearer_token(authorization, token)) {
    done(conclude(JwtVerdict{JwtCheck::kMissing,
                             authorization.empty() ? "no Authorization header" : "Authorization is not \"Bearer <token>\"",
                             {}}));
    return;
  }
  // A malformed token, or one of a refused algorithm, is refused without the keys.
  ParsedJwt parsed;
  if (JwtVerdict v = parse_jwt(token, parsed); !v.ok()) {
    done(conclude(v));
    return;
  }
  JwtIdentity id;
  std::string error;
  if (!identity(id, error)) {
    done(unavailable("the head's own token cannot be read: " + error));
    return;
  }
  const JwtExpectations expect{id.iss, settings_.audience, id.sub, settings_.skew};
  const bool file_changed = source_->changed();
  // Under mu_: queues this check for the next load (requesting one unless one is running), or
  // says why it cannot wait. The callback is then called by the caller, without the lock.
  const auto wait_for_load = [&]() -> std::optional<std::string> {
    if (waiting_.size() >= kMaxWaiting) return "too many requests wait for the issuer's keys";
    if (!loading_) {
      load_wanted_ = true;
      wanted_issuer_ = id.iss;
    }
    waiting_.push_back(Waiting{Secret(std::string(token)), expect, std::move(done)});
    cv_.notify_all();
    return std::nullopt;
  };

  std::shared_ptr<const KeySet> keys;
  {
    std::unique_lock lock(mu_);
    std::optional<std::string> refused;
    if (stopped_) {
      refused = "the head is shutting down";
    } else if (keys_ != nullptr && keys_issuer_ == id.iss && !file_changed) {
      // Keys at hand decide at once, even while a re-read (for some other kid) is in flight.
      keys = keys_;
    } else if (loading_ || load_wanted_ || file_changed || keys_issuer_ != id.iss || !last_load_ ||
               clock_.now() - *last_load_ >= settings_.retry_interval) {
      refused = wait_for_load();
      if (!refused) return;
    } else {
      refused = "the issuer's keys cannot be had: " + load_error_;
    }
    if (refused) {
      lock.unlock();
      done(unavailable(std::move(*refused)));
      return;
    }
  }

  JwtVerdict v = verify_jwt(token, *keys, expect, clock_.wall_now());
  if (v.check == JwtCheck::kUnknownKid && !parsed.kid.empty()) {
    // Perhaps the issuer rotated its keys: re-read them, at most once per reread_interval; this
    // request waits for that one re-read.
    std::unique_lock lock(mu_);
    if (!stopped_ && keys_ != nullptr && keys_ != keys && keys_issuer_ == id.iss) {
      // A load ended since: its keys decide, without another.
      keys = keys_;
      lock.unlock();
      v = verify_jwt(token, *keys, expect, clock_.wall_now());
    } else if (!stopped_ && (loading_ || load_wanted_ || !last_load_ ||
                             clock_.now() - *last_load_ >= settings_.reread_interval)) {
      std::optional<std::string> refused = wait_for_load();
      if (!refused) return;
      lock.unlock();
      done(unavailable(std::move(*refused)));
      return;
    }
  }
  done(conclude(v));
}

void OidcAuthenticator::loader(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, stop, [&] { return load_wanted_; });
    if (stop.stop_requested()) return;
    load_wanted_ = false;
    loading_ = true;
    ++loads_started_;
    last_load_ = clock_.now();
    const std::string issuer = wanted_issuer_;
    lock.unlock();

    auto fresh = std::make_shared<KeySet>();
    std::string error;
    bool ok = false;
    try {
      ok = source_->load(issuer, *fresh, error, stop);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (stop.stop_requested()) return;  // stop() answers whoever waits
    if (ok) {
      spdlog::info("Peer authentication: loaded {} of issuer {} from {}", fresh->describe(),
                   printable(issuer, 200), source_->describe());
    } else {
      spdlog::warn("Peer authentication: cannot load the keys of issuer {} from {}: {}",
                   printable(issuer, 200), source_->describe(), error);
    }

    lock.lock();
    loading_ = false;
    if (ok) {
      keys_ = std::move(fresh);
      load_error_.clear();
    } else {
      // A failed re-read keeps the keys of the same issuer: tokens they verify still pass.
      if (keys_issuer_ != issuer) keys_ = nullptr;
      load_error_ = error;
    }
    keys_issuer_ = issuer;
    std::deque<Waiting> batch;
    batch.swap(waiting_);
    const std::shared_ptr<const KeySet> keys = keys_;
    lock.unlock();

    for (Waiting& w : batch) {
      AuthResult result;
      if (keys == nullptr || w.expect.issuer != issuer) {
        result = unavailable("the issuer's keys cannot be had: " + (ok ? std::string("issuer changed") : error));
      } else {
        const JwtVerdict v = verify_jwt(w.token.reveal(), *keys, w.expect, clock_.wall_now());
        if (v.check == JwtCheck::kUnknownKid && !ok) {
          result = unavailable(v.detail + ", and the keys could not be re-read: " + error);
        } else {
          result = conclude(v);
        }
      }
      w.done(std::move(result));
    }
    lock.lock();
  }
}

std::unique_ptr<OidcAuthenticator> make_peer_authenticator(const PeerAuthSettings& settings, Clock& clock) {
  std::unique_ptr<KeySource> source;
  if (!settings.jwks_file.empty()) {
    source = std::make_unique<JwksFileSource>(settings.jwks_file);
  } else {
    TransportSettings ts;
    ts.tls.ca_file = settings.ca_file;
    ts.timeout = settings.http_timeout;
    ts.max_body = kMaxJwksBytes;
    source = std::make_unique<OidcDiscoverySource>(std::make_unique<CurlTransport>(ts), settings.http_timeout);
  }
  return std::make_unique<OidcAuthenticator>(settings, std::move(source), clock);
}

}  // namespace irsafs
