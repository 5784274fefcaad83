// Base64url text as JWS compact serialization and JWK members use it (RFC 7515 §2: the URL-safe
// alphabet, no padding), checked before libcjose decodes it. Not a decoder: the decoding stays
// libcjose's. The check is needed because libcjose 0.6.2.1 (Debian 12) aborts the process on an
// assertion (`shift != 1` in base64.c) for text such as "0=" — a '=' after 4n+1 characters —
// and ignores whatever follows a '='. Found by fuzz/jwt_fuzz.cc.
#pragma once

#include <string_view>

namespace irsafs {

// Only [A-Za-z0-9_-], and not of a length no encoding has (4n+1 characters).
inline bool is_unpadded_base64url(std::string_view s) {
  for (const char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return s.size() % 4 != 1;
}

}  // namespace irsafs
