// A peer's bearer token (a projected service-account JWT) checked against the issuer's keys and
// the head's expectations. Pure: token, key set, expectations and the time in, a verdict out; no
// I/O, no clock, no logging (the caller logs the verdict), so it is unit-tested and fuzzed as is.
//
// The checks, in order; the first that fails decides:
//   1. size            the token is at most kMaxTokenBytes, each part within its limit
//   2. structure       three parts of unpadded base64url; the header a JSON object
//   3. algorithm       the header's "alg" is RS256 or ES256 (no "none", no HS*, nothing else),
//                      no "crit" extensions; decided before any key is looked at (and before
//                      the payload is parsed)
//      structure       a non-empty signature; the payload a JSON object
//   4. kid             the header's "kid" names a key of the set
//   5. key             that key is of the algorithm's type (RSA for RS256, EC P-256 for ES256)
//   6. signature       libcjose verifies the signature with that key
//   7. claims          iss and sub are strings, exp a number (nbf too when present), aud a
//                      string or an array of strings
//   8. iss             equal to the head's issuer
//   9. aud             is, or contains, the audience
//  10. exp             not past by more than the skew
//  11. nbf             not ahead by more than the skew
//  12. sub             equal to the head's subject (the only check answered 403: the token is
//                      genuine, its holder is another service account)
// Every failure is 401 except 12 (403). The verdict's facts (alg, kid, iss, sub, as printable
// text) are safe to log; the token and its signature never appear in a verdict.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "auth/key_set.h"
#include "common/clock.h"

namespace irsafs {

// Kubernetes' projected tokens are about 1 KiB; 8 KiB leaves room and bounds the work an
// unauthenticated request can cause.
inline constexpr std::size_t kMaxTokenBytes = 8 * 1024;
inline constexpr std::size_t kMaxJwtHeaderBytes = 1024;  // base64url text of the header part

enum class JwtCheck {
  kOk,
  kMissing,      // no token
  kSize,
  kStructure,
  kAlgorithm,
  kUnknownKid,
  kKey,
  kSignature,
  kClaims,
  kIssuer,
  kAudience,
  kExpired,
  kNotYetValid,
  kSubject,
};
// "signature", "unknown kid", ...: the name of the check in log lines and answers.
const char* check_name(JwtCheck check);

struct JwtExpectations {
  std::string issuer;    // the head's own token's iss
  std::string audience;  // --peer-audience
  std::string subject;   // the head's own token's sub
  std::chrono::seconds skew{60};
};

// What may be said about a presented token: each field printable, cut to 128 bytes; empty when
// the token did not get that far or lacks it.
struct JwtFacts {
  std::string alg;
  std::string kid;
  std::string iss;
  std::string sub;
};

struct JwtVerdict {
  JwtCheck check = JwtCheck::kStructure;
  std::string detail;  // what exactly, e.g. "exp 2026-12-01T12:00:00Z is 75 s past"; no secrets
  JwtFacts facts;

  bool ok() const { return check == JwtCheck::kOk; }
  // 200, 401 or 403.
  int status() const;
  // "<check>: <detail>" (one line).
  std::string why() const;
};

// A token taken apart but not verified (checks 1-3 passed).
struct ParsedJwt {
  std::string alg;
  std::string kid;  // may be empty: no kid in the header
  nlohmann::json payload;  // an object
};

// Checks 1-3. On failure the verdict says why; on success its check is kOk and `out` is filled.
JwtVerdict parse_jwt(std::string_view token, ParsedJwt& out);

// All the checks, against `keys` and `expect`, at `now`.
JwtVerdict verify_jwt(std::string_view token, const KeySet& keys, const JwtExpectations& expect,
                      WallTime now);

// The head's own token: its iss and sub, without verifying its signature (it is the head's own
// file), but it must parse (checks 1-3) and carry both as non-empty strings.
struct JwtIdentity {
  std::string iss;
  std::string sub;
};
bool read_identity(std::string_view token, JwtIdentity& out, std::string& error);

}  // namespace irsafs
