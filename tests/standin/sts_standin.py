#!/usr/bin/python3
"""A local fake of AWS STS (tests, benchmarks): plain HTTP on 127.0.0.1, the query protocol
with XML answers, standard library only (run it with /usr/bin/python3).

Answers AssumeRoleWithWebIdentity, AssumeRole and GetCallerIdentity, and records every request
(action, params, headers). Issues ASIAWEBIDENTITY<n> keys for web identity and ASIAASSUMED<n>
for AssumeRole; their secret key and session token are "secret-of-<key>" and "token-of-<key>",
or random hex with random_credentials=True (memory scans look for them).

IAM propagation: with `propagation` T seconds and `trust_changed_at` (a callable giving the
time.monotonic() at which irsa-svc changed the trust policy, i.e. answered; None: not yet),
AssumeRoleWithWebIdentity is denied with AccessDenied "Not authorized to perform
sts:AssumeRoleWithWebIdentity" until T seconds after that moment, as IAM does while a trust
policy change spreads. IrsaStandin.last_answered_at is such a callable.

Scripted behaviour, for AssumeRoleWithWebIdentity only: each request consumes the next queued
dict (enqueue), else the default (set_default):
  {}                                  the propagation rule above, then credentials
  {"allow": true}                     credentials now
  {"deny": true}                      AccessDenied, not propagated
  {"error": [code, message], "status": 400}   an ErrorResponse
  {"body": "...", "status": 200}      this body as it is (malformed XML, an HTML page, ...)
  {"big": N}                          a 200 answer of N bytes (an XML comment pads it)
  {"delay": seconds}                  wait first, then the rest of the behaviour
down_url() is an URL where connections are refused (STS down).

data_path(directory): an AWS_DATA_PATH that sends every STS call of Debian's botocore 1.29 and
AWS CLI to the fake (they ignore AWS_ENDPOINT_URL_STS and [services]; --endpoint-url does not
reach the STS client of the credential providers): an sts/2011-06-15/endpoint-rule-set-1.json
whose only rule returns the fake's URL.
"""
from __future__ import annotations

import collections
import datetime
import http.server
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from typing import Callable, Optional
from xml.sax.saxutils import escape

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
NOT_AUTHORIZED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"


def access_key_of(record: dict):
    """The access key id in a SigV4 Authorization header (Credential=AKID/date/region/...)."""
    m = re.search(r"Credential=([^/,\s]+)/", record["headers"].get("authorization", ""))
    return m.group(1) if m else None


def error_xml(code: str, message: str, n: int = 0) -> str:
    return (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error><RequestId>req-{n}</RequestId></ErrorResponse>")


class FakeSTS:
    __test__ = False  # not a pytest test class

    def __init__(self, propagation: float = 0.0,
                 trust_changed_at: Optional[Callable[[], Optional[float]]] = None,
                 random_credentials: bool = False) -> None:
        self.propagation = propagation
        self.trust_changed_at = trust_changed_at
        self.random_credentials = random_credentials
        self.records: list = []
        self.issued: list = []  # (access key id, secret access key, session token)
        self.lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._default: dict = {}
        self._stopping = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                params = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                record = {"path": self.path, "action": params.get("Action"), "params": params,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "monotonic": time.monotonic()}
                with fake.lock:
                    fake.records.append(record)
                    n = len(fake.records)
                status, data = fake.answer(record, n)
                if status is None:
                    return
                if isinstance(data, str):
                    data = data.encode("utf-8")
                record["status"] = status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("x-amzn-RequestId", f"req-{n}")
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    # ---- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeSTS":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @staticmethod
    def down_url() -> str:
        """An URL on 127.0.0.1 where nothing listens: connections are refused."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return f"http://127.0.0.1:{port}"

    # ---- behaviour
    def enqueue(self, *behaviours: dict) -> None:
        with self.lock:
            self._queue.extend(dict(b) for b in behaviours)

    def set_default(self, behaviour: Optional[dict] = None) -> None:
        with self.lock:
            self._default = dict(behaviour or {})

    def _next(self) -> dict:
        with self.lock:
            return dict(self._queue.popleft() if self._queue else self._default)

    # ---- observation
    def requests(self, action: Optional[str] = None) -> list:
        with self.lock:
            return [dict(r) for r in self.records if action in (None, r["action"])]

    def web_identity_requests(self, from_irsafs: Optional[bool] = None) -> list:
        """AssumeRoleWithWebIdentity requests; from irsafs (its RoleSessionName starts with
        irsafs-verify-) or from clients (False)."""
        out = []
        for r in self.requests("AssumeRoleWithWebIdentity"):
            mine = r["params"].get("RoleSessionName", "").startswith("irsafs-verify-")
            if from_irsafs is None or mine == from_irsafs:
                out.append(r)
        return out

    def credential_strings(self) -> list:
        with self.lock:
            return [s for creds in self.issued for s in creds]

    def data_path(self, directory) -> str:
        """An AWS_DATA_PATH whose STS endpoint rule set sends every STS call to the fake."""
        rules = directory / "sts" / "2011-06-15"
        rules.mkdir(parents=True, exist_ok=True)
        builtin = {"Region": "AWS::Region", "UseDualStack": "AWS::UseDualStack",
                   "UseFIPS": "AWS::UseFIPS", "Endpoint": "SDK::Endpoint",
                   "UseGlobalEndpoint": "AWS::STS::UseGlobalEndpoint"}
        params = {}
        for name, b in builtin.items():
            boolean = name.startswith("Use")
            params[name] = {"builtIn": b, "required": boolean, "type": "Boolean" if boolean else "String"}
            if boolean:
                params[name]["default"] = False
        ruleset = {"version": "1.0", "parameters": params, "rules": [{
            "conditions": [], "type": "endpoint",
            "endpoint": {"url": self.url, "headers": {}, "properties": {"authSchemes": [
                {"name": "sigv4", "signingName": "sts", "signingRegion": "us-east-1"}]}}}]}
        (rules / "endpoint-rule-set-1.json").write_text(json.dumps(ruleset))
        return str(directory)

    # ---- answers
    def _credentials(self, key: str) -> str:
        if self.random_credentials:
            key = key.rstrip("0123456789") + secrets.token_hex(8).upper()
            secret, token = secrets.token_hex(20), "FQoG" + secrets.token_hex(48)
        else:
            secret, token = f"secret-of-{key}", f"token-of-{key}"
        with self.lock:
            self.issued.append((key, secret, token))
        expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
        return (f"<Credentials><AccessKeyId>{key}</AccessKeyId>"
                f"<SecretAccessKey>{secret}</SecretAccessKey>"
                f"<SessionToken>{token}</SessionToken>"
                f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration></Credentials>")

    def propagated(self) -> bool:
        if self.trust_changed_at is None:
            return True
        changed = self.trust_changed_at()
        return changed is not None and time.monotonic() >= changed + self.propagation

    def _web_identity(self, record: dict, n: int, meta: str):
        b = self._next()
        record["behaviour"] = {k: v for k, v in b.items() if k != "body"}
        if b.get("delay") and self._stopping.wait(float(b["delay"])):
            return None, b""
        if "error" in b:
            code, message = b["error"]
            return int(b.get("status", 400)), error_xml(code, message, n)
        if "body" in b:
            return int(b.get("status", 200)), b["body"]
        if b.get("deny") or (not b.get("allow") and not self.propagated()):
            record["denied"] = True
            return 403, error_xml("AccessDenied", NOT_AUTHORIZED, n)
        p = record["params"]
        arn = p.get("RoleArn", "")
        session = escape(p.get("RoleSessionName", "s"))
        xml = (f'<AssumeRoleWithWebIdentityResponse xmlns="{NS}"><AssumeRoleWithWebIdentityResult>'
               f"<SubjectFromWebIdentityToken>system:serviceaccount:domino:run</SubjectFromWebIdentityToken>"
               f"<Audience>sts.amazonaws.com</Audience>"
               f"<AssumedRoleUser><Arn>{escape(arn.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/'))}/{session}</Arn>"
               f"<AssumedRoleId>AROAWEBIDENTITY:{session}</AssumedRoleId></AssumedRoleUser>"
               f"{self._credentials(f'ASIAWEBIDENTITY{n}')}"
               f"<Provider>oidc.example</Provider>"
               f"</AssumeRoleWithWebIdentityResult>{meta}</AssumeRoleWithWebIdentityResponse>")
        if "big" in b:
            pad = int(b["big"]) - len(xml) - len("<!---->")
            xml = xml.replace("<AssumeRoleWithWebIdentityResult>",
                              "<AssumeRoleWithWebIdentityResult><!--" + "x" * max(0, pad) + "-->", 1)
        return 200, xml

    def answer(self, record: dict, n: int) -> tuple:
        action, p = record["action"], record["params"]
        meta = f"<ResponseMetadata><RequestId>req-{n}</RequestId></ResponseMetadata>"
        if action == "AssumeRoleWithWebIdentity":
            return self._web_identity(record, n, meta)
        if action == "AssumeRole":
            arn = p.get("RoleArn", "")
            session = escape(p.get("RoleSessionName", "s"))
            return 200, (
                f'<AssumeRoleResponse xmlns="{NS}"><AssumeRoleResult>'
                f"<AssumedRoleUser><Arn>{escape(arn.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/'))}/{session}</Arn>"
                f"<AssumedRoleId>AROAASSUMED:{session}</AssumedRoleId></AssumedRoleUser>"
                f"{self._credentials(f'ASIAASSUMED{n}')}"
                f"</AssumeRoleResult>{meta}</AssumeRoleResponse>")
        if action == "GetCallerIdentity":
            key = access_key_of(record) or "unknown"
            return 200, (
                f'<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult>'
                f"<Arn>arn:aws:sts::222222222223:assumed-role/acme-role-001/{escape(key)}</Arn>"
                f"<UserId>AROAASSUMED:{escape(key)}</UserId><Account>222222222223</Account>"
                f"</GetCallerIdentityResult>{meta}</GetCallerIdentityResponse>")
        return 400, error_xml("InvalidAction", str(action), n)
