#include "auth/key_set.h"

#include <cjose/cjose.h>

#include <nlohmann/json.hpp>

#include "auth/base64url.h"
#include "common/text.h"

namespace irsafs {
namespace {

constexpr std::size_t kMinRsaBits = 2048;
constexpr std::size_t kMaxKeys = 100;

// One key of the set: imported and kept, or skipped (false).
bool import_key(const nlohmann::json& entry, JwtKey& out) {
  if (!entry.is_object()) return false;
  const auto str = [&](const char* name) -> std::string {
    const auto it = entry.find(name);
    return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string kty = str("kty");
  const std::string use = str("use");
  if (entry.contains("use") && use != "sig") return false;  // an encryption key signs nothing
  out.kid = str("kid");
  out.alg = str("alg");
  if (out.kid.empty()) return false;  // a token names its key by kid; a key without one is unreachable
  if (kty == "RSA") {
    out.type = JwtKey::Type::kRsa;
  } else if (kty == "EC") {
    out.type = JwtKey::Type::kEc;
  } else {
    return false;  // "oct" (a shared secret) never; OKP and others are not accepted
  }
  if (!out.alg.empty() && out.alg != out.jws_alg()) return false;

  // Only the public parts go to libcjose: a JWKS that (wrongly) carries a private key does not
  // make this process hold it.
  nlohmann::json pub = nlohmann::json::object();
  for (const char* name : {"kty", "kid", "n", "e", "crv", "x", "y"}) {
    if (const auto it = entry.find(name); it != entry.end()) pub[name] = *it;
  }
  // libcjose aborts on some malformed base64url (base64url.h): the key's numbers are checked first.
  for (const char* name : {"n", "e", "x", "y"}) {
    const auto it = pub.find(name);
    if (it != pub.end() && (!it->is_string() || !is_unpadded_base64url(it->get_ref<const std::string&>()))) return false;
  }
  const std::string text = pub.dump();
  cjose_err err{};
  cjose_jwk_t* jwk = cjose_jwk_import(text.data(), text.size(), &err);
  if (jwk == nullptr) return false;
  out.jwk.reset(jwk, [](cjose_jwk_t* k) { cjose_jwk_release(k); });
  const cjose_jwk_kty_t got = cjose_jwk_get_kty(jwk, &err);
  if (out.type == JwtKey::Type::kRsa) {
    if (got != CJOSE_JWK_KTY_RSA || cjose_jwk_get_keysize(jwk, &err) < kMinRsaBits) return false;
  } else {
    if (got != CJOSE_JWK_KTY_EC || cjose_jwk_EC_get_curve(jwk, &err) != CJOSE_JWK_EC_P_256) return false;
  }
  return true;
}

}  // namespace

bool KeySet::parse(std::string_view json, KeySet& out, std::string& error) {
  out = KeySet();
  if (json.size() > kMaxJwksBytes) {
    error = "JWKS larger than " + std::to_string(kMaxJwksBytes) + " bytes";
    return false;
  }
  const nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    error = "JWKS is not JSON";
    return false;
  }
  const auto keys = doc.is_object() ? doc.find("keys") : doc.end();
  if (!doc.is_object() || keys == doc.end() || !keys->is_array()) {
    error = "JWKS has no \"keys\" array";
    return false;
  }
  for (const nlohmann::json& entry : *keys) {
    if (out.keys_.size() == kMaxKeys) {
      ++out.skipped_;
      continue;
    }
    JwtKey key;
    if (!import_key(entry, key) || out.find(key.kid) != nullptr) {
      ++out.skipped_;
      continue;
    }
    out.keys_.push_back(std::move(key));
  }
  if (out.keys_.empty()) {
    error = "JWKS has no usable signing key (RSA >= 2048 bits or EC P-256, with a kid; " +
            std::to_string(out.skipped_) + " skipped)";
    return false;
  }
  return true;
}

const JwtKey* KeySet::find(std::string_view kid) const {
  for (const JwtKey& k : keys_) {
    if (k.kid == kid) return &k;
  }
  return nullptr;
}

std::string KeySet::describe() const {
  std::string out = std::to_string(keys_.size()) + (keys_.size() == 1 ? " key (" : " keys (");
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (i > 0) out += ", ";
    out += "kid " + printable(keys_[i].kid, 64) + " " + keys_[i].jws_alg();
  }
  out += ")";
  if (skipped_ > 0) out += ", " + std::to_string(skipped_) + " skipped";
  return out;
}

}  // namespace irsafs
