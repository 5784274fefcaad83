// Test-only signing keys and token minting for the auth tests: RSA and EC keys generated per
// process with libcjose, JWKS documents of their public halves, tokens signed by libcjose, and
// forged tokens assembled by hand (any header, payload and signature bytes).
#pragma once

#include <cjose/cjose.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/clock.h"

namespace irsafs::testing {

inline std::string b64url(std::string_view bytes) {
  char* out = nullptr;
  std::size_t len = 0;
  cjose_err err{};
  if (bytes.empty()) return "";
  if (!cjose_base64url_encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &out, &len, &err)) {
    ADD_FAILURE() << "base64url encode: " << err.message;
    return "";
  }
  std::string s(out, len);
  cjose_get_dealloc()(out);
  return s;
}

struct TestKey {
  std::shared_ptr<cjose_jwk_t> jwk;  // private
  std::string kid;
  std::string alg;  // RS256 or ES256

  // The public JWK, with kid, "use": "sig" and "alg".
  nlohmann::json public_jwk() const {
    cjose_err err{};
    char* text = cjose_jwk_to_json(jwk.get(), false, &err);
    nlohmann::json j = nlohmann::json::parse(text);
    cjose_get_dealloc()(text);
    j["kid"] = kid;
    j["use"] = "sig";
    j["alg"] = alg;
    return j;
  }
};

inline TestKey make_rsa_key(std::string kid, std::size_t bits = 2048) {
  static const uint8_t e[] = {0x01, 0x00, 0x01};
  cjose_err err{};
  cjose_jwk_t* k = cjose_jwk_create_RSA_random(bits, e, sizeof e, &err);
  EXPECT_NE(k, nullptr) << err.message;
  return {std::shared_ptr<cjose_jwk_t>(k, [](cjose_jwk_t* p) { cjose_jwk_release(p); }), std::move(kid), "RS256"};
}

inline TestKey make_ec_key(std::string kid, cjose_jwk_ec_curve crv = CJOSE_JWK_EC_P_256) {
  cjose_err err{};
  cjose_jwk_t* k = cjose_jwk_create_EC_random(crv, &err);
  EXPECT_NE(k, nullptr) << err.message;
  return {std::shared_ptr<cjose_jwk_t>(k, [](cjose_jwk_t* p) { cjose_jwk_release(p); }), std::move(kid), "ES256"};
}

// Generated once per process: RSA generation takes a while.
inline const TestKey& rsa_key() {
  static const TestKey k = make_rsa_key("rsa-1");
  return k;
}
inline const TestKey& ec_key() {
  static const TestKey k = make_ec_key("ec-1");
  return k;
}

inline std::string jwks_of(const std::vector<const TestKey*>& keys) {
  nlohmann::json doc = {{"keys", nlohmann::json::array()}};
  for (const TestKey* k : keys) doc["keys"].push_back(k->public_jwk());
  return doc.dump();
}

// Signed by libcjose with `key` (header: alg of the key, its kid, typ JWT, plus `extra`).
inline std::string sign_token(const TestKey& key, const nlohmann::json& payload,
                              const nlohmann::json& extra_header = nlohmann::json::object()) {
  cjose_err err{};
  cjose_header_t* h = cjose_header_new(&err);
  cjose_header_set(h, "alg", key.alg.c_str(), &err);
  cjose_header_set(h, "kid", key.kid.c_str(), &err);
  cjose_header_set(h, "typ", "JWT", &err);
  for (const auto& [name, value] : extra_header.items()) {
    if (value.is_string()) {
      cjose_header_set(h, name.c_str(), value.get<std::string>().c_str(), &err);
    } else {
      cjose_header_set_raw(h, name.c_str(), value.dump().c_str(), &err);
    }
  }
  const std::string text = payload.dump();
  cjose_jws_t* jws = cjose_jws_sign(key.jwk.get(), h, reinterpret_cast<const uint8_t*>(text.data()), text.size(), &err);
  cjose_header_release(h);
  EXPECT_NE(jws, nullptr) << err.message;
  if (jws == nullptr) return "";
  const char* compact = nullptr;
  cjose_jws_export(jws, &compact, &err);
  std::string out(compact);
  cjose_jws_release(jws);
  return out;
}

// A token assembled by hand: whatever header, payload and signature bytes.
// `token` with one character of its signature changed to another base64url character: still
// well-formed, no longer the signature (flipping a bit could make it a character that is not
// base64url, and the token would be refused as malformed instead).
inline std::string with_bad_signature(std::string token) {
  char& c = token[token.rfind('.') + 20];
  c = c == 'A' ? 'B' : 'A';
  return token;
}

inline std::string forge_token(const std::string& header, const std::string& payload, const std::string& signature) {
  return b64url(header) + "." + b64url(payload) + "." + b64url(signature);
}

// HS256 over the signing input, keyed with `secret` (e.g. the RSA public key: the classic
// algorithm-confusion forgery).
inline std::string forge_hs256(const nlohmann::json& header, const nlohmann::json& payload, std::string_view secret) {
  const std::string input = b64url(header.dump()) + "." + b64url(payload.dump());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + b64url(std::string(reinterpret_cast<const char*>(mac), len));
}

inline long long unix_seconds(WallTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// The claims of a good token at `now` (issuer, audience, subject of the tests).
inline const char* kTestIssuer = "https://oidc.eks.us-west-2.amazonaws.com/id/TESTCLUSTER";
inline const char* kTestSubject = "system:serviceaccount:domino-compute:run-1234";
inline nlohmann::json good_claims(WallTime now) {
  const long long t = unix_seconds(now);
  return {{"iss", kTestIssuer},     {"sub", kTestSubject}, {"aud", {"irsafs"}},
          {"iat", t - 10},          {"nbf", t - 10},       {"exp", t + 3600},
          {"kubernetes.io", {{"namespace", "domino-compute"}}}};
}

}  // namespace irsafs::testing
