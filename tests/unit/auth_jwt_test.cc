// The JWT checks (auth/jwt_verifier.h) and the key set (auth/key_set.h): every forged or wrong
// token of issue 14 is refused by the right check with the right status; RS256 and ES256 tokens
// of the head's issuer, audience and subject pass.
#include <gtest/gtest.h>

#include "auth/jwt_verifier.h"
#include "auth/key_set.h"
#include "jwt_test_keys.h"

namespace irsafs {
namespace {

using testing::b64url;
using testing::ec_key;
using testing::forge_hs256;
using testing::forge_token;
using testing::good_claims;
using testing::jwks_of;
using testing::rsa_key;
using testing::sign_token;
using testing::unix_seconds;
using testing::with_bad_signature;
using nlohmann::json;

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(KeySet::parse(jwks_of({&rsa_key(), &ec_key()}), keys, error)) << error;
    expect.issuer = testing::kTestIssuer;
    expect.audience = "irsafs";
    expect.subject = testing::kTestSubject;
  }
  JwtVerdict verify(const std::string& token) { return verify_jwt(token, keys, expect, now); }
  json claims() { return good_claims(now); }
  long long t() { return unix_seconds(now); }

  KeySet keys;
  JwtExpectations expect;
  WallTime now = WallTime(std::chrono::seconds(1'800'000'000));
};

#define EXPECT_REFUSED(verdict, check_, status_)                                   \
  do {                                                                             \
    const JwtVerdict v_ = (verdict);                                               \
    EXPECT_EQ(v_.check, (check_)) << "got " << v_.why();                           \
    EXPECT_EQ(v_.status(), (status_)) << v_.why();                                 \
  } while (0)

TEST_F(JwtTest, AcceptsRs256AndEs256) {
  for (const auto* key : {&rsa_key(), &ec_key()}) {
    const JwtVerdict v = verify(sign_token(*key, claims()));
    EXPECT_TRUE(v.ok()) << key->alg << ": " << v.why();
    EXPECT_EQ(v.status(), 200);
    EXPECT_EQ(v.facts.alg, key->alg);
    EXPECT_EQ(v.facts.kid, key->kid);
    EXPECT_EQ(v.facts.sub, testing::kTestSubject);
  }
}

TEST_F(JwtTest, AcceptsAudienceAsStringOrAmongOthers) {
  json c = claims();
  c["aud"] = "irsafs";
  EXPECT_TRUE(verify(sign_token(rsa_key(), c)).ok());
  c["aud"] = {"sts.amazonaws.com", "irsafs"};
  EXPECT_TRUE(verify(sign_token(rsa_key(), c)).ok());
  c.erase("nbf");  // nbf is optional
  EXPECT_TRUE(verify(sign_token(ec_key(), c)).ok());
}

TEST_F(JwtTest, BadSignatureIsRefused) {
  // A character in the middle of the signature changed (the last one may only carry padding bits).
  EXPECT_REFUSED(verify(with_bad_signature(sign_token(rsa_key(), claims()))), JwtCheck::kSignature, 401);
  EXPECT_REFUSED(verify(with_bad_signature(sign_token(ec_key(), claims()))), JwtCheck::kSignature, 401);
}

TEST_F(JwtTest, PayloadChangedAfterSigningIsRefused) {
  const std::string token = sign_token(rsa_key(), claims());
  const std::size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  json other = claims();
  other["sub"] = "system:serviceaccount:kube-system:admin";
  const std::string tampered = token.substr(0, dot1 + 1) + b64url(other.dump()) + token.substr(dot2);
  EXPECT_REFUSED(verify(tampered), JwtCheck::kSignature, 401);
}

TEST_F(JwtTest, SignedByAnotherKeyUnderAKnownKidIsRefused) {
  const testing::TestKey impostor = testing::make_ec_key(ec_key().kid);
  EXPECT_REFUSED(verify(sign_token(impostor, claims())), JwtCheck::kSignature, 401);
}

TEST_F(JwtTest, AlgNoneIsRefusedBeforeAnyKey) {
  const std::string payload = claims().dump();
  for (const std::string alg : {"none", "None", "NONE"}) {
    const json header = {{"alg", alg}, {"kid", rsa_key().kid}, {"typ", "JWT"}};
    // Unsigned as RFC 7519 §6 has it (empty signature), and with some bytes as a signature.
    EXPECT_REFUSED(verify(b64url(header.dump()) + "." + b64url(payload) + "."), JwtCheck::kAlgorithm, 401);
    const JwtVerdict v = verify(forge_token(header.dump(), payload, "x"));
    EXPECT_EQ(v.check, JwtCheck::kAlgorithm) << v.why();
    EXPECT_EQ(v.facts.alg, alg);
  }
}

TEST_F(JwtTest, Hs256KeyedWithThePublicKeyIsRefused) {
  // The algorithm-confusion forgery: HS256 with the issuer's public key as the HMAC secret,
  // under the RSA key's kid (and the EC key's).
  for (const auto* key : {&rsa_key(), &ec_key()}) {
    const json header = {{"alg", "HS256"}, {"kid", key->kid}, {"typ", "JWT"}};
    for (const std::string& secret : {key->public_jwk().dump(), key->public_jwk()["x"].is_string()
                                                                     ? key->public_jwk()["x"].get<std::string>()
                                                                     : key->public_jwk()["n"].get<std::string>()}) {
      EXPECT_REFUSED(verify(forge_hs256(header, claims(), secret)), JwtCheck::kAlgorithm, 401);
    }
  }
}

TEST_F(JwtTest, EveryOtherAlgorithmIsRefused) {
  for (const char* alg : {"HS256", "HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "ES512",
                          "EdDSA", "rs256", "", "RS256 "}) {
    const json header = {{"alg", alg}, {"kid", rsa_key().kid}};
    EXPECT_REFUSED(verify(forge_token(header.dump(), claims().dump(), "sig")), JwtCheck::kAlgorithm, 401);
  }
  EXPECT_REFUSED(verify(forge_token(R"({"kid":"rsa-1"})", claims().dump(), "sig")), JwtCheck::kAlgorithm, 401);
  EXPECT_REFUSED(verify(forge_token(R"({"alg":256,"kid":"rsa-1"})", claims().dump(), "sig")), JwtCheck::kAlgorithm, 401);
  // Extensions this verifier does not understand.
  EXPECT_REFUSED(verify(sign_token(rsa_key(), claims(), {{"crit", json::array({"exp"})}})), JwtCheck::kAlgorithm, 401);
}

TEST_F(JwtTest, AmbiguousAlgIsRefused) {
  // Duplicate "alg" members: whichever reading a parser takes, it is not accepted on the other's.
  const std::string header = R"({"alg":"RS256","kid":"rsa-1","alg":"HS256"})";
  const JwtVerdict v = verify(forge_token(header, claims().dump(), "sig"));
  EXPECT_NE(v.check, JwtCheck::kOk);
  EXPECT_EQ(v.status(), 401);
}

TEST_F(JwtTest, AlgorithmMustMatchTheKeyType) {
  // An ES256 signature under the RSA key's kid.
  testing::TestKey ec_as_rsa = testing::make_ec_key(rsa_key().kid);
  EXPECT_REFUSED(verify(sign_token(ec_as_rsa, claims())), JwtCheck::kKey, 401);
  testing::TestKey rsa_as_ec = rsa_key();
  rsa_as_ec.kid = ec_key().kid;
  EXPECT_REFUSED(verify(sign_token(rsa_as_ec, claims())), JwtCheck::kKey, 401);
}

TEST_F(JwtTest, UnknownOrMissingKidIsRefused) {
  testing::TestKey other = rsa_key();
  other.kid = "rotated-2";
  const JwtVerdict v = verify(sign_token(other, claims()));
  EXPECT_REFUSED(v, JwtCheck::kUnknownKid, 401);
  EXPECT_EQ(v.facts.kid, "rotated-2");
  const json header = {{"alg", "RS256"}};
  EXPECT_REFUSED(verify(forge_token(header.dump(), claims().dump(), "sig")), JwtCheck::kUnknownKid, 401);
  EXPECT_REFUSED(verify(forge_token(R"({"alg":"RS256","kid":7})", claims().dump(), "sig")), JwtCheck::kStructure, 401);
}

TEST_F(JwtTest, ExpiryWithSixtySecondsOfSkew) {
  json c = claims();
  c["exp"] = t() - 60;  // just within the skew
  EXPECT_TRUE(verify(sign_token(rsa_key(), c)).ok());
  c["exp"] = t() - 61;
  const JwtVerdict v = verify(sign_token(rsa_key(), c));
  EXPECT_REFUSED(v, JwtCheck::kExpired, 401);
  EXPECT_NE(v.detail.find("61 s ago"), std::string::npos) << v.detail;
  c["exp"] = t() - 86400;
  EXPECT_REFUSED(verify(sign_token(ec_key(), c)), JwtCheck::kExpired, 401);
  c["exp"] = -1e300;
  EXPECT_REFUSED(verify(sign_token(ec_key(), c)), JwtCheck::kExpired, 401);
  c["exp"] = static_cast<double>(t()) - 60.5;  // fractional NumericDate
  EXPECT_REFUSED(verify(sign_token(ec_key(), c)), JwtCheck::kExpired, 401);
}

TEST_F(JwtTest, NotBeforeWithSixtySecondsOfSkew) {
  json c = claims();
  c["nbf"] = t() + 60;
  EXPECT_TRUE(verify(sign_token(rsa_key(), c)).ok());
  c["nbf"] = t() + 61;
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kNotYetValid, 401);
  c["nbf"] = 1e300;
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kNotYetValid, 401);
  // Beyond what a time_point holds: said as a number (no overflow converting it).
  c["nbf"] = 5e10;
  const JwtVerdict far = verify(sign_token(rsa_key(), c));
  EXPECT_REFUSED(far, JwtCheck::kNotYetValid, 401);
  EXPECT_NE(far.detail.find("not valid before 50000000000"), std::string::npos) << far.detail;
  c["nbf"] = 4102444800;  // 2100-01-01
  EXPECT_NE(verify(sign_token(rsa_key(), c)).detail.find("not valid before 2100-01-01T00:00:00Z"), std::string::npos);
}

TEST_F(JwtTest, WrongAudienceIsRefused) {
  json c = claims();
  c["aud"] = "sts.amazonaws.com";
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kAudience, 401);
  c["aud"] = {"sts.amazonaws.com", "https://kubernetes.default.svc"};
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kAudience, 401);
  c["aud"] = json::array();
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kAudience, 401);
  c["aud"] = "irsafs-other";
  EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kAudience, 401);
}

TEST_F(JwtTest, WrongIssuerIsRefused) {
  json c = claims();
  c["iss"] = "https://oidc.eks.us-west-2.amazonaws.com/id/OTHERCLUSTER";
  const JwtVerdict v = verify(sign_token(rsa_key(), c));
  EXPECT_REFUSED(v, JwtCheck::kIssuer, 401);
  EXPECT_EQ(v.facts.iss, "https://oidc.eks.us-west-2.amazonaws.com/id/OTHERCLUSTER");
}

TEST_F(JwtTest, AnotherSubjectIsForbiddenButOnlyWhenAllElseIsValid) {
  json c = claims();
  c["sub"] = "system:serviceaccount:domino-compute:run-9999";
  const JwtVerdict v = verify(sign_token(ec_key(), c));
  EXPECT_REFUSED(v, JwtCheck::kSubject, 403);
  EXPECT_EQ(v.facts.sub, "system:serviceaccount:domino-compute:run-9999");
  // Another subject that is also expired is just invalid.
  c["exp"] = t() - 3600;
  EXPECT_REFUSED(verify(sign_token(ec_key(), c)), JwtCheck::kExpired, 401);
  c = claims();
  c["sub"] = "system:serviceaccount:domino-compute:run-9999";
  c["aud"] = "sts.amazonaws.com";
  EXPECT_REFUSED(verify(sign_token(ec_key(), c)), JwtCheck::kAudience, 401);
}

TEST_F(JwtTest, MalformedTokensAreRefused) {
  const std::string good = sign_token(rsa_key(), claims());
  const std::string h = good.substr(0, good.find('.'));
  const std::string s = good.substr(good.rfind('.') + 1);
  EXPECT_REFUSED(verify(""), JwtCheck::kMissing, 401);
  EXPECT_REFUSED(verify("abc"), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify("a.b"), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(good + ".extra"), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(".."), JwtCheck::kStructure, 401);
  // Bad base64url: characters outside the alphabet, in each part.
  EXPECT_REFUSED(verify("!!!!." + b64url(claims().dump()) + "." + s), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + ".e30*." + s), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + "." + b64url(claims().dump()) + ".a b"), JwtCheck::kStructure, 401);
  // Bad JSON.
  EXPECT_REFUSED(verify(forge_token("{\"alg\":", claims().dump(), "sig")), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + "." + b64url("{\"sub\": ") + "." + s), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + "." + b64url("\xff\xfe") + "." + s), JwtCheck::kStructure, 401);
  // JSON, but not objects.
  EXPECT_REFUSED(verify(forge_token("[\"RS256\"]", claims().dump(), "sig")), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + "." + b64url("[1,2]") + "." + s), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + "." + b64url("\"irsafs\"") + "." + s), JwtCheck::kStructure, 401);
  EXPECT_REFUSED(verify(h + ".." + s), JwtCheck::kStructure, 401);
  // No signature.
  EXPECT_REFUSED(verify(h + "." + b64url(claims().dump()) + "."), JwtCheck::kStructure, 401);
}

TEST_F(JwtTest, PaddingAndImpossibleLengthsAreRefusedWithoutReachingLibcjose) {
  // libcjose 0.6.2.1 aborts the process on "0=" (found by fuzz/jwt_fuzz.cc): each part with it
  // is refused, as is padding at all (RFC 7515 §2) and a length no encoding has.
  const std::string good = sign_token(rsa_key(), claims());
  const std::string h = good.substr(0, good.find('.'));
  const std::string p = good.substr(good.find('.') + 1, good.rfind('.') - good.find('.') - 1);
  const std::string s = good.substr(good.rfind('.') + 1);
  for (const std::string& bad : {h + "." + p + ".0=", "0=." + p + "." + s, h + ".0=." + s, h + "." + p + "." + s + "==",
                                 h + "." + p + ".AAAAB", h + "." + p + "." + s + "=garbage"}) {
    EXPECT_REFUSED(verify(bad), JwtCheck::kStructure, 401);
  }
  JwtIdentity id;
  std::string error;
  EXPECT_FALSE(read_identity("..0=", id, error));
}

TEST_F(JwtTest, HugeTokensAreRefusedBeforeDecoding) {
  json c = claims();
  c["padding"] = std::string(9000, 'x');
  const JwtVerdict v = verify(sign_token(rsa_key(), c));
  EXPECT_REFUSED(v, JwtCheck::kSize, 401);
  EXPECT_TRUE(v.facts.alg.empty());  // nothing was decoded
  EXPECT_REFUSED(verify(std::string(kMaxTokenBytes + 1, 'a')), JwtCheck::kSize, 401);
  json header = {{"alg", "RS256"}, {"kid", std::string(2000, 'k')}};
  EXPECT_REFUSED(verify(forge_token(header.dump(), claims().dump(), "sig")), JwtCheck::kSize, 401);
}

TEST_F(JwtTest, MissingOrMistypedClaimsAreRefused) {
  for (const char* name : {"iss", "sub", "exp", "aud"}) {
    json c = claims();
    c.erase(name);
    EXPECT_REFUSED(verify(sign_token(rsa_key(), c)), JwtCheck::kClaims, 401) ;
  }
  const std::vector<std::pair<const char*, json>> wrong = {
      {"iss", 42},           {"sub", json::array({testing::kTestSubject})},
      {"exp", "tomorrow"},   {"exp", nullptr},
      {"nbf", "yesterday"},  {"aud", 1},
      {"aud", json::array({"irsafs", 7})}, {"aud", json::object({{"irsafs", true}})},
      {"exp", true},
  };
  for (const auto& [name, value] : wrong) {
    json c = claims();
    c[name] = value;
    const JwtVerdict v = verify(sign_token(ec_key(), c));
    EXPECT_EQ(v.check, JwtCheck::kClaims) << name << "=" << value.dump() << ": " << v.why();
  }
}

TEST_F(JwtTest, VerdictsNeverQuoteTheTokenOrSignature) {
  const std::string token = with_bad_signature(sign_token(rsa_key(), claims()));
  const std::string sig = token.substr(token.rfind('.') + 1);
  const JwtVerdict v = verify(token);
  EXPECT_EQ(v.why().find(sig.substr(0, 16)), std::string::npos);
  // Control characters of a forged kid cannot break the log line.
  json header = {{"alg", "RS256"}, {"kid", "evil\nWARN fake line"}};
  const JwtVerdict k = verify(forge_token(header.dump(), claims().dump(), "sig"));
  EXPECT_EQ(k.why().find('\n'), std::string::npos);
  EXPECT_EQ(k.facts.kid.find('\n'), std::string::npos);
}

TEST(JwtIdentityTest, ReadsIssuerAndSubjectOfTheHeadsToken) {
  const WallTime now = WallTime(std::chrono::seconds(1'800'000'000));
  JwtIdentity id;
  std::string error;
  ASSERT_TRUE(read_identity(sign_token(rsa_key(), good_claims(now)), id, error)) << error;
  EXPECT_EQ(id.iss, testing::kTestIssuer);
  EXPECT_EQ(id.sub, testing::kTestSubject);
  json c = good_claims(now);
  c.erase("sub");
  EXPECT_FALSE(read_identity(sign_token(rsa_key(), c), id, error));
  EXPECT_NE(error.find("sub"), std::string::npos) << error;
  EXPECT_FALSE(read_identity("not-a-token", id, error));
  EXPECT_NE(error.find("malformed"), std::string::npos) << error;
}

TEST(KeySetTest, KeepsOnlyKeysATokenMaySignWith) {
  json doc = json::parse(jwks_of({&rsa_key(), &ec_key()}));
  json enc = rsa_key().public_jwk();
  enc["kid"] = "enc-1";
  enc["use"] = "enc";
  json nokid = ec_key().public_jwk();
  nokid.erase("kid");
  json wrong_alg = ec_key().public_jwk();
  wrong_alg["kid"] = "ec-as-rs";
  wrong_alg["alg"] = "RS256";
  const json oct = {{"kty", "oct"}, {"kid", "hmac-1"}, {"k", b64url("secretsecretsecretsecret")}};
  json small = testing::make_rsa_key("rsa-1024", 1024).public_jwk();
  json p384 = testing::make_ec_key("ec-384", CJOSE_JWK_EC_P_384).public_jwk();
  p384.erase("alg");
  json dup = ec_key().public_jwk();  // a second key under a kid already taken
  json broken = {{"kty", "RSA"}, {"kid", "broken"}, {"n", "!!"}, {"e", "AQAB"}};
  json aborts = ec_key().public_jwk();  // "0=" aborts libcjose 0.6.2.1's decoder
  aborts["kid"] = "aborts";
  aborts["x"] = "0=";
  for (const json& k : {enc, nokid, wrong_alg, oct, small, p384, dup, broken, aborts, json("x")}) doc["keys"].push_back(k);

  KeySet keys;
  std::string error;
  ASSERT_TRUE(KeySet::parse(doc.dump(), keys, error)) << error;
  ASSERT_EQ(keys.keys().size(), 2u) << keys.describe();
  EXPECT_EQ(keys.skipped(), 10u);
  ASSERT_NE(keys.find("rsa-1"), nullptr);
  EXPECT_EQ(keys.find("rsa-1")->type, JwtKey::Type::kRsa);
  ASSERT_NE(keys.find("ec-1"), nullptr);
  EXPECT_EQ(keys.find("ec-1")->type, JwtKey::Type::kEc);
  for (const char* kid : {"enc-1", "ec-as-rs", "hmac-1", "rsa-1024", "ec-384", "broken", "aborts"}) {
    EXPECT_EQ(keys.find(kid), nullptr) << kid;
  }
  EXPECT_EQ(keys.describe(), "2 keys (kid rsa-1 RS256, kid ec-1 ES256), 10 skipped");
}

TEST(KeySetTest, RefusesWhatIsNotAJwks) {
  KeySet keys;
  std::string error;
  EXPECT_FALSE(KeySet::parse("<html>", keys, error));
  EXPECT_EQ(error, "JWKS is not JSON");
  EXPECT_FALSE(KeySet::parse("[]", keys, error));
  EXPECT_EQ(error, "JWKS has no \"keys\" array");
  EXPECT_FALSE(KeySet::parse(R"({"keys": {}})", keys, error));
  EXPECT_FALSE(KeySet::parse(R"({"keys": []})", keys, error));
  EXPECT_NE(error.find("no usable signing key"), std::string::npos) << error;
  EXPECT_FALSE(KeySet::parse(std::string(kMaxJwksBytes + 1, ' '), keys, error));
  EXPECT_NE(error.find("larger than"), std::string::npos) << error;
}

TEST(KeySetTest, PrivateKeyMaterialIsNotKept) {
  // A JWKS that wrongly carries the private key: the imported key is public only.
  cjose_err err{};
  char* priv = cjose_jwk_to_json(ec_key().jwk.get(), true, &err);
  json k = json::parse(priv);
  cjose_get_dealloc()(priv);
  ASSERT_TRUE(k.contains("d"));
  k["kid"] = "leaky";
  KeySet keys;
  std::string error;
  ASSERT_TRUE(KeySet::parse(json{{"keys", {k}}}.dump(), keys, error)) << error;
  char* back = cjose_jwk_to_json(keys.find("leaky")->jwk.get(), true, &err);
  EXPECT_FALSE(json::parse(back).contains("d"));
  cjose_get_dealloc()(back);
}

}  // namespace
}  // namespace irsafs
