#!/usr/bin/python3
"""A local stand-in for a Kubernetes OIDC issuer (an EKS cluster's), and a minter of its
service-account tokens: tests, demos and benchmarks of the peer authentication (issue 14).

TEST KEYS ONLY: every key here is generated in memory per process and signs nothing real.

Debian's python3 with python3-jwt (PyJWT), python3-cryptography and python3-trustme. One HTTPS
server on 127.0.0.1 (certificate from the test CA of irsa_standin.TestPKI, SAN 127.0.0.1):

  GET <path>/.well-known/openid-configuration   {"issuer": <issuer>, "jwks_uri": <issuer>/keys, ...}
  GET <path>/keys                                the JWKS: the public halves of the published keys

The issuer is "https://127.0.0.1:<port><path>" (path "/id/TESTCLUSTER" by default, as EKS has
"https://oidc.eks.<region>.amazonaws.com/id/<id>").

Use from Python (pytest):

    sys.path.insert(0, "tests/standin"); from oidc_issuer import OidcIssuer
    with OidcIssuer(pki=pki) as iss:                 # one RSA and one EC key published
        token = iss.mint(sub="system:serviceaccount:ns:sa")          # RS256, good for an hour
        token = iss.mint(alg="ES256", aud="sts.amazonaws.com", exp_in=-120)   # wrong aud, expired
        iss.write_token(path, token)                 # atomically, as kubelet does
        new_kid = iss.rotate("RSA")                  # a new key published, the old RSA key retired
        iss.forge_alg_none(), iss.forge_hs256_with_public_key(), iss.forge_bad_signature()
        iss.set_status("jwks", 500); iss.set_down(True); iss.counts()["jwks"]
        ... irsafs mount ... --peer-ca-file iss.ca_file   (or --peer-jwks-file: iss.write_jwks(path))

mint() takes any iss/sub/aud/exp/nbf/iat/kid/alg and extra claims or header members; a claim
given as OidcIssuer.OMIT is left out. Keys not published (publish=False, or retired) still sign:
tokens with an unknown kid.

Use as a program (demos, benchmarks):

    python3 tests/standin/oidc_issuer.py --state-dir DIR

writes DIR/oidc.json = {"issuer", "ca_file", "control_url", "pid"} once ready and runs until
SIGTERM/SIGINT. Its plain-HTTP control server takes POST /control with a JSON object of ops,
applied in order: {"mint": {claims and options as mint()}} (answers {"token": ...}),
{"rotate": "RSA" | "EC"}, {"status": {"discovery" | "jwks": code | null}}, {"down": bool};
GET /stats answers the request counts.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import socketserver
import ssl
import sys
import threading
import time
from typing import Any, Optional

import jwt  # Debian: python3-jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from irsa_standin import TestPKI  # noqa: E402

DEFAULT_SUBJECT = "system:serviceaccount:domino-compute:run-test"
DEFAULT_AUDIENCE = "irsafs"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestKey:
    """A signing key of the issuer (test only): kid, alg (RS256/ES256), private key, its public JWK."""

    __test__ = False

    def __init__(self, kind: str, kid: str):
        if kind == "RSA":
            self.alg = "RS256"
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "EC":
            self.alg = "ES256"
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            raise ValueError(f"key kind {kind!r}: RSA or EC")
        self.kind, self.kid = kind, kid
        jwk.update({"kid": kid, "use": "sig", "alg": self.alg})
        self.public_jwk = jwk


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, owner: "OidcIssuer", port: int, handler, tls: bool):
        self.owner, self.tls = owner, tls
        super().__init__(("127.0.0.1", port), handler)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn() (a DNS lookup)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address) -> None:
        # TLS in the handler thread: a slow client never blocks the listener.
        if self.tls:
            request.settimeout(10)
            try:
                request = self.owner.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address) -> None:
        pass


class _IssuerHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        owner: OidcIssuer = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == owner.path + "/.well-known/openid-configuration":
            what, doc = "discovery", owner.discovery_document()
        elif path == owner.path + "/keys":
            what, doc = "jwks", owner.jwks()
        else:
            self._send(404, {"error": "not found"})
            return
        status = owner.note_request(what)
        if status != 200:
            self._send(status, {"error": f"{what} answers {status} (stand-in knob)"})
            return
        self._send(200, doc)

    def _send(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        if self.path == "/stats":
            self._send(200, self.server.owner.counts())
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/control":
            self._send(404, {"error": "not found"})
            return
        try:
            ops = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            self._send(200, self.server.owner.control(ops))
        except (ValueError, TypeError, KeyError) as e:
            self._send(400, {"error": str(e)})

    def _send(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OidcIssuer:
    """The issuer stand-in (see the module docstring)."""

    OMIT = object()  # a claim given this value is left out of a minted token

    def __init__(self, pki: Optional[TestPKI] = None, path: str = "/id/TESTCLUSTER", port: int = 0,
                 control: bool = False, control_port: int = 0):
        self.pki = pki or TestPKI.shared()
        self.path = path.rstrip("/")
        self.ssl_context = self.pki.server_context("good")
        self._lock = threading.Lock()
        self._keys: dict = {}         # kid -> TestKey (every key ever made: all still sign)
        self._published: list = []    # kids in the JWKS, in order
        self._status = {"discovery": 200, "jwks": 200}
        self._counts = {"discovery": 0, "jwks": 0}
        self._serial = 0
        self._port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._control = control
        self._control_port = control_port
        self._control_server: Optional[_Server] = None
        self.add_key("RSA")
        self.add_key("EC")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "OidcIssuer":
        self._serve(True)
        if self._control and self._control_server is None:
            self._control_server = _Server(self, self._control_port, _ControlHandler, tls=False)
            threading.Thread(target=self._control_server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True, name="oidc-control").start()
        return self

    def stop(self) -> None:
        self._serve(False)
        if self._control_server is not None:
            self._control_server.shutdown()
            self._control_server.server_close()
            self._control_server = None

    def __enter__(self) -> "OidcIssuer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, up: bool) -> None:
        if up and self._server is None:
            self._server = _Server(self, self._port, _IssuerHandler, tls=True)
            self._port = self._server.server_address[1]  # the same port when brought up again
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True, name="oidc-issuer")
            self._thread.start()
        elif not up and self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
            self._thread.join()

    def set_down(self, down: bool = True) -> None:
        """Close (or reopen, on the same port) the HTTPS listener."""
        self._serve(not down)

    # -- what it serves --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self._port}{self.path}"

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/keys"

    @property
    def ca_file(self) -> str:
        return self.pki.ca_file

    @property
    def control_url(self) -> Optional[str]:
        if self._control_server is None:
            return None
        return f"http://127.0.0.1:{self._control_server.server_address[1]}"

    def discovery_document(self) -> dict:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_uri,
                "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "claims_supported": ["sub", "iss"]}

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [self._keys[k].public_jwk for k in self._published]}

    def write_jwks(self, path: str) -> None:
        """The JWKS as a file (for --peer-jwks-file), replaced atomically."""
        _write_atomically(path, json.dumps(self.jwks()))

    def set_status(self, what: str, status: Optional[int]) -> None:
        """Answer `what` ("discovery" or "jwks") with this HTTP status (None: 200 again)."""
        with self._lock:
            self._status[what] = status or 200

    def note_request(self, what: str) -> int:
        with self._lock:
            self._counts[what] += 1
            return self._status[what]

    def counts(self) -> dict:
        with self._lock:
            return dict(self._counts)

    # -- keys ------------------------------------------------------------------------------------

    def add_key(self, kind: str, kid: Optional[str] = None, publish: bool = True) -> str:
        """A new key; published in the JWKS unless publish=False. Returns its kid."""
        with self._lock:
            self._serial += 1
            kid = kid or f"{kind.lower()}-{self._serial}"
            self._keys[kid] = TestKey(kind, kid)
            if publish:
                self._published.append(kid)
            return kid

    def retire(self, kid: str) -> None:
        """Take a key out of the JWKS (it still signs: its tokens then name an unknown kid)."""
        with self._lock:
            self._published = [k for k in self._published if k != kid]

    def rotate(self, kind: str = "RSA") -> str:
        """Publish a new key of `kind` and retire the published ones of that kind."""
        old = [k for k in self.published() if self._keys[k].kind == kind]
        kid = self.add_key(kind)
        for k in old:
            self.retire(k)
        return kid

    def published(self) -> list:
        with self._lock:
            return list(self._published)

    def key(self, kid: Optional[str] = None, alg: str = "RS256") -> TestKey:
        """The key `kid`, or the newest published one for `alg`."""
        with self._lock:
            if kid is not None:
                return self._keys[kid]
            for k in reversed(self._published):
                if self._keys[k].alg == alg:
                    return self._keys[k]
        raise KeyError(f"no published {alg} key")

    # -- tokens ----------------------------------------------------------------------------------

    def claims(self, sub: Any = DEFAULT_SUBJECT, aud: Any = DEFAULT_AUDIENCE, iss: Any = None,
               exp_in: float = 3600, nbf_in: float = 0, now: Optional[float] = None, exp: Any = None,
               nbf: Any = None, iat: Any = None, extra: Optional[dict] = None) -> dict:
        """The claims of a projected service-account token; OMIT leaves one out."""
        now = int(time.time() if now is None else now)
        c = {"iss": self.issuer if iss is None else iss, "sub": sub,
             "aud": [aud] if isinstance(aud, str) else aud,
             "iat": now if iat is None else iat,
             "nbf": now + nbf_in if nbf is None else nbf,
             "exp": now + exp_in if exp is None else exp,
             "kubernetes.io": {"namespace": "domino-compute",
                               "serviceaccount": {"name": str(sub).rsplit(":", 1)[-1]}}}
        c.update(extra or {})
        return {k: v for k, v in c.items() if v is not OidcIssuer.OMIT}

    def mint(self, alg: str = "RS256", kid: Optional[str] = None, headers: Optional[dict] = None,
             **claims: Any) -> str:
        """A token signed with the key `kid` (or the newest published `alg` key). `kid` may also
        name a key that is not published; headers={"kid": "x"} overrides the header alone."""
        key = self.key(kid, alg)
        header = {"kid": key.kid}
        header.update(headers or {})
        return jwt.encode(self.claims(**claims), key.private, algorithm=key.alg, headers=header)

    def forge_alg_none(self, **claims: Any) -> str:
        """An unsigned token (alg "none", empty signature) with good claims and a published kid."""
        header = {"alg": "none", "typ": "JWT", "kid": self.key().kid}
        return (_b64url(json.dumps(header).encode()) + "." +
                _b64url(json.dumps(self.claims(**claims)).encode()) + ".")

    def forge_hs256_with_public_key(self, kid: Optional[str] = None, secret: str = "pem", **claims: Any) -> str:
        """The algorithm-confusion forgery: HS256 keyed with the RSA key's public key (as PEM, or
        as its JWK JSON with secret="jwk"), under that key's kid."""
        key = self.key(kid, "RS256")
        if secret == "pem":
            from cryptography.hazmat.primitives import serialization
            mac_key = key.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            mac_key = json.dumps(key.public_jwk).encode()
        header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(self.claims(**claims)).encode()))
        mac = hmac.new(mac_key, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64url(mac)

    def forge_bad_signature(self, alg: str = "RS256", **claims: Any) -> str:
        """A good token whose signature has one byte changed."""
        head, payload, sig = self.mint(alg=alg, **claims).split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[len(raw) // 2] ^= 0x01
        return f"{head}.{payload}.{_b64url(bytes(raw))}"

    @staticmethod
    def write_token(path: str, token: str) -> None:
        """Replace a token file atomically (a new inode, as kubelet's projected volume does)."""
        _write_atomically(path, token)

    # -- program mode ----------------------------------------------------------------------------

    def control(self, ops: dict) -> dict:
        answer: dict = {}
        for op, arg in ops.items():
            if op == "mint":
                arg = dict(arg)
                answer["token"] = self.mint(**arg)
            elif op == "rotate":
                answer["kid"] = self.rotate(arg)
            elif op == "status":
                for what, status in arg.items():
                    self.set_status(what, status)
            elif op == "down":
                self.set_down(bool(arg))
            else:
                raise KeyError(f"unknown op {op}")
        return answer

    def info(self) -> dict:
        return {"issuer": self.issuer, "ca_file": self.ca_file, "control_url": self.control_url,
                "pid": os.getpid()}


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="Local stand-in for an OIDC issuer (test keys only).")
    p.add_argument("--state-dir", required=True, help="certificates and oidc.json go here")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--path", default="/id/TESTCLUSTER")
    args = p.parse_args(argv)

    os.makedirs(args.state_dir, exist_ok=True)
    pki = TestPKI.generate(os.path.join(args.state_dir, "pki"))
    issuer = OidcIssuer(pki, path=args.path, port=args.port, control=True, control_port=args.control_port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    issuer.start()
    info = issuer.info()
    _write_atomically(os.path.join(args.state_dir, "oidc.json"), json.dumps(info, indent=1) + "\n")
    print(json.dumps(info), flush=True)
    while not done.wait(0.5):
        pass
    issuer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
