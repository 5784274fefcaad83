// libFuzzer target for the peer token checks (auth/jwt_verifier.cc) and the JWKS parser
// (auth/key_set.cc): no crash, no sanitizer report, and these invariants:
//   * a token made up by the fuzzer is never accepted (it cannot carry a valid signature);
//   * a payload the fuzzer chose, signed here with a real key, is accepted only when its claims
//     really are the expected ones (iss, sub, aud, exp/nbf within the skew);
//   * a verdict's status matches its check, its message is one printable line, its facts short.
// The first byte picks the mode: 0 the input is a token; 1 the input is a payload, signed with
// an EC test key; 2 the input is a token header, with a good payload and a made-up signature;
// 3 the input is a JWKS; anything else: the head's own token (read_identity).
#include <cjose/cjose.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "auth/jwt_verifier.h"
#include "auth/key_set.h"

namespace {

using irsafs::JwtCheck;
using irsafs::JwtVerdict;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

constexpr const char* kIssuer = "https://oidc.example/id/FUZZ";
constexpr const char* kSubject = "system:serviceaccount:ns:sa";
const irsafs::WallTime kNow{std::chrono::seconds(1'800'000'000)};

struct Fixture {
  cjose_jwk_t* ec = nullptr;  // private, kid "ec-1"
  irsafs::KeySet keys;
  irsafs::JwtExpectations expect{kIssuer, "irsafs", kSubject, std::chrono::seconds(60)};

  Fixture() {
    cjose_err err{};
    ec = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err);
    static const uint8_t e[] = {1, 0, 1};
    cjose_jwk_t* rsa = cjose_jwk_create_RSA_random(2048, e, sizeof e, &err);
    if (ec == nullptr || rsa == nullptr) fail("key generation");
    nlohmann::json doc = {{"keys", nlohmann::json::array()}};
    for (auto [k, kid] : {std::pair{ec, "ec-1"}, std::pair{rsa, "rsa-1"}}) {
      char* text = cjose_jwk_to_json(k, false, &err);
      nlohmann::json j = nlohmann::json::parse(text);
      cjose_get_dealloc()(text);
      j["kid"] = kid;
      doc["keys"].push_back(j);
    }
    cjose_jwk_release(rsa);
    std::string error;
    if (!irsafs::KeySet::parse(doc.dump(), keys, error)) fail("test JWKS does not parse");
  }

  std::string sign(std::string_view payload) const {
    cjose_err err{};
    cjose_header_t* h = cjose_header_new(&err);
    cjose_header_set(h, "alg", "ES256", &err);
    cjose_header_set(h, "kid", "ec-1", &err);
    cjose_jws_t* jws = cjose_jws_sign(ec, h, reinterpret_cast<const uint8_t*>(payload.data()), payload.size(), &err);
    cjose_header_release(h);
    if (jws == nullptr) return "";
    const char* compact = nullptr;
    cjose_jws_export(jws, &compact, &err);
    std::string out(compact);
    cjose_jws_release(jws);
    return out;
  }
};

std::string b64url(std::string_view bytes) {
  if (bytes.empty()) return "";
  char* out = nullptr;
  std::size_t len = 0;
  cjose_err err{};
  if (!cjose_base64url_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &out, &len, &err)) return "";
  std::string s(out, len);
  cjose_get_dealloc()(out);
  return s;
}

void check_verdict(const JwtVerdict& v) {
  const int want = v.check == JwtCheck::kOk ? 200 : v.check == JwtCheck::kSubject ? 403 : 401;
  if (v.status() != want) fail("status does not match the check");
  for (char c : v.why()) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) fail("control character in a verdict");
  }
  for (const std::string* f : {&v.facts.alg, &v.facts.kid, &v.facts.iss, &v.facts.sub}) {
    if (f->size() > 131) fail("a fact is longer than its limit");
  }
}

// The claims of an accepted payload, checked independently of the verifier.
void check_accepted_claims(std::string_view payload, const irsafs::JwtExpectations& expect) {
  const nlohmann::json p = nlohmann::json::parse(payload, nullptr, false);
  if (!p.is_object()) fail("accepted a payload that is not an object");
  if (p.value("iss", nlohmann::json()) != expect.issuer) fail("accepted another issuer");
  if (p.value("sub", nlohmann::json()) != expect.subject) fail("accepted another subject");
  const nlohmann::json aud = p.value("aud", nlohmann::json());
  const bool aud_ok = aud == expect.audience ||
                      (aud.is_array() && std::find(aud.begin(), aud.end(), expect.audience) != aud.end());
  if (!aud_ok) fail("accepted another audience");
  const double now = 1'800'000'000.0;
  if (!p.contains("exp") || !p["exp"].is_number() || !(p["exp"].get<double>() + 60 >= now)) fail("accepted an expired token");
  if (p.contains("nbf") && !(p["nbf"].is_number() && p["nbf"].get<double>() <= now + 60)) fail("accepted a token before nbf");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Fixture fx;
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  switch (mode) {
    case 0: {
      const JwtVerdict v = irsafs::verify_jwt(input, fx.keys, fx.expect, kNow);
      check_verdict(v);
      if (v.ok()) fail("accepted a token the fuzzer made up");
      break;
    }
    case 1: {
      if (input.size() > 6000) return 0;
      const std::string token = fx.sign(input);
      if (token.empty()) return 0;
      const JwtVerdict v = irsafs::verify_jwt(token, fx.keys, fx.expect, kNow);
      check_verdict(v);
      if (v.ok()) check_accepted_claims(input, fx.expect);
      break;
    }
    case 2: {
      const nlohmann::json claims = {{"iss", kIssuer}, {"sub", kSubject}, {"aud", "irsafs"}, {"exp", 1'800'000'100}};
      const std::string token = b64url(input) + "." + b64url(claims.dump()) + "." + b64url("not a signature");
      const JwtVerdict v = irsafs::verify_jwt(token, fx.keys, fx.expect, kNow);
      check_verdict(v);
      if (v.ok()) fail("accepted a made-up signature under a fuzzed header");
      break;
    }
    case 3: {
      irsafs::KeySet keys;
      std::string error;
      if (irsafs::KeySet::parse(input, keys, error)) {
        if (keys.empty()) fail("a parsed JWKS without keys");
        (void)keys.describe();
        for (const auto& k : keys.keys()) {
          if (k.kid.empty() || k.jwk == nullptr) fail("a key without kid or key");
        }
      } else if (error.empty()) {
        fail("a refused JWKS without a reason");
      }
      break;
    }
    default: {
      irsafs::JwtIdentity id;
      std::string error;
      if (irsafs::read_identity(input, id, error)) {
        if (id.iss.empty() || id.sub.empty()) fail("an identity without iss or sub");
      } else if (error.empty()) {
        fail("an unreadable identity without a reason");
      }
      break;
    }
  }
  return 0;
}
