// Who may take the config from a serving peer (issue 14): the head checks each worker's
// `Authorization: Bearer <JWT>` (a projected service-account token with its own audience)
// against the issuer's keys and its own identity. The HTTP side knows only this interface;
// tests may pass their own. The head's implementation is OidcAuthenticator
// (auth/oidc_authenticator.h; make_peer_authenticator builds it from PeerAuthSettings).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace irsafs {

struct AuthResult {
  // 200 accepted; 401 a missing or invalid token (signature, alg, kid, exp/nbf, iss, aud,
  // malformed); 403 a valid token of another subject; 503 the keys cannot be had now.
  int status = 401;
  std::string why;  // which check failed, one line; never the token
  bool ok() const { return status == 200; }
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // `authorization` is the request's Authorization header value, empty when absent. `done` is
  // called exactly once, possibly before check() returns, possibly later from another thread
  // (e.g. after the issuer's keys were fetched). check() itself never blocks on the network:
  // it is called from the HTTP server's one thread.
  virtual void check(std::string_view authorization, std::function<void(AuthResult)> done) = 0;
};

}  // namespace irsafs
