// The issuer's signing keys (a JWKS, RFC 7517), imported with libcjose. Only what a peer's token
// may be signed with is kept: RSA keys of at least 2048 bits (RS256) and EC keys on P-256
// (ES256), each with a "kid"; keys for encryption ("use": "enc"), symmetric keys and other
// curves are left out, so no token can name them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// libcjose's key type; its header is included only by the .cc files.
struct _cjose_jwk_int;

namespace irsafs {

// A JWKS is a few keys; anything much larger is not one.
inline constexpr std::size_t kMaxJwksBytes = 256 * 1024;

struct JwtKey {
  enum class Type { kRsa, kEc };
  Type type = Type::kRsa;
  std::string kid;
  std::string alg;  // the key's own "alg" when the JWKS names one, else empty
  std::shared_ptr<_cjose_jwk_int> jwk;  // never null; released with cjose_jwk_release
  // The one JWS algorithm this key verifies: "RS256" or "ES256".
  const char* jws_alg() const { return type == Type::kRsa ? "RS256" : "ES256"; }
};

class KeySet {
 public:
  // Parses a JWKS document ({"keys": [...]}). Keys that are not usable (see above) are skipped
  // and counted in skipped(); a document that is not a JWKS at all, or has no usable key, is an
  // error: returns false and says why in `error` (one line, no key material).
  static bool parse(std::string_view json, KeySet& out, std::string& error);

  // The key with this kid, or null.
  const JwtKey* find(std::string_view kid) const;
  const std::vector<JwtKey>& keys() const { return keys_; }
  std::size_t skipped() const { return skipped_; }
  bool empty() const { return keys_.empty(); }
  // "2 keys (kid a RS256, kid b ES256)": for log lines.
  std::string describe() const;

 private:
  std::vector<JwtKey> keys_;
  std::size_t skipped_ = 0;
};

}  // namespace irsafs
