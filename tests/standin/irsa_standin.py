#!/usr/bin/python3
"""A local stand-in for irsa-svc and the Domino token endpoint (tests, demos, benchmarks).

Standard library and Debian's python3-trustme (run it with /usr/bin/python3). Two servers on
127.0.0.1, ephemeral ports:

  * HTTPS  POST /map_iam_roles_to_pod_sa   (irsa-svc; certificates from a test CA made with
                                            trustme)
  * HTTP   GET  /access-token              (the token endpoint behind DOMINO_API_PROXY)

and, optionally, a plain-HTTP control server (POST /control, GET /stats, GET /healthz).

Use from Python (pytest):

    sys.path.insert(0, "tests/standin"); from irsa_standin import IrsaStandin
    with IrsaStandin() as s:                       # start() ... stop()
        s.enqueue({"status": 503, "retry_after": "1"})   # next request gets this, then default
        ...run irsafs fetch --endpoint s.endpoint --token-url s.token_url --ca-file s.ca_file
        assert s.wait_for_requests(2, timeout=10)
        s.requests()[0]["headers"]["authorization"]

Use as a program (demo, benchmark):

    python3 tests/standin/irsa_standin.py --state-dir DIR [--config-file F] [--port-file F]

writes DIR/standin.json = {"endpoint", "token_url", "api_proxy", "ca_file", "other_ca_file",
"control_url", "pid"} once ready and runs until SIGTERM/SIGINT.

A *behaviour* is a dict; each request consumes the next queued one, else the default:
  {}                                  normal: check token + run_id, 200 with the config text
  {"status": 503, "retry_after": "1", "body": "...", "headers": {...}, "content_type": "..."}
  {"body": "..."} / {"body_b64": "..."} 200 with this body instead of the config
  {"delay": 2.0, ...}                 wait, then do the rest
  {"close": true}                     read the request, close without a response
  {"reject_token": true}              401 whatever the token
  {"stall_after": 10}                 Content-Length of the whole body, send 10 bytes, stall
                                      until the client goes away ("stall_for": max seconds)
  {"truncate": true | N}              send half the body (or N bytes) under the full
                                      Content-Length, then close
  {"big": N, "fill": "a"|"config", "chunked": false}   stream N bytes
  {"capacity": K, "service_time": S, "shed_status": 503, "retry_after": "1" | null}
                                      serve at most K at a time (S seconds each), shed the
                                      rest at once
  {"validate": false}                 skip the token/run_id checks
Server-wide knobs: tls_handshake_delay (seconds, done in the handler thread: the listener is
never blocked), set_cert("good" | "other-host" | "untrusted"), set_down(bool) /
set_token_down(bool) (close the listening socket; reopen on the same port), revoke_tokens().

Control API (program mode, or IrsaStandin(control=True)): POST /control with a JSON object whose
keys are applied in order: reset, reset_stats, config, irsa_default, irsa_enqueue (list),
irsa_clear_queue, token_default, token_enqueue (list), token_clear_queue, tls_handshake_delay,
cert, irsa_down, token_down, revoke_tokens. GET /stats: counters and the request log, with
the Authorization header reduced to has_authorization/token_valid (no tokens, no bodies).
Counters: irsa_requests, token_requests, tokens_issued, irsa_status_<code>, served, shed,
max_inflight, irsa_connections, tls_handshake_failures, irsa_<outcome>.

The token/run_id checks apply unless the behaviour sets a non-200 "status", "close" or
"validate": false. A failed check answers 401 (token) or 400 (body) and still consumes the
behaviour. The token endpoint takes the same dicts ({"status": 500}, {"delay": 3},
{"token": "fixed"}, ...); its default issues a fresh "tok-<n>-<hex>" token per request.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import collections
import http.server
import json
import os
import secrets
import select
import shutil
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

import trustme  # Debian: python3-trustme

IRSA_PATH = "/map_iam_roles_to_pod_sa"
TOKEN_PATH = "/access-token"

EXAMPLE_CONFIG = (
    "[profile src_acme-list-bucket-role]\n"
    "web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token\n"
    "role_arn = arn:aws:iam::111111111111:role/acme-list-bucket-role\n"
    "\n"
    "[profile acme-list-bucket-role]\n"
    "source_profile = src_acme-list-bucket-role\n"
    "role_arn = arn:aws:iam::222222222222:role/acme-list-bucket-role\n"
)

Behaviour = dict


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------

class TestPKI:
    """Test certificates made with Debian's python3-trustme: a test CA, server certificates it
    signed, and an unrelated second CA.

    ca_file / other_ca_file: CA certificates (PEM). certs[name]: the server's private key and
    certificate chain in one PEM file:
      "good"       SAN IP:127.0.0.1 + DNS:localhost, signed by ca_file
      "other-host" SAN DNS:other.example, signed by ca_file
      "untrusted"  like "good" but signed by other_ca_file
    """

    __test__ = False  # not a pytest test class
    _shared: Optional["TestPKI"] = None
    _shared_lock = threading.Lock()

    def __init__(self, directory: str):
        self.dir = directory
        self.ca_file = os.path.join(directory, "ca.pem")
        self.other_ca_file = os.path.join(directory, "other-ca.pem")
        self.certs = {name: os.path.join(directory, f"{name}.pem")
                      for name in ("good", "other-host", "untrusted")}

    @classmethod
    def shared(cls) -> "TestPKI":
        """One set of material per process, in a temporary directory removed at exit."""
        with cls._shared_lock:
            if cls._shared is None:
                directory = tempfile.mkdtemp(prefix="irsa-standin-pki-")
                atexit.register(shutil.rmtree, directory, True)
                cls._shared = cls.generate(directory)
            return cls._shared

    @classmethod
    def generate(cls, directory: str) -> "TestPKI":
        os.makedirs(directory, exist_ok=True)
        pki = cls(directory)
        ca = trustme.CA(organization_unit_name="irsafs test CA")
        other_ca = trustme.CA(organization_unit_name="irsafs unrelated CA")
        ca.cert_pem.write_to_path(pki.ca_file)
        other_ca.cert_pem.write_to_path(pki.other_ca_file)
        leaves = {"good": ca.issue_cert("127.0.0.1", "localhost"),
                  "other-host": ca.issue_cert("other.example"),
                  "untrusted": other_ca.issue_cert("127.0.0.1", "localhost")}
        for name, leaf in leaves.items():
            leaf.private_key_and_cert_chain_pem.write_to_path(pki.certs[name])
        return pki

    def server_context(self, name: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs[name])
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


# --------------------------------------------------------------------------------------------
# Scripted behaviour, tokens, records
# --------------------------------------------------------------------------------------------

class Script:
    """A FIFO of behaviours consumed one per request, falling back to a default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._default: Behaviour = {}

    def next(self) -> Behaviour:
        with self._lock:
            return dict(self._queue.popleft() if self._queue else self._default)

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._queue.extend(dict(b) for b in behaviours)

    def set_default(self, behaviour: Optional[Behaviour] = None) -> None:
        with self._lock:
            self._default = dict(behaviour or {})

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)


class TokenIssuer:
    """Issues fresh tokens and remembers them; the HTTPS endpoint accepts any issued one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued: list = []
        self._valid: set = set()

    def issue(self, fixed: Optional[str] = None) -> str:
        with self._lock:
            token = fixed or f"tok-{len(self._issued) + 1}-{secrets.token_hex(16)}"
            self._issued.append(token)
            self._valid.add(token)
            return token

    def is_valid(self, token: Optional[str]) -> bool:
        with self._lock:
            return token is not None and token in self._valid

    def revoke_all(self) -> None:
        with self._lock:
            self._valid.clear()

    def issued(self) -> list:
        with self._lock:
            return list(self._issued)


class Recorder:
    """Every request, thread-safe counters, and waiting for conditions without sleeps."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._records: list = []
        self._counters: collections.Counter = collections.Counter()
        self._inflight = 0

    def add(self, record: dict) -> dict:
        with self._cond:
            record["seq"] = len(self._records) + 1
            self._records.append(record)
            self._counters[record["endpoint"] + "_requests"] += 1
            self._cond.notify_all()
        return record

    def finish(self, record: dict, outcome: str, status: Optional[int] = None) -> None:
        with self._cond:
            record["outcome"] = outcome
            record["status"] = status
            record["finished"] = time.monotonic()
            self._counters[f"{record['endpoint']}_{outcome}"] += 1
            if status is not None:
                self._counters[f"{record['endpoint']}_status_{status}"] += 1
            self._cond.notify_all()

    def bump(self, key: str, n: int = 1) -> None:
        with self._cond:
            self._counters[key] += n
            self._cond.notify_all()

    def try_enter(self, capacity: int) -> bool:
        """Take one of `capacity` service slots; False when all are taken."""
        with self._cond:
            if self._inflight >= capacity:
                return False
            self._inflight += 1
            self._counters["max_inflight"] = max(self._counters["max_inflight"], self._inflight)
            return True

    def leave(self) -> None:
        with self._cond:
            self._inflight -= 1

    def count(self, key: str) -> int:
        with self._cond:
            return self._counters[key]

    def counters(self) -> dict:
        with self._cond:
            return dict(self._counters)

    def records(self, endpoint: Optional[str] = None) -> list:
        with self._cond:
            return [dict(r) for r in self._records if endpoint in (None, r["endpoint"])]

    def reset(self) -> None:
        with self._cond:
            self._records.clear()
            self._counters.clear()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until predicate() holds. It runs under the (reentrant) lock: count() is fine."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its threads/connections and does TLS in the thread."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, listener: "Listener", port: int):
        self.listener = listener
        self.standin = listener.standin
        super().__init__((listener.host, port), listener.handler_cls)

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn() (a DNS lookup)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        t = threading.Thread(target=self._run, args=(request, client_address), daemon=True)
        self.listener.track(thread=t)
        t.start()

    def _run(self, request, client_address) -> None:
        conn = request
        try:
            self.standin.recorder.bump(self.listener.name + "_connections")
            if self.listener.tls:
                conn = self._handshake(request)
                if conn is None:
                    conn = request
                    return
            self.listener.track(conn=conn)
            self.RequestHandlerClass(conn, client_address, self)
        except Exception:  # noqa: BLE001 - a broken client must not print tracebacks
            pass
        finally:
            self.listener.untrack(conn=conn, thread=threading.current_thread())
            try:
                conn.close()
            except OSError:
                pass

    def _handshake(self, sock: socket.socket):
        standin = self.standin
        self.listener.track(conn=sock)
        delay = standin.tls_handshake_delay
        if delay and standin.stopping.wait(delay):
            self.listener.untrack(conn=sock)
            sock.close()
            return None
        self.listener.untrack(conn=sock)
        sock.settimeout(10)
        tls = standin.ssl_context().wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        self.listener.track(conn=tls)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):  # with TLS 1.3 a client's rejection of our
            # certificate arrives after the server's handshake completed: not counted here
            standin.recorder.bump("tls_handshake_failures")
            self.listener.untrack(conn=tls)
            tls.close()
            return None
        return tls

    def handle_error(self, request, client_address) -> None:
        pass


class Listener:
    """One server on host:port whose listening socket can be closed and reopened (same port)."""

    def __init__(self, standin: "IrsaStandin", name: str, handler_cls, tls: bool, port: int = 0):
        self.standin, self.name, self.handler_cls, self.tls = standin, name, handler_cls, tls
        self.host = standin.host
        self.port = port
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._threads: set = set()
        self._conns: set = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            server = _Server(self, self.port)
            self.port = server.server_address[1]
            self._server = server
            self._serve_thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"standin-{self.name}", daemon=True)
            self._serve_thread.start()

    def close_listener(self) -> None:
        """Stop accepting: new connections are refused; running handlers go on."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._serve_thread = self._serve_thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
            thread.join()

    def set_down(self, down: bool) -> None:
        if down:
            self.close_listener()
        else:
            self.start()

    def track(self, thread=None, conn=None) -> None:
        with self._lock:
            if thread is not None:
                self._threads.add(thread)
            if conn is not None:
                self._conns.add(conn)

    def untrack(self, thread=None, conn=None) -> None:
        with self._lock:
            self._threads.discard(thread)
            self._conns.discard(conn)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener, cut every open connection, join the handler threads."""
        self.close_listener()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


# --------------------------------------------------------------------------------------------
# Request handlers
# --------------------------------------------------------------------------------------------

def _filler(fill: str, total: int):
    """Pieces of exactly `total` bytes: a repeated character, or ("config") a valid-looking
    config with one section and unique keys."""
    if fill != "config":
        unit = fill.encode() * 65536
        for sent in range(0, total, len(unit)):
            yield unit[: min(len(unit), total - sent)]
        return
    left, i = total, 0
    piece = b"[profile big]\n"
    while left > 0:
        lines = [piece]
        size = len(piece)
        while size < 65536:
            line = b"key%d = %s\n" % (i, b"v" * 100)
            i += 1
            lines.append(line)
            size += len(line)
        piece = b"".join(lines)[:left]
        left -= len(piece)
        yield piece
        piece = b""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Shared plumbing: record, read the body, write a response in one of the odd modes."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # socket timeout for reading a request
    server: _Server
    endpoint_name = "?"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def standin(self) -> "IrsaStandin":
        return self.server.standin

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, body: bytes) -> dict:
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        auth = self.headers.get("Authorization")
        token = auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None
        return self.standin.recorder.add({
            "endpoint": self.endpoint_name, "time": time.time(), "monotonic": time.monotonic(),
            "method": self.command, "path": self.path, "client": self.client_address[0],
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body, "json": parsed, "has_authorization": auth is not None,
            "token": token, "token_valid": self.standin.tokens.is_valid(token) if auth else None,
            "outcome": None, "status": None,
        })

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the stand-in stops; True when it is stopping."""
        return self.standin.stopping.wait(max(0.0, float(seconds)))

    def _close_now(self, rec: dict, outcome: str = "closed", status: Optional[int] = None):
        self.close_connection = True
        self.standin.recorder.finish(rec, outcome, status)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _simple(self, rec: dict, status: int, text: str) -> None:
        self._respond(rec, {"status": status, "body": text}, b"")

    def _respond(self, rec: dict, b: Behaviour, default_body: bytes) -> None:
        status = int(b.get("status", 200))
        if "body_b64" in b:
            body = base64.b64decode(b["body_b64"])
        elif "body" in b:
            body = b["body"].encode("utf-8") if isinstance(b["body"], str) else bytes(b["body"])
        elif status == 200:
            body = default_body
        else:
            body = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", b.get("content_type", "text/plain; charset=utf-8"))
        if b.get("retry_after") is not None:
            self.send_header("Retry-After", str(b["retry_after"]))
        for k, v in (b.get("headers") or {}).items():
            self.send_header(k, str(v))
        self.send_header("Connection", "close")
        try:
            if "big" in b:
                self._send_big(rec, status, b)
            elif "stall_after" in b:
                self._send_stalled(rec, status, b, body)
            elif b.get("truncate"):
                self._send_truncated(rec, status, b, body)
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.standin.recorder.finish(rec, "responded", status)
        except (OSError, ValueError):
            self.standin.recorder.finish(rec, "client_gone", status)

    def _send_big(self, rec: dict, status: int, b: Behaviour) -> None:
        total = int(b["big"])
        chunked = bool(b.get("chunked"))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        sent = 0
        for piece in _filler(str(b.get("fill", "a")), total):
            if self.standin.stopping.is_set():
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.standin.recorder.finish(rec, "big", status)

    def _send_stalled(self, rec: dict, status: int, b: Behaviour, body: bytes) -> None:
        n = int(b["stall_after"])
        if len(body) <= n:
            body = body + b"#" * (n + 64 - len(body))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:n])
        self.wfile.flush()
        self.standin.recorder.finish(rec, "stalled", status)
        self._wait_for_client_to_leave(float(b.get("stall_for", 300)))

    def _wait_for_client_to_leave(self, limit: float) -> None:
        sock = self.connection
        end = time.monotonic() + limit
        while time.monotonic() < end and not self.standin.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                try:
                    if not sock.recv(4096):
                        return
                except ssl.SSLWantReadError:
                    continue
                except OSError:
                    return

    def _send_truncated(self, rec: dict, status: int, b: Behaviour, body: bytes) -> None:
        t = b["truncate"]
        n = len(body) // 2 if t is True else int(t)
        n = min(n, max(len(body) - 1, 0))
        self.send_header("Content-Length", str(max(len(body), n + 1)))
        self.end_headers()
        self.wfile.write(body[:n])
        self.wfile.flush()
        self.standin.recorder.finish(rec, "truncated", status)
        self.close_connection = True
        conn = self.connection
        if isinstance(conn, ssl.SSLSocket):  # a clean TLS close: the client sees EOF early
            try:
                conn.settimeout(0.5)
                conn.unwrap()
            except (OSError, ValueError):
                pass
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class IrsaHandler(_Handler):
    endpoint_name = "irsa"

    def _dispatch(self) -> None:
        body = self._read_body()
        rec = self._record(body)
        if self.path.split("?")[0] != IRSA_PATH:
            return self._simple(rec, 404, "404 page not found\n")
        if self.command != "POST":
            return self._simple(rec, 405, "405 method not allowed\n")
        standin = self.standin
        b = standin.irsa_script.next()
        rec["behaviour"] = {k: v for k, v in b.items() if k not in ("body", "body_b64")}
        if b.get("delay") and self._wait(b["delay"]):
            return self._close_now(rec, "stopped")
        if b.get("close"):
            return self._close_now(rec)
        if b.get("reject_token"):
            return self._simple(rec, 401, "401 Unauthorized: token rejected\n")
        explicit = "status" in b and int(b["status"]) != 200
        if b.get("validate", not explicit):
            problem = self._check(rec)
            if problem:
                return self._simple(rec, *problem)
        if "capacity" in b:
            return self._capacity(rec, b)
        self._respond(rec, b, standin.config_bytes)

    def _check(self, rec: dict):
        if not rec["has_authorization"]:
            return 401, "401 Unauthorized: missing Authorization header\n"
        if rec["token"] is None or not rec["token_valid"]:
            return 401, "401 Unauthorized: invalid bearer token\n"
        j = rec["json"]
        if not isinstance(j, dict) or not isinstance(j.get("run_id"), str) or not j["run_id"]:
            return 400, "400 Bad Request: expected a JSON object with run_id\n"
        return None

    def _capacity(self, rec: dict, b: Behaviour) -> None:
        recorder = self.standin.recorder
        if not recorder.try_enter(int(b["capacity"])):
            recorder.bump("shed")
            status = int(b.get("shed_status", 503))
            return self._respond(rec, {"status": status, "retry_after": b.get("retry_after")},
                                 b"")
        try:
            if self._wait(float(b.get("service_time", 0))):
                return self._close_now(rec, "stopped")
        finally:
            recorder.leave()
        recorder.bump("served")
        rest = {k: v for k, v in b.items()
                if k not in ("capacity", "service_time", "shed_status", "retry_after")}
        self._respond(rec, rest, self.standin.config_bytes)


class TokenHandler(_Handler):
    endpoint_name = "token"

    def _dispatch(self) -> None:
        rec = self._record(self._read_body())
        if self.path.split("?")[0] != TOKEN_PATH:
            return self._simple(rec, 404, "404 page not found\n")
        b = self.standin.token_script.next()
        rec["behaviour"] = dict(b)
        if b.get("delay") and self._wait(b["delay"]):
            return self._close_now(rec, "stopped")
        if b.get("close"):
            return self._close_now(rec)
        if int(b.get("status", 200)) == 200 and "body" not in b:
            token = self.standin.tokens.issue(b.get("token"))
            rec["issued"] = token
            self.standin.recorder.bump("tokens_issued")
            return self._respond(rec, b, token.encode())
        self._respond(rec, b, b"")


class ControlHandler(_Handler):
    """POST /control {op: value, ...} (applied in order); GET /stats; GET /healthz."""

    endpoint_name = "control"

    def _dispatch(self) -> None:
        body = self._read_body()
        self.close_connection = True
        path = self.path.split("?")[0]
        try:
            if path == "/healthz":
                return self._json(200, {"ok": True})
            if path == "/stats" and self.command == "GET":
                return self._json(200, self.standin.stats(public=True))
            if path == "/control" and self.command == "POST":
                ops = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(ops, dict):
                    raise ValueError("expected a JSON object")
                self.standin.control(ops)
                return self._json(200, self.standin.stats(public=True, log=False))
            return self._json(404, {"error": "not found"})
        except (ValueError, KeyError, TypeError) as e:
            return self._json(400, {"error": str(e)})

    def _json(self, status: int, obj: Any) -> None:
        data = (json.dumps(obj, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


# --------------------------------------------------------------------------------------------
# The facade
# --------------------------------------------------------------------------------------------

class IrsaStandin:
    """irsa-svc (HTTPS) + token endpoint (HTTP) + optional control API, on 127.0.0.1."""

    def __init__(self, config_text: str | bytes = EXAMPLE_CONFIG, pki: Optional[TestPKI] = None,
                 *, control: bool = False, irsa_port: int = 0, token_port: int = 0,
                 control_port: int = 0, host: str = "127.0.0.1"):
        self.host = host
        self.pki = pki or TestPKI.shared()
        self.recorder = Recorder()
        self.tokens = TokenIssuer()
        self.irsa_script = Script()
        self.token_script = Script()
        self.stopping = threading.Event()
        self.tls_handshake_delay = 0.0
        self._cert = "good"
        self._contexts = {name: self.pki.server_context(name) for name in self.pki.certs}
        self.set_config(config_text)
        self.irsa = Listener(self, "irsa", IrsaHandler, tls=True, port=irsa_port)
        self.token = Listener(self, "token", TokenHandler, tls=False, port=token_port)
        self.ctl = Listener(self, "control", ControlHandler, tls=False, port=control_port) \
            if control else None

    # ---- lifecycle
    def start(self) -> "IrsaStandin":
        for lst in (self.irsa, self.token, self.ctl):
            if lst is not None:
                lst.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for lst in (self.ctl, self.irsa, self.token):
            if lst is not None:
                lst.stop()

    def __enter__(self) -> "IrsaStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- addresses
    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.irsa.port}{IRSA_PATH}"

    @property
    def api_proxy(self) -> str:
        """What DOMINO_API_PROXY would hold (irsafs appends /access-token)."""
        return f"http://{self.host}:{self.token.port}"

    @property
    def token_url(self) -> str:
        return self.api_proxy + TOKEN_PATH

    @property
    def control_url(self) -> Optional[str]:
        return f"http://{self.host}:{self.ctl.port}" if self.ctl else None

    @property
    def ca_file(self) -> str:
        return self.pki.ca_file

    @property
    def other_ca_file(self) -> str:
        return self.pki.other_ca_file

    def info(self) -> dict:
        return {"endpoint": self.endpoint, "token_url": self.token_url,
                "api_proxy": self.api_proxy, "ca_file": self.ca_file,
                "other_ca_file": self.other_ca_file, "control_url": self.control_url,
                "pid": os.getpid()}

    # ---- behaviour
    def enqueue(self, *behaviours: Behaviour) -> None:
        self.irsa_script.enqueue(*behaviours)

    def set_default(self, behaviour: Optional[Behaviour] = None) -> None:
        self.irsa_script.set_default(behaviour)

    def enqueue_token(self, *behaviours: Behaviour) -> None:
        self.token_script.enqueue(*behaviours)

    def set_token_default(self, behaviour: Optional[Behaviour] = None) -> None:
        self.token_script.set_default(behaviour)

    def set_config(self, text: str | bytes) -> None:
        self.config_bytes = text.encode("utf-8") if isinstance(text, str) else bytes(text)

    def set_cert(self, name: str) -> None:
        if name not in self._contexts:
            raise ValueError(f"cert must be one of {sorted(self._contexts)}")
        self._cert = name

    def ssl_context(self) -> ssl.SSLContext:
        return self._contexts[self._cert]

    def set_down(self, down: bool = True) -> None:
        """irsa-svc refuses connections while down; back up on the same port."""
        self.irsa.set_down(down)

    def set_token_down(self, down: bool = True) -> None:
        self.token.set_down(down)

    def revoke_tokens(self) -> None:
        self.tokens.revoke_all()

    def reset(self) -> None:
        """Clear queues and defaults, server-wide knobs and statistics."""
        for script in (self.irsa_script, self.token_script):
            script.clear()
            script.set_default(None)
        self.tls_handshake_delay = 0.0
        self._cert = "good"
        self.recorder.reset()

    def control(self, ops: dict) -> None:
        """Apply control operations in order (the control API's POST /control body)."""
        handlers = {
            "reset": lambda v: v and self.reset(),
            "reset_stats": lambda v: v and self.recorder.reset(),
            "config": self.set_config,
            "irsa_default": self.set_default,
            "irsa_enqueue": lambda v: self.enqueue(*v),
            "irsa_clear_queue": lambda v: v and self.irsa_script.clear(),
            "token_default": self.set_token_default,
            "token_enqueue": lambda v: self.enqueue_token(*v),
            "token_clear_queue": lambda v: v and self.token_script.clear(),
            "tls_handshake_delay": lambda v: setattr(self, "tls_handshake_delay", float(v)),
            "cert": self.set_cert,
            "irsa_down": lambda v: self.set_down(bool(v)),
            "token_down": lambda v: self.set_token_down(bool(v)),
            "revoke_tokens": lambda v: v and self.revoke_tokens(),
        }
        unknown = [k for k in ops if k not in handlers]
        if unknown:
            raise ValueError(f"unknown control keys {unknown}; known: {sorted(handlers)}")
        for key, value in ops.items():
            handlers[key](value)

    # ---- observation
    def last_answered_at(self) -> Optional[float]:
        """time.monotonic() when irsa-svc last finished sending a 200 (None: never): the moment
        it changed the trust policies, for a fake STS's propagation delay (sts_standin.py)."""
        done = [r["finished"] for r in self.recorder.records("irsa")
                if r.get("status") == 200 and r.get("outcome") == "responded"]
        return max(done) if done else None

    def requests(self, endpoint: str = "irsa") -> list:
        """Records (copies) of the requests one endpoint got, in arrival order. Keys: seq,
        endpoint, time, monotonic, method, path, headers (lower-case names), body (bytes),
        json, has_authorization, token, token_valid, behaviour, outcome, status, issued."""
        return self.recorder.records(endpoint)

    @property
    def irsa_count(self) -> int:
        return self.recorder.count("irsa_requests")

    @property
    def token_count(self) -> int:
        return self.recorder.count("token_requests")

    @property
    def issued_tokens(self) -> list:
        return self.tokens.issued()

    def wait_for_requests(self, n: int, timeout: float = 10.0, endpoint: str = "irsa") -> bool:
        """Wait until `endpoint` ("irsa" or "token") has seen n requests; False on timeout."""
        key = endpoint + "_requests"
        return self.recorder.wait_until(lambda: self.recorder.count(key) >= n, timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until predicate() holds, re-checked whenever a request arrives or finishes
        (and every 0.5 s); False on timeout. E.g. lambda: s.recorder.count("shed") >= 100."""
        return self.recorder.wait_until(predicate, timeout)

    def stats(self, public: bool = False, log: bool = True) -> dict:
        out = {"counters": self.recorder.counters(),
               "irsa_queue": self.irsa_script.pending(),
               "token_queue": self.token_script.pending(),
               "irsa_up": self.irsa.up, "token_up": self.token.up,
               "cert": self._cert, "tls_handshake_delay": self.tls_handshake_delay}
        if log:
            hidden = ("token", "issued", "body", "headers") if public else ()
            out["log"] = [{k: v for k, v in r.items() if k not in hidden}
                          for r in self.recorder.records()
                          if r["endpoint"] != "control"]
            if not public:
                for r in out["log"]:
                    r["body"] = r["body"].decode("utf-8", "replace")
        return out


# --------------------------------------------------------------------------------------------
# Program
# --------------------------------------------------------------------------------------------

def _write_json_atomically(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="Local stand-in for irsa-svc and the token endpoint.")
    p.add_argument("--state-dir", required=True, help="certificates and standin.json go here")
    p.add_argument("--config-file", help="file whose bytes are served (default: an example)")
    p.add_argument("--port-file", help="also write the standin.json content to this file")
    p.add_argument("--irsa-port", type=int, default=0)
    p.add_argument("--token-port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--default", help="default irsa behaviour, as JSON")
    args = p.parse_args(argv)

    os.makedirs(args.state_dir, exist_ok=True)
    pki = TestPKI.generate(os.path.join(args.state_dir, "pki"))
    config = EXAMPLE_CONFIG.encode()
    if args.config_file:
        with open(args.config_file, "rb") as f:
            config = f.read()
    standin = IrsaStandin(config, pki, control=True, irsa_port=args.irsa_port,
                          token_port=args.token_port, control_port=args.control_port)
    if args.default:
        standin.set_default(json.loads(args.default))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    standin.start()
    info = standin.info()
    _write_json_atomically(os.path.join(args.state_dir, "standin.json"), info)
    if args.port_file:
        _write_json_atomically(args.port_file, info)
    print(json.dumps(info), flush=True)
    while not done.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
