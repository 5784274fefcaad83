"""Self-test of the OIDC issuer stand-in (tests/standin/oidc_issuer.py): discovery and JWKS over
HTTPS with the test CA, tokens that PyJWT verifies with the published keys, rotation, forged
tokens that really are forged, the failure knobs, and program mode. No irsafs involved."""
from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jwt
import pytest

from conftest import HERE

sys.path.insert(0, str(HERE.parent / "standin"))
from oidc_issuer import OidcIssuer  # noqa: E402
from helpers import wait_until  # noqa: E402


@pytest.fixture
def issuer(pki):
    with OidcIssuer(pki=pki) as iss:
        yield iss


def get_json(url: str, ca_file: str, timeout: float = 10):
    ctx = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


def verify(token: str, jwks: dict, issuer: str, audience: str = "irsafs") -> dict:
    keys = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=audience, issuer=issuer)


def header_of(token: str) -> dict:
    h = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


def test_discovery_and_jwks_over_https_with_the_test_ca(issuer):
    doc = get_json(issuer.discovery_url, issuer.ca_file)
    assert doc["issuer"] == issuer.issuer
    assert issuer.issuer.startswith("https://127.0.0.1:") and issuer.issuer.endswith("/id/TESTCLUSTER")
    assert doc["jwks_uri"] == issuer.jwks_uri
    jwks = get_json(doc["jwks_uri"], issuer.ca_file)
    assert [(k["kty"], k["alg"], k["use"]) for k in jwks["keys"]] == [("RSA", "RS256", "sig"), ("EC", "ES256", "sig")]
    assert all("d" not in k for k in jwks["keys"]), "private key material in the JWKS"
    assert issuer.counts() == {"discovery": 1, "jwks": 1}
    # Not trusted without the test CA.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(issuer.discovery_url, context=ssl.create_default_context(), timeout=10)


def test_minted_tokens_verify_with_the_published_keys(issuer):
    jwks = issuer.jwks()
    for alg in ("RS256", "ES256"):
        token = issuer.mint(alg=alg, sub="system:serviceaccount:ns:sa")
        assert header_of(token)["alg"] == alg
        claims = verify(token, jwks, issuer.issuer)
        assert claims["sub"] == "system:serviceaccount:ns:sa"
        assert claims["aud"] == ["irsafs"]
        assert claims["nbf"] <= time.time() < claims["exp"]
    # Any claims, including wrong ones; OMIT leaves one out.
    token = issuer.mint(aud="sts.amazonaws.com", iss="https://elsewhere", exp_in=-120, sub=OidcIssuer.OMIT)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == ["sts.amazonaws.com"] and claims["iss"] == "https://elsewhere"
    assert claims["exp"] < time.time() and "sub" not in claims
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token, jwks, "https://elsewhere")
    with pytest.raises(jwt.InvalidAudienceError):
        verify(issuer.mint(aud="sts.amazonaws.com"), jwks, issuer.issuer)


def test_rotation_and_unpublished_keys(issuer):
    old = issuer.key(alg="RS256").kid
    new = issuer.rotate("RSA")
    kids = [k["kid"] for k in get_json(issuer.jwks_uri, issuer.ca_file)["keys"]]
    assert new in kids and old not in kids
    assert header_of(issuer.mint())["kid"] == new
    # A retired key still signs: its tokens name a kid the JWKS does not have.
    stale = issuer.mint(kid=old)
    assert header_of(stale)["kid"] == old
    hidden = issuer.add_key("EC", kid="not-yet", publish=False)
    assert header_of(issuer.mint(kid=hidden))["kid"] == "not-yet"
    assert "not-yet" not in [k["kid"] for k in issuer.jwks()["keys"]]


def test_forged_tokens_do_not_verify(issuer):
    jwks = issuer.jwks()
    none = issuer.forge_alg_none()
    assert header_of(none)["alg"] == "none" and none.endswith(".")
    hs = issuer.forge_hs256_with_public_key()
    assert header_of(hs)["alg"] == "HS256" and header_of(hs)["kid"] == issuer.key().kid
    hs_jwk = issuer.forge_hs256_with_public_key(secret="jwk")
    for forged in (none, hs, hs_jwk, issuer.forge_bad_signature(), issuer.forge_bad_signature("ES256")):
        with pytest.raises(jwt.InvalidTokenError):
            verify(forged, jwks, issuer.issuer)


def test_failure_knobs(issuer):
    issuer.set_status("jwks", 500)
    with pytest.raises(urllib.error.HTTPError) as e:
        get_json(issuer.jwks_uri, issuer.ca_file)
    assert e.value.code == 500
    issuer.set_status("jwks", None)
    assert get_json(issuer.jwks_uri, issuer.ca_file)["keys"]
    port = issuer.port
    issuer.set_down(True)
    with pytest.raises(urllib.error.URLError):
        get_json(issuer.discovery_url, issuer.ca_file, timeout=5)
    issuer.set_down(False)
    assert issuer.port == port
    assert get_json(issuer.discovery_url, issuer.ca_file)["issuer"] == issuer.issuer


def test_token_and_jwks_files_are_replaced_atomically(issuer, tmp_path):
    path = str(tmp_path / "token")
    issuer.write_token(path, issuer.mint())
    first = os.stat(path).st_ino
    issuer.write_token(path, issuer.mint(sub="system:serviceaccount:ns:other"))
    assert os.stat(path).st_ino != first
    assert jwt.decode(open(path).read(), options={"verify_signature": False})["sub"] == "system:serviceaccount:ns:other"
    issuer.write_jwks(str(tmp_path / "jwks.json"))
    assert json.load(open(tmp_path / "jwks.json")) == issuer.jwks()


def test_program_mode(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, str(HERE.parent / "standin" / "oidc_issuer.py"), "--state-dir", str(state)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        info_file = state / "oidc.json"
        wait_until(info_file.exists, timeout=30, what="oidc.json")
        info = json.loads(info_file.read_text())
        assert info["pid"] == proc.pid
        doc = get_json(info["issuer"] + "/.well-known/openid-configuration", info["ca_file"])
        req = urllib.request.Request(info["control_url"] + "/control", method="POST",
                                     data=json.dumps({"mint": {"alg": "ES256", "sub": "s"}}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            token = json.loads(r.read())["token"]
        jwks = get_json(doc["jwks_uri"], info["ca_file"])
        assert verify(token, jwks, info["issuer"])["sub"] == "s"
        with urllib.request.urlopen(info["control_url"] + "/stats", timeout=10) as r:
            assert json.loads(r.read()) == {"discovery": 1, "jwks": 1}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()
