// The head's Authenticator (issue 14): a worker's bearer token is accepted when it is a JWT
// signed (RS256 or ES256) by a key of the head's issuer, for the peer audience, in its validity
// window, of the head's own subject (jwt_verifier.h has the checks and their order;
// docs/peers-auth.md the whole story).
//
// The head learns its issuer and subject from its own projected token (`token_file`), re-read
// whenever the file changes (kubelet rotates it). The issuer's keys come from a KeySource: a JWKS
// file, or OIDC discovery over HTTPS. They are loaded by the authenticator's own thread — at
// start(), again when a token names an unknown kid (at most once per `reread_interval`), when
// the JWKS file changed, and after a failure (at most once per `retry_interval`) — never on the
// caller's thread. A check that can be decided with the keys at hand is decided at once, on the
// caller's thread; one that needs a (re)load waits for it and is answered from the loader thread.
//
// Use (the peer endpoint's component):
//   PeerAuthSettings s;  // from --peer-audience, --peer-token-file, --peer-jwks-file,
//                        // --peer-ca-file and env OIDC_PROVIDER
//   auto auth = make_peer_authenticator(s, clock);  // nothing happens yet (safe before fork)
//   auth->start();   // after daemonizing: starts the loader thread, prefetches the keys
//   server.on_request(... auth->check(header, done) ...);
//   auth->stop();    // before the HTTP server goes: waiting checks are answered 503 while the
//                    // server can still send them; later checks get 503 at once
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "auth/authenticator.h"
#include "auth/jwt_verifier.h"
#include "auth/key_set.h"
#include "common/clock.h"
#include "common/secret.h"
#include "fetcher/transport.h"

namespace irsafs {

// What the CLI fills from `irsafs mount`'s flags and environment (issue 14, item 3).
struct PeerAuthSettings {
  // --peer-audience: the audience a worker's token must carry (its projected token is minted for
  // it, so the token is worth nothing to STS or the API server).
  std::string audience = "irsafs";
  // --peer-token-file: the head's own projected token, read to learn the issuer (iss) and the
  // subject (sub) a worker's token must match. The same flag names the worker's token on the
  // client side.
  std::string token_file = "/var/run/secrets/irsafs/token";
  // --peer-jwks-file: the issuer's JWKS as a file (re-read when its mtime changes). Empty: OIDC
  // discovery at https://<issuer>/.well-known/openid-configuration.
  std::string jwks_file;
  // --peer-ca-file: CA certificates (PEM) for discovery; empty: the system's store (EKS issuers
  // have public certificates).
  std::string ca_file;
  // Env OIDC_PROVIDER (the issuer without "https://", as EKS names it): only compared with the
  // head token's iss, which decides; a mismatch is logged once.
  std::string oidc_provider;
  std::chrono::seconds skew{60};
  // An unknown kid re-reads the keys at most this often; a failed load is retried at most this
  // often (a request in between gets 503 with the failure's reason).
  Duration reread_interval = std::chrono::seconds(60);
  Duration retry_interval = std::chrono::seconds(10);
  Duration http_timeout = std::chrono::seconds(10);  // each discovery request
};

// Where the issuer's keys come from. load() runs on the authenticator's thread and may block.
class KeySource {
 public:
  virtual ~KeySource() = default;
  // The keys of `issuer` (the head token's iss); false with one line in `error` when they
  // cannot be had.
  virtual bool load(const std::string& issuer, KeySet& out, std::string& error, std::stop_token stop) = 0;
  // True when the source changed since the last load() and should be re-read at once (a local
  // file's mtime); cheap: called on the caller's thread.
  virtual bool changed() { return false; }
  // "JWKS file /etc/jwks.json", "OIDC discovery": for log lines.
  virtual std::string describe() const = 0;
};

// --peer-jwks-file.
class JwksFileSource final : public KeySource {
 public:
  explicit JwksFileSource(std::string path) : path_(std::move(path)) {}
  bool load(const std::string& issuer, KeySet& out, std::string& error, std::stop_token stop) override;
  bool changed() override;
  std::string describe() const override { return "JWKS file " + path_; }

 private:
  struct Stamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    long long mtime_ns = -1;
    bool operator==(const Stamp&) const = default;
  };
  static std::optional<Stamp> stamp_of(const std::string& path);

  std::string path_;
  std::mutex mu_;
  std::optional<Stamp> loaded_;
};

// OIDC discovery: GET <issuer>/.well-known/openid-configuration, whose "issuer" must be the
// issuer and whose "jwks_uri" (https) gives the JWKS. Both fetched on every load (a load is rare).
class OidcDiscoverySource final : public KeySource {
 public:
  OidcDiscoverySource(std::unique_ptr<Transport> transport, Duration timeout)
      : transport_(std::move(transport)), timeout_(timeout) {}
  bool load(const std::string& issuer, KeySet& out, std::string& error, std::stop_token stop) override;
  std::string describe() const override { return "OIDC discovery"; }

  static std::string discovery_url(const std::string& issuer);

 private:
  bool get(const std::string& url, std::string& body, std::string& error, std::stop_token stop);

  std::unique_ptr<Transport> transport_;
  Duration timeout_;
};

class OidcAuthenticator final : public Authenticator {
 public:
  // `clock` must outlive the authenticator.
  OidcAuthenticator(PeerAuthSettings settings, std::unique_ptr<KeySource> keys, Clock& clock);
  ~OidcAuthenticator() override;
  OidcAuthenticator(const OidcAuthenticator&) = delete;
  OidcAuthenticator& operator=(const OidcAuthenticator&) = delete;

  // Starts the loader thread and has it fetch the keys at once (when the head's own token can
  // be read), so the first worker does not wait for them.
  void start();
  // Ends the loader thread (a load in flight is cancelled) and answers waiting checks 503.
  // Idempotent; checks after stop() are answered 503 at once.
  void stop();

  void check(std::string_view authorization, std::function<void(AuthResult)> done) override;

  // For tests and .status: how many loads were started, and whether keys are at hand.
  int loads_started() const;
  bool has_keys() const;

 private:
  struct Waiting {
    Secret token;
    JwtExpectations expect;
    std::function<void(AuthResult)> done;
  };

  // The head's identity from its token file, re-read when the file changed; false with `error`.
  bool identity(JwtIdentity& out, std::string& error);
  // Verdict → AuthResult, with the one log line of a refusal.
  static AuthResult conclude(const JwtVerdict& v);
  static AuthResult unavailable(std::string why);
  void loader(std::stop_token stop);

  PeerAuthSettings settings_;
  std::unique_ptr<KeySource> source_;
  Clock& clock_;

  std::mutex identity_mu_;
  struct IdentityCache {
    long long stamp_mtime_ns = -1;
    unsigned long long stamp_ino = 0;
    long long stamp_size = -1;
    bool ok = false;
    JwtIdentity id;
    std::string error;
    std::string warned_iss;  // OIDC_PROVIDER mismatch already logged for this iss
  } identity_;

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::shared_ptr<const KeySet> keys_;  // null until a load succeeded
  std::string keys_issuer_;             // the issuer they were loaded for
  std::string load_error_;              // the last load's failure, empty after a success
  std::optional<TimePoint> last_load_;  // when the last load started
  bool load_wanted_ = false;
  bool loading_ = false;
  std::string wanted_issuer_;
  std::deque<Waiting> waiting_;
  int loads_started_ = 0;
  bool stopped_ = false;
  std::jthread thread_;
};

// The production authenticator for `settings`: a JWKS file source, or discovery through libcurl
// (CA from settings.ca_file, else the system store).
std::unique_ptr<OidcAuthenticator> make_peer_authenticator(const PeerAuthSettings& settings, Clock& clock);

}  // namespace irsafs
