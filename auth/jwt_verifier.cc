#include "auth/jwt_verifier.h"

#include <cjose/cjose.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "auth/base64url.h"
#include "common/text.h"

namespace irsafs {
namespace {

constexpr std::size_t kMaxFact = 128;

JwtVerdict fail(JwtCheck check, std::string detail, JwtFacts facts = {}) {
  return JwtVerdict{check, std::move(detail), std::move(facts)};
}

// libcjose's base64url decoder (RFC 4648 §5) on unpadded text only (base64url.h says why); false
// on bad input.
bool decode_b64url(std::string_view in, std::string& out) {
  if (!is_unpadded_base64url(in)) return false;
  if (in.empty()) {
    out.clear();
    return true;
  }
  uint8_t* buf = nullptr;
  std::size_t len = 0;
  cjose_err err{};
  if (!cjose_base64url_decode(in.data(), in.size(), &buf, &len, &err)) return false;
  out.assign(reinterpret_cast<const char*>(buf), len);
  cjose_get_dealloc()(buf);
  return true;
}

std::string string_member(const nlohmann::json& obj, const char* name) {
  const auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string fact(std::string_view s) { return printable(s, kMaxFact); }

// A NumericDate (RFC 7519 §2): a JSON number, finite.
bool numeric_date(const nlohmann::json& obj, const char* name, double& out) {
  const auto it = obj.find(name);
  if (it == obj.end() || !it->is_number()) return false;
  out = it->get<double>();
  return std::isfinite(out);
}

// Whole seconds of a difference for messages, clamped (a forged claim may hold 1e300).
std::string seconds_text(double seconds) {
  return std::to_string(static_cast<long long>(std::clamp(seconds, -1e15, 1e15)));
}

std::string date_text(double seconds) {
  // Beyond what a time_point holds (nanoseconds in 64 bits: ±292 years around 1970), say the
  // number.
  if (seconds < -9e9 || seconds > 9e9) return seconds_text(seconds);
  return iso8601(WallTime(std::chrono::seconds(static_cast<long long>(std::floor(seconds)))));
}

}  // namespace

const char* check_name(JwtCheck check) {
  switch (check) {
    case JwtCheck::kOk: return "ok";
    case JwtCheck::kMissing: return "no token";
    case JwtCheck::kSize: return "size";
    case JwtCheck::kStructure: return "malformed";
    case JwtCheck::kAlgorithm: return "algorithm";
    case JwtCheck::kUnknownKid: return "unknown kid";
    case JwtCheck::kKey: return "key type";
    case JwtCheck::kSignature: return "signature";
    case JwtCheck::kClaims: return "claims";
    case JwtCheck::kIssuer: return "iss";
    case JwtCheck::kAudience: return "aud";
    case JwtCheck::kExpired: return "exp";
    case JwtCheck::kNotYetValid: return "nbf";
    case JwtCheck::kSubject: return "sub";
  }
  return "?";
}

int JwtVerdict::status() const {
  if (check == JwtCheck::kOk) return 200;
  return check == JwtCheck::kSubject ? 403 : 401;
}

std::string JwtVerdict::why() const {
  return detail.empty() ? std::string(check_name(check)) : std::string(check_name(check)) + ": " + detail;
}

JwtVerdict parse_jwt(std::string_view token, ParsedJwt& out) {
  out = ParsedJwt();
  // 1. Size, before anything is decoded.
  if (token.empty()) return fail(JwtCheck::kMissing, "empty bearer token");
  if (token.size() > kMaxTokenBytes) {
    return fail(JwtCheck::kSize, std::to_string(token.size()) + " bytes, more than " +
                                     std::to_string(kMaxTokenBytes));
  }
  // 2. Structure: header.payload.signature, the compact serialization (RFC 7515 §7.1).
  const std::size_t dot1 = token.find('.');
  const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return fail(JwtCheck::kStructure, "not three dot-separated parts");
  }
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig_b64 = token.substr(dot2 + 1);
  if (header_b64.size() > kMaxJwtHeaderBytes) {
    return fail(JwtCheck::kSize, "header part of " + std::to_string(header_b64.size()) +
                                     " bytes, more than " + std::to_string(kMaxJwtHeaderBytes));
  }
  std::string header_text, payload_text, sig;
  if (!decode_b64url(header_b64, header_text)) return fail(JwtCheck::kStructure, "header is not base64url");
  if (!decode_b64url(payload_b64, payload_text)) return fail(JwtCheck::kStructure, "payload is not base64url");
  if (!decode_b64url(sig_b64, sig)) return fail(JwtCheck::kStructure, "signature is not base64url");
  const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, false);
  if (header.is_discarded()) return fail(JwtCheck::kStructure, "header is not JSON");
  if (!header.is_object()) return fail(JwtCheck::kStructure, "header is not a JSON object");

  // 3. Algorithm, before any key is looked at: an attacker must not choose how the signature
  // is checked ("none", or HS256 keyed with the public key).
  JwtFacts facts;
  const auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string()) return fail(JwtCheck::kAlgorithm, "no \"alg\" string in the header");
  out.alg = alg->get<std::string>();
  facts.alg = fact(out.alg);
  if (const auto kid = header.find("kid"); kid != header.end()) {
    if (!kid->is_string()) return fail(JwtCheck::kStructure, "\"kid\" is not a string", facts);
    out.kid = kid->get<std::string>();
    facts.kid = fact(out.kid);
  }
  if (out.alg != "RS256" && out.alg != "ES256") {
    return fail(JwtCheck::kAlgorithm, "alg " + facts.alg + " is not RS256 or ES256", facts);
  }
  if (header.contains("crit")) return fail(JwtCheck::kAlgorithm, "\"crit\" header extensions are not supported", facts);
  if (sig.empty()) return fail(JwtCheck::kStructure, "empty signature", facts);

  out.payload = nlohmann::json::parse(payload_text, nullptr, false);
  if (out.payload.is_discarded()) return fail(JwtCheck::kStructure, "payload is not JSON", facts);
  if (!out.payload.is_object()) return fail(JwtCheck::kStructure, "payload is not a JSON object", facts);
  facts.iss = fact(string_member(out.payload, "iss"));
  facts.sub = fact(string_member(out.payload, "sub"));
  return fail(JwtCheck::kOk, "", std::move(facts));
}

JwtVerdict verify_jwt(std::string_view token, const KeySet& keys, const JwtExpectations& expect,
                      WallTime now) {
  ParsedJwt parsed;
  JwtVerdict v = parse_jwt(token, parsed);
  if (!v.ok()) return v;
  JwtFacts& facts = v.facts;

  // 4-5. The key the header names, of the type the algorithm needs.
  if (parsed.kid.empty()) return fail(JwtCheck::kUnknownKid, "the header names no kid", facts);
  const JwtKey* key = keys.find(parsed.kid);
  if (key == nullptr) return fail(JwtCheck::kUnknownKid, "kid " + facts.kid + " is not in the issuer's keys", facts);
  if (parsed.alg != key->jws_alg()) {
    return fail(JwtCheck::kKey, "alg " + facts.alg + " with a key for " + key->jws_alg(), facts);
  }

  // 6. The signature, by libcjose. It reads the header itself: its reading of "alg" must be
  // the one checked above (e.g. no disagreement over duplicate members).
  cjose_err err{};
  cjose_jws_t* jws = cjose_jws_import(token.data(), token.size(), &err);
  if (jws == nullptr) return fail(JwtCheck::kStructure, "libcjose cannot read it", facts);
  const char* cjose_alg = cjose_header_get(cjose_jws_get_protected(jws), CJOSE_HDR_ALG, &err);
  if (cjose_alg == nullptr || parsed.alg != cjose_alg) {
    cjose_jws_release(jws);
    return fail(JwtCheck::kAlgorithm, "the header's alg is ambiguous", facts);
  }
  const bool verified = cjose_jws_verify(jws, key->jwk.get(), &err);
  cjose_jws_release(jws);
  if (!verified) return fail(JwtCheck::kSignature, "does not verify with kid " + facts.kid, facts);

  // 7. Claim types.
  const nlohmann::json& p = parsed.payload;
  const auto iss = p.find("iss");
  const auto sub = p.find("sub");
  const auto aud = p.find("aud");
  if (iss == p.end() || !iss->is_string()) return fail(JwtCheck::kClaims, "no \"iss\" string", facts);
  if (sub == p.end() || !sub->is_string()) return fail(JwtCheck::kClaims, "no \"sub\" string", facts);
  double exp = 0, nbf = 0;
  if (!numeric_date(p, "exp", exp)) return fail(JwtCheck::kClaims, "no \"exp\" number", facts);
  const bool has_nbf = p.contains("nbf");
  if (has_nbf && !numeric_date(p, "nbf", nbf)) return fail(JwtCheck::kClaims, "\"nbf\" is not a number", facts);
  if (aud == p.end() || !(aud->is_string() || aud->is_array())) {
    return fail(JwtCheck::kClaims, "no \"aud\" string or array", facts);
  }
  bool aud_match = false;
  std::string aud_text;
  if (aud->is_string()) {
    aud_match = aud->get_ref<const std::string&>() == expect.audience;
    aud_text = aud->get<std::string>();
  } else {
    for (const nlohmann::json& a : *aud) {
      if (!a.is_string()) return fail(JwtCheck::kClaims, "\"aud\" array holds a non-string", facts);
      aud_match = aud_match || a.get_ref<const std::string&>() == expect.audience;
      aud_text += (aud_text.empty() ? "" : ",") + a.get<std::string>();
    }
  }

  // 8-9. Issuer and audience.
  if (iss->get_ref<const std::string&>() != expect.issuer) {
    return fail(JwtCheck::kIssuer, "iss " + facts.iss + " is not the head's " + fact(expect.issuer), facts);
  }
  if (!aud_match) {
    return fail(JwtCheck::kAudience, "aud [" + fact(aud_text) + "] does not contain " + fact(expect.audience), facts);
  }

  // 10-11. Validity, with the skew either way.
  const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  const double skew = static_cast<double>(expect.skew.count());
  if (now_s > exp + skew) {
    return fail(JwtCheck::kExpired, "expired at " + date_text(exp) + ", " +
                                        seconds_text(now_s - exp) + " s ago (skew " +
                                        std::to_string(expect.skew.count()) + " s)", facts);
  }
  if (has_nbf && now_s + skew < nbf) {
    return fail(JwtCheck::kNotYetValid, "not valid before " + date_text(nbf) + ", " +
                                            seconds_text(nbf - now_s) + " s ahead (skew " +
                                            std::to_string(expect.skew.count()) + " s)", facts);
  }

  // 12. Last: a genuine token of another service account.
  if (sub->get_ref<const std::string&>() != expect.subject) {
    return fail(JwtCheck::kSubject, "sub " + facts.sub + " is not the head's " + fact(expect.subject), facts);
  }
  return fail(JwtCheck::kOk, "", std::move(facts));
}

bool read_identity(std::string_view token, JwtIdentity& out, std::string& error) {
  ParsedJwt parsed;
  const JwtVerdict v = parse_jwt(token, parsed);
  if (!v.ok()) {
    error = v.why();
    return false;
  }
  out.iss = string_member(parsed.payload, "iss");
  out.sub = string_member(parsed.payload, "sub");
  if (out.iss.empty() || out.sub.empty()) {
    error = "no \"iss\" and \"sub\" strings in its payload";
    return false;
  }
  return true;
}

}  // namespace irsafs
