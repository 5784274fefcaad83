"""`irsafs mount`'s HTTP endpoints (issue 11): /healthz /readyz /refresh /status /metrics.

Every test mounts for real (the `mounter` fixture) against the HTTPS stand-in of irsa-svc and
gives its mount its own free port (found by binding port 0), never a fixed one: other mount
tests run in parallel with no listener at all. Readiness is polled, never slept for; time
bounds are generous hang guards, not performance assertions.

Every answer body any test receives is kept, and at the end of each test that used a stand-in
scanned for the stand-in's tokens and the config text (the issue: "never the token, never the
config text, in any answer or log"); the daemon's log is scanned too.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import http.client
import json
import re
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime
from typing import NamedTuple, Optional

import pytest

from helpers import (DEBIAN_PYTHON, errno_of, free_port, fuse_skip_reason, is_mounted, mount_args, pid_alive, read_bytes,
                     realistic_config, start_readers, wait_until)
from metrics_parse import parse as parse_metrics

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

SMALL = realistic_config(1, "epsmall").encode()
LARGE = realistic_config(30, "eplarge").encode()
STATUS_VOLATILE = {"fuse_requests"}  # reading .status through FUSE may move these

# Every body received in this process, for the secret scan (see scan_bodies).
BODIES: list = []
MOUNTS: list = []


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

class Reply(NamedTuple):
    status: int
    headers: dict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> dict:
        return json.loads(self.body)


def call(port: int, method: str = "GET", path: str = "/healthz", body: Optional[bytes] = None,
         headers: Optional[dict] = None, timeout: float = 30) -> Reply:
    """One request on a fresh connection (http.client), the whole answer read."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        BODIES.append(data)
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def raw_exchange(port: int, request: bytes, timeout: float = 15) -> bytes:
    """Sends raw bytes, returns everything the server sends until it closes (or b"" when it
    resets the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except ConnectionResetError:
            pass
    data = b"".join(chunks)
    BODIES.append(data)
    return data


def status_of(raw: bytes) -> Optional[int]:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def healthz_ok(port: int) -> bool:
    try:
        return call(port, timeout=5).status == 200
    except OSError:
        return False


def ep_mount(mounter, standin, *extra, port: Optional[int] = None, **kwargs):
    """A mount listening on its own free port (`port`, else one found free); returns once
    /healthz answers. m.port is set. A free port taken by someone else between the look-up and
    the bind (tests run in parallel) is retried with another one."""
    for attempt in range(3):
        p = port or free_port()
        m = mounter(standin, "--listen", f"127.0.0.1:{p}", *extra, check=False, **kwargs)
        if m.alive() or port is not None or "Address already in use" not in m.log():
            break
    assert m.alive() and is_mounted(m.path), f"irsafs mount failed:\n{m.log()}"
    m.port = p
    MOUNTS.append(m)
    wait_until(lambda: healthz_ok(p), 20, f"/healthz on port {p}")
    return m


def iso_to_unix(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def secrets_of(standin) -> list:
    """The strings no answer and no log line may hold: every token the stand-in issued, the
    config text and each of its profile-defining lines."""
    out = [t for t in standin.issued_tokens if t]
    text = standin.config_bytes.decode("utf-8", "replace")
    if text.strip():
        out.append(text)
        out += [line for line in text.splitlines() if "role_arn" in line or "source_profile" in line]
    return out


@pytest.fixture(autouse=True)
def scan_bodies(request):
    """After each test that used a stand-in: no body received, and no line of the daemons'
    logs, holds a token or the config text."""
    BODIES.clear()
    MOUNTS.clear()
    standin = request.getfixturevalue("standin") if "standin" in request.fixturenames else None
    yield
    if standin is None:
        return
    bad = secrets_of(standin)
    leaks = [(i, s[:40]) for i, body in enumerate(BODIES) for s in bad
             if s.encode() in body]
    assert not leaks, f"answers hold a token or config text: {leaks[:5]}"
    for m in MOUNTS:
        log = m.log()
        leaked = [s[:40] for s in bad if s in log]
        assert not leaked, f"the log of {m.path} holds a token or config text: {leaked}"


# ---------------------------------------------------------------------------------------------
# 1. /healthz and /readyz
# ---------------------------------------------------------------------------------------------

def test_healthz_and_readyz_before_and_after_the_first_fetch(standin, mounter):
    m = ep_mount(mounter, standin)
    r = call(m.port, "GET", "/healthz")
    assert (r.status, r.text) == (200, "ok\n"), r
    assert r.headers["content-type"].startswith("text/plain")
    assert call(m.port, "HEAD", "/healthz").status == 200

    r = call(m.port, "GET", "/readyz")
    assert r.status == 503, r
    assert r.text.endswith("\n") and r.text.count("\n") == 1, f"one line: {r.text!r}"
    assert "empty" in r.text, f"the reason names the state: {r.text!r}"
    # Probes never fetch.
    assert standin.irsa_count == 0 and standin.token_count == 0

    assert read_bytes(m.file) == standin.config_bytes
    r = call(m.port, "GET", "/readyz")
    assert r.status == 200, r
    assert call(m.port, "GET", "/healthz").status == 200
    assert standin.irsa_count == 1


def test_healthz_stays_200_while_irsa_svc_is_down_and_readyz_says_why(standin, mounter):
    standin.set_down(True)
    m = ep_mount(mounter, standin, deadline=2)
    assert call(m.port).status == 200
    assert errno_of(lambda: read_bytes(m.file, timeout=20)) == errno.EIO
    status = m.wait_status(lambda s: s["state"] == "error" and s["last_error"], timeout=10)
    for _ in range(3):
        r = call(m.port)
        assert (r.status, r.text) == (200, "ok\n"), "liveness must not follow irsa-svc"
    r = call(m.port, "GET", "/readyz")
    assert r.status == 503, r
    line = r.text
    assert line.endswith("\n") and line.count("\n") == 1, f"one line: {line!r}"
    assert "error" in line, line
    # The last error is on that line (possibly shortened).
    assert status["last_error"][:40] in line, (line, status["last_error"])

    # A refresh while irsa-svc is still down: 5xx with the reason, nothing served.
    r = call(m.port, "POST", "/refresh")
    assert 500 <= r.status <= 599, r
    body = r.json()
    assert body["reason"] and body["version"] == 0, body

    # irsa-svc back: /readyz follows once content is served; /healthz never changed.
    standin.set_down(False)
    data = wait_until(lambda: _try_read(m.file), 20, "a read after irsa-svc came back")
    assert data == standin.config_bytes
    assert call(m.port, "GET", "/readyz").status == 200
    assert call(m.port).status == 200


def _try_read(path):
    try:
        return read_bytes(path, timeout=20)
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# 2. /refresh
# ---------------------------------------------------------------------------------------------

def _refresh_until_new_request(port, standin, method="POST") -> Reply:
    """/refresh until one of them makes a new upstream request (a refresh less than 1 s after
    the last one shares its outcome); that one's answer."""
    before = standin.irsa_count

    def attempt():
        r = call(port, method, "/refresh")
        return r if standin.irsa_count > before else None
    return wait_until(attempt, 15, "a /refresh that fetches again", interval=0.2)


def test_refresh_get_and_post_fetch_again_and_report_changed(standin, mounter):
    standin.set_config(SMALL)
    m = ep_mount(mounter, standin)

    # On a fresh mount /refresh makes the first fetch.
    r = call(m.port, "GET", "/refresh")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"version", "changed", "bytes", "sha256"}, body
    assert body == {"version": 1, "changed": True, "bytes": len(SMALL),
                    "sha256": hashlib.sha256(SMALL).hexdigest()}, body
    assert standin.irsa_count == 1
    assert read_bytes(m.file) == SMALL
    assert standin.irsa_count == 1, "the file is served from the refreshed content"

    # Same content upstream: a second refresh fetches again and says unchanged.
    r = _refresh_until_new_request(m.port, standin, "POST")
    assert r.status == 200, r
    assert r.json() == {"version": 1, "changed": False, "bytes": len(SMALL),
                        "sha256": hashlib.sha256(SMALL).hexdigest()}, r.body

    # New content upstream: changed, a new version, and the file shows it.
    standin.set_config(LARGE)
    r = _refresh_until_new_request(m.port, standin, "GET")
    assert r.status == 200, r
    assert r.json() == {"version": 2, "changed": True, "bytes": len(LARGE),
                        "sha256": hashlib.sha256(LARGE).hexdigest()}, r.body
    assert read_bytes(m.file) == LARGE
    status = m.status()
    assert status["version"] == 2 and status["sha256"] == hashlib.sha256(LARGE).hexdigest()
    assert status["refreshes"]["http"] >= 3, status


@pytest.mark.parametrize("behaviour", [{"status": 500}, {"body": "<html>502 Bad Gateway</html>\n"}],
                         ids=["500", "html-200"])
def test_failed_refresh_is_5xx_with_the_reason_and_the_content_unchanged(standin, mounter, behaviour):
    standin.set_config(SMALL)
    m = ep_mount(mounter, standin, deadline=2)
    assert read_bytes(m.file) == SMALL
    standin.set_config(LARGE)  # would show if anything were replaced
    standin.set_default(behaviour)
    t0 = time.monotonic()
    r = call(m.port, "POST", "/refresh")
    took = time.monotonic() - t0
    assert 500 <= r.status <= 599, r
    assert took < 10, f"the failed refresh answered after {took:.1f}s with --deadline 2"
    body = r.json()
    assert body["reason"], body
    assert body["version"] == 1 and body["sha256"] == hashlib.sha256(SMALL).hexdigest(), body
    status = m.wait_status(lambda s: not s["refreshing"], timeout=10)
    assert status["last_error"] and status["failures"] >= 1, status
    assert status["version"] == 1 and status["bytes"] == len(SMALL), status
    assert read_bytes(m.file) == SMALL
    assert call(m.port, "GET", "/readyz").status == 200, "content is still served"


def test_refresh_on_a_mount_seeded_by_a_write_is_409_and_says_why(standin, mounter):
    m = ep_mount(mounter, standin)
    with open(m.file, "wb") as f:
        f.write(SMALL)
    m.wait_status(lambda s: s["source"] == "write" and s["writes"]["pending"] == 0, timeout=10)
    for method in ("GET", "POST"):
        r = call(m.port, method, "/refresh")
        assert r.status == 409, r
        body = r.json()
        assert "write" in body["reason"] and "seeded" in body["reason"], body
        assert body["version"] == 1 and body["sha256"] == hashlib.sha256(SMALL).hexdigest(), body
    assert call(m.port, "GET", "/readyz").status == 200
    assert standin.irsa_count == 0 and standin.token_count == 0
    assert read_bytes(m.file) == SMALL


# ---------------------------------------------------------------------------------------------
# 3. /status, /metrics, 404, 405
# ---------------------------------------------------------------------------------------------

def _assert_status_matches(m) -> dict:
    """/status between two .status reads: every field stable across them is equal."""
    before = m.status(strict=True)
    r = call(m.port, "GET", "/status")
    after = m.status(strict=True)
    assert r.status == 200 and r.headers["content-type"].startswith("application/json"), r
    got = r.json()
    assert list(got) == list(before), f"same fields in the same order:\n{list(got)}\n{list(before)}"
    for key in got:
        if key in STATUS_VOLATILE or before[key] != after[key]:
            continue
        assert got[key] == before[key], f"/status {key}={got[key]!r}, .status {key}={before[key]!r}"
    return got


def test_status_endpoint_is_the_same_json_as_dot_status(standin, mounter):
    m = ep_mount(mounter, standin)
    got = _assert_status_matches(m)
    assert got["state"] == "empty"
    read_bytes(m.file)
    call(m.port, "POST", "/refresh")
    got = _assert_status_matches(m)
    assert got["state"] == "ready" and got["version"] == 1 and got["fetch_successes"] >= 1, got
    assert got["refreshes"]["http"] == 1, got
    assert call(m.port, "HEAD", "/status").status == 200


def _metrics(m) -> tuple:
    """(.status before, families, .status after)."""
    before = m.status(strict=True)
    r = call(m.port, "GET", "/metrics")
    after = m.status(strict=True)
    assert r.status == 200, r
    ctype = r.headers["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return before, parse_metrics(r.text), after


def _sample(fams, family, labels=None):
    f = fams[family]
    found = [v for name, lab, v in f["samples"] if labels is None or lab == labels]
    assert len(found) == 1, f"{family}{labels or ''}: {f['samples']}"
    return found[0]


def _check_metrics_against_status(before, fams, after):
    counters = {"irsafs_upstream_requests": "upstream_requests", "irsafs_token_requests": "token_requests",
                "irsafs_fuse_requests": "fuse_requests"}
    for fam, key in counters.items():
        assert fams[fam]["type"] == "counter", fams[fam]
        assert before[key] <= _sample(fams, fam) <= after[key], (fam, before[key], after[key])
    assert fams["irsafs_fetches"]["type"] == "counter"
    assert _sample(fams, "irsafs_fetches", {"outcome": "success"}) == before["fetch_successes"] == after["fetch_successes"]
    assert _sample(fams, "irsafs_fetches", {"outcome": "failure"}) == before["failures"] == after["failures"]
    assert fams["irsafs_writes"]["type"] == "counter"
    for outcome in ("committed", "rejected"):
        assert _sample(fams, "irsafs_writes", {"outcome": outcome}) == before["writes"][outcome]
    assert fams["irsafs_refreshes"]["type"] == "counter"
    for trigger, n in before["refreshes"].items():
        assert _sample(fams, "irsafs_refreshes", {"trigger": trigger}) == n, trigger
    # Every counter family's samples are named *_total.
    for name, f in fams.items():
        if f["type"] == "counter":
            assert all(s[0] == name + "_total" for s in f["samples"]), f
        assert name.startswith("irsafs_"), name
    gauges = {"irsafs_waiting_readers": "waiting_readers", "irsafs_content_bytes": "bytes",
              "irsafs_content_version": "version"}
    for fam, key in gauges.items():
        assert fams[fam]["type"] == "gauge", fams[fam]
        assert _sample(fams, fam) == before[key] == after[key], (fam, before[key])
    assert fams["irsafs_state"]["type"] == "gauge"
    for state in ("empty", "fetching", "ready", "error"):
        want = 1 if before["state"] == state else 0
        assert _sample(fams, "irsafs_state", {"state": state}) == want, (state, before["state"])
    last = _sample(fams, "irsafs_last_success_timestamp_seconds")
    if before["last_success_at"] is None:
        assert last == 0
    else:
        assert abs(last - iso_to_unix(before["last_success_at"])) < 1.0, (last, before["last_success_at"])


def test_metrics_parse_and_agree_with_status(standin, mounter):
    m = ep_mount(mounter, standin, deadline=2)
    before, fams, after = _metrics(m)
    assert before["state"] == "empty"
    _check_metrics_against_status(before, fams, after)

    read_bytes(m.file)
    assert call(m.port, "POST", "/refresh").status == 200
    standin.set_default({"status": 500})
    r = _refresh_until_new_request(m.port, standin)
    assert r.status == 502, r
    m.wait_status(lambda s: not s["refreshing"] and s["failures"] >= 1, timeout=10)
    before, fams, after = _metrics(m)
    assert before["state"] == "ready" and before["failures"] >= 1 and before["fetch_successes"] >= 1, before
    _check_metrics_against_status(before, fams, after)
    assert before["refreshes"]["http"] >= 2


@pytest.mark.parametrize("method,path,want", [
    ("GET", "/", 404), ("GET", "/nope", 404), ("GET", "/healthz/extra", 404), ("GET", "/config", 404),
    ("GET", "/HEALTHZ", 404), ("POST", "/nope", 404),
    ("POST", "/healthz", 405), ("PUT", "/healthz", 405), ("DELETE", "/status", 405),
    ("POST", "/metrics", 405), ("PATCH", "/readyz", 405), ("PUT", "/refresh", 405),
    ("DELETE", "/refresh", 405), ("HEAD", "/refresh", 405), ("OPTIONS", "/refresh", 405),
])
def test_unknown_paths_are_404_and_other_methods_405(standin, mounter, method, path, want):
    m = ep_mount(mounter, standin)
    r = call(m.port, method, path)
    assert r.status == want, r
    if want == 405:
        assert "allow" in r.headers and "GET" in r.headers["allow"], r.headers
    assert standin.irsa_count == 0, "no fetch from a refused request (HEAD /refresh included)"
    assert m.status()["refreshes"]["http"] == 0


# ---------------------------------------------------------------------------------------------
# 4. Where it listens: DOMINO_IRSA_PROXY, --listen, bad values, a taken port, a restart
# ---------------------------------------------------------------------------------------------

def test_listener_defaults_to_domino_irsa_proxy_and_listen_none_turns_it_off(standin, mounter):
    port = free_port()
    env = {"DOMINO_IRSA_PROXY": f"http://localhost:{port}"}
    # Daemonized, as in a container: the server runs in the detached daemon.
    m1 = mounter(standin, foreground=False, env=env)
    m1.port = port
    MOUNTS.append(m1)
    wait_until(lambda: healthz_ok(port), 20, f"/healthz on 127.0.0.1:{port} from DOMINO_IRSA_PROXY")
    m1.wait_log(rf"HTTP endpoints on http://127\.0\.0\.1:{port}\b")
    assert call(port, "GET", "/refresh").status == 200
    assert read_bytes(m1.file) == standin.config_bytes

    # The same environment with --listen none: no listener, so no clash with m1's port.
    m2 = mounter(standin, "--listen", "none", env=env)
    # --listen overrides it, also a DOMINO_IRSA_PROXY that could not be used.
    m3 = mounter(standin, "--listen", "none", env={"DOMINO_IRSA_PROXY": "not a url"})
    # No DOMINO_IRSA_PROXY, no --listen: no listener.
    m4 = mounter(standin)
    other = free_port()
    m5 = ep_mount(mounter, standin, port=other, env=env)  # --listen beats DOMINO_IRSA_PROXY
    for m in (m2, m3, m4):
        assert read_bytes(m.file) == standin.config_bytes
        assert "HTTP endpoints" not in m.log(), m.log()
    m5.wait_log(rf"HTTP endpoints on http://127\.0\.0\.1:{other}\b")
    assert f":{port}" not in m5.log().split("HTTP endpoints", 1)[1].splitlines()[0]
    # Only m1 answers on the DOMINO_IRSA_PROXY port: its .status says one HTTP refresh.
    assert call(port, "GET", "/status").json()["refreshes"]["http"] == 1
    assert m1.stop() is None and not is_mounted(m1.path)


@pytest.mark.parametrize("flag,env_value,names", [
    ("6003", None, "--listen"),
    ("127.0.0.1:0", None, "--listen"),
    ("127.0.0.1:70000", None, "--listen"),
    ("127.0.0.1:", None, "--listen"),
    ("example.com:6003", None, "--listen"),
    ("::1:6003", None, "--listen"),
    ("", None, "--listen"),
    (None, "https://localhost:6003", "DOMINO_IRSA_PROXY"),
    (None, "http://localhost", "DOMINO_IRSA_PROXY"),
    (None, "http://localhost:abc", "DOMINO_IRSA_PROXY"),
    (None, "http://irsa-proxy.local:6003", "DOMINO_IRSA_PROXY"),
    (None, "http://user@localhost:6003", "DOMINO_IRSA_PROXY"),
])
def test_bad_listen_values_exit_2_with_a_clear_message(run_irsafs, tmp_path, flag, env_value, names):
    mp = tmp_path / "mnt"
    mp.mkdir()
    args = ["mount", *mount_args(None, deadline=2)]
    if flag is not None:
        args += ["--listen", flag]
    try:
        res = run_irsafs(*args, str(mp), env={"DOMINO_IRSA_PROXY": env_value} if env_value else None,
                         timeout=30)
    finally:
        if is_mounted(str(mp)):
            from helpers import unmount
            unmount(str(mp))
            pytest.fail("a bad listen value mounted anyway")
    assert res.rc == 2, res.explain()
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    first = lines[0]
    assert names in first, res.explain()
    shown = flag if flag is not None else env_value
    assert shown in first, f"the message quotes the value: {first!r}"
    assert re.search(r"expected|PORT", first), f"the message says what is expected: {first!r}"
    assert len(first) < 400


def _hold_port():
    """A listening socket on a free port (no SO_REUSEPORT, as most servers)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def _assert_one_line_naming(log: str, addr: str):
    lines = [ln for ln in log.splitlines() if addr in ln]
    assert len(lines) == 1, f"one line naming {addr}:\n{log}"
    assert "Address already in use" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemonized"])
def test_a_taken_port_fails_the_mount_with_exit_1_and_one_line(standin, mounter, foreground):
    holder, port = _hold_port()
    addr = f"127.0.0.1:{port}"
    try:
        m = mounter(standin, "--listen", addr, foreground=foreground, check=False, wait=False) \
            if foreground else mounter(standin, "--listen", addr, foreground=False, check=False)
        if foreground:
            rc = m.wait_exit(30)
        else:
            rc = m.parent_rc
            assert not m.mounted_at_parent_exit
        assert rc == 1, m.log()
        _assert_one_line_naming(m.log(), addr)
        assert not is_mounted(m.path), "nothing may be left mounted"
        assert "Mounted irsafs" not in m.log(), m.log()
        assert standin.irsa_count == 0
        # The port's owner is undisturbed.
        holder.settimeout(0.2)
        with pytest.raises(socket.timeout):
            holder.accept()
    finally:
        holder.close()


def _time_wait_on(port: int) -> int:
    """Sockets in TIME_WAIT whose local port is `port` (/proc/net/tcp, state 06)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "06":
                n += 1
    return n


def test_no_second_listener_and_a_restarted_daemon_rebinds_at_once(standin, mounter):
    m = ep_mount(mounter, standin)
    addr = f"127.0.0.1:{m.port}"
    # Another irsafs on the same port fails: never a silent second listener.
    other = mounter(standin, "--listen", addr, check=False, wait=False)
    assert other.wait_exit(30) == 1, other.log()
    _assert_one_line_naming(other.log(), addr)
    assert not is_mounted(other.path)

    # Keep-alive connections open when the daemon stops: it closes them first, so their
    # server side sits in TIME_WAIT on the port.
    conns = []
    for _ in range(5):
        c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
        c.request("GET", "/healthz")
        assert c.getresponse().read() == b"ok\n"
        conns.append(c)
    assert m.stop() == 0
    for c in conns:
        c.close()
    tw = _time_wait_on(m.port)
    assert tw >= 1, "the stopped daemon closed its connections first: TIME_WAIT on its port"

    again = mounter(standin, "--listen", addr, check=False)
    assert again.alive() and is_mounted(again.path), again.log()
    assert healthz_ok(m.port)
    print(f"TIME_WAIT sockets on the port at the restart: {tw}")


# ---------------------------------------------------------------------------------------------
# 5. Load: 1,000 concurrent refreshes, 50 hammering clients, 1,000 waiting readers
# ---------------------------------------------------------------------------------------------

def _raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


async def _one_raw(port, request: bytes, timeout: float):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)  # Connection: close: to EOF
    finally:
        writer.close()


def concurrent_raw(port: int, request: bytes, n: int, timeout: float = 60) -> list:
    """n connections at once (asyncio, one thread), each sending `request`; the raw answers,
    or the exception for each."""
    async def main():
        return await asyncio.gather(*(_one_raw(port, request, timeout) for _ in range(n)),
                                    return_exceptions=True)
    out = asyncio.run(main())
    BODIES.extend(x for x in out if isinstance(x, bytes))
    return out


def test_1000_concurrent_refreshes_make_one_upstream_request(standin, mounter):
    _raise_nofile(4096)
    m = ep_mount(mounter, standin, deadline=30)
    assert read_bytes(m.file) == standin.config_bytes
    assert standin.irsa_count == 1
    standin.set_config(LARGE)
    standin.set_default({"delay": 3.0})  # the refresh is slow: the calls overlap it
    n = 1000
    request = b"GET /refresh HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    t0 = time.monotonic()
    answers = concurrent_raw(m.port, request, n, timeout=60)
    took = time.monotonic() - t0
    errors = [a for a in answers if not isinstance(a, bytes)]
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[:3]}"
    statuses = {}
    bodies = set()
    for a in answers:
        statuses[status_of(a)] = statuses.get(status_of(a), 0) + 1
        bodies.add(a.partition(b"\r\n\r\n")[2])
    assert statuses == {200: n}, statuses
    assert len(bodies) == 1, f"all share one outcome: {list(bodies)[:3]}"
    assert json.loads(bodies.pop()) == {"version": 2, "changed": True, "bytes": len(LARGE),
                                        "sha256": hashlib.sha256(LARGE).hexdigest()}
    assert standin.irsa_count == 2, f"{standin.irsa_count - 1} upstream POSTs for {n} refreshes"
    assert m.status()["refreshes"]["http"] == n
    assert read_bytes(m.file) == LARGE
    print(f"{n} concurrent /refresh answered in {took:.2f}s with 1 upstream request")


PROBE_SCRIPT = r"""
import http.client, json, os, sys, time
port, stop_path = int(sys.argv[1]), sys.argv[2]
out = []
give_up = time.monotonic() + 120  # hang guard: the test creates stop_path when done
while not os.path.exists(stop_path) and time.monotonic() < give_up:
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        c.request("GET", "/healthz")
        r = c.getresponse()
        body = r.read()
        c.close()
        out.append([r.status, time.monotonic() - t0, body.decode("utf-8", "replace")])
    except OSError as e:
        out.append([repr(e), time.monotonic() - t0, ""])
    time.sleep(0.05)
print(json.dumps(out))
"""


class Prober:
    """/healthz in a loop from a separate process (so that the test's own threads, competing
    for this interpreter's GIL, do not slow the probe down) until stop(); stop() returns the
    (status, seconds) of every probe."""

    def __init__(self, port: int, tmp_path):
        self.stop_path = str(tmp_path / f"probe-stop-{port}-{time.monotonic_ns()}")
        self.proc = subprocess.Popen([DEBIAN_PYTHON, "-c", PROBE_SCRIPT, str(port), self.stop_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def stop(self) -> list:
        open(self.stop_path, "w").close()
        try:
            out, err = self.proc.communicate(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.returncode == 0, err.decode()
        probes = json.loads(out)
        BODIES.extend(p[2].encode() for p in probes)
        return [(p[0], p[1]) for p in probes]


def _assert_probes_fast(probes: list, what: str):
    assert probes, f"no /healthz probe ran while {what}"
    bad = [p for p in probes if p[0] != 200]
    assert not bad, f"/healthz failed while {what}: {bad[:5]}"
    slowest = max(t for _, t in probes)
    assert slowest < 5.0, f"/healthz took {slowest:.2f}s while {what}"
    return slowest


def test_healthz_answers_while_1000_readers_wait_on_a_slow_fetch(standin, mounter, tmp_path):
    n = 1000
    standin.set_config(LARGE)
    standin.set_default({"delay": 4.0})
    m = ep_mount(mounter, standin, deadline=30)
    gate = threading.Barrier(n + 1)
    threads, results = start_readers(m.file, n, gate)
    prober = Prober(m.port, tmp_path)
    gate.wait(timeout=60)
    assert standin.wait_for_requests(1, timeout=15)
    most = 0
    give_up = time.monotonic() + 60
    try:
        while any(t.is_alive() for t in threads) and time.monotonic() < give_up:
            r = call(m.port, "GET", "/metrics")
            fams = parse_metrics(r.text)
            most = max(most, _sample(fams, "irsafs_waiting_readers"))
            if _sample(fams, "irsafs_state", {"state": "fetching"}) == 1:
                ready = call(m.port, "GET", "/readyz")
                assert ready.status == 503 and "fetching" in ready.text, ready
            time.sleep(0.1)
    finally:
        probes = prober.stop()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "some readers never got an answer"
    slowest = _assert_probes_fast(probes, f"{n} readers waited")
    assert most > 0, "no waiting reader seen in /metrics"
    wrong = [r for r in results if r != LARGE]
    assert not wrong, f"{len(wrong)} readers did not get the content: {wrong[:3]}"
    assert standin.irsa_count == 1
    assert call(m.port, "GET", "/readyz").status == 200
    print(f"{len(probes)} /healthz probes, slowest {slowest:.3f}s; most waiting readers seen {most}")


def test_healthz_answers_while_50_clients_hammer_refresh(standin, mounter, tmp_path):
    standin.set_default({"delay": 0.3})
    m = ep_mount(mounter, standin, deadline=10)
    read_bytes(m.file)
    stop = threading.Event()
    outcomes: list = []
    lock = threading.Lock()

    def hammer():
        while not stop.is_set():
            try:
                r = call(m.port, "GET" if len(outcomes) % 2 else "POST", "/refresh", timeout=30)
                item = r.status if r.status != 200 else (200, r.json()["version"])
            except OSError as e:
                item = repr(e)
            with lock:
                outcomes.append(item)
    before = standin.irsa_count
    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(50)]
    prober = Prober(m.port, tmp_path)
    t0 = time.monotonic()
    for t in workers:
        t.start()
    try:
        wait_until(lambda: time.monotonic() - t0 > 4 and len(outcomes) >= 200, 60, "enough refreshes")
    finally:
        stop.set()
        probes = prober.stop()
    for t in workers:
        t.join(40)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in workers)
    bad = [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]
    assert not bad, f"{len(bad)} of {len(outcomes)} refreshes failed: {bad[:5]}"
    slowest = _assert_probes_fast(probes, "50 clients hammered /refresh")
    upstream = standin.irsa_count - before
    # One fetch at a time, and a refresh within 1 s of the last one's end shares it.
    assert 1 <= upstream <= elapsed / 1.0 + 2, f"{upstream} upstream POSTs in {elapsed:.1f}s"
    print(f"{len(outcomes)} refreshes in {elapsed:.1f}s, {upstream} upstream POSTs; "
          f"{len(probes)} /healthz probes, slowest {slowest:.3f}s")


# ---------------------------------------------------------------------------------------------
# 6. Robustness: slow clients, oversize requests
# ---------------------------------------------------------------------------------------------

def test_slow_clients_are_dropped_and_do_not_delay_healthz(standin, mounter, tmp_path):
    m = ep_mount(mounter, standin)
    silent = [socket.create_connection(("127.0.0.1", m.port), timeout=5) for _ in range(50)]
    trickler = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    prober = Prober(m.port, tmp_path)
    t0 = time.monotonic()
    dropped_at = None
    try:
        # One byte every 0.2 s: never idle, never a complete request.
        for i in range(len(head)):
            try:
                trickler.sendall(head[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                dropped_at = time.monotonic() - t0
                break
            r, _, _ = select.select([trickler], [], [], 0.2)
            if r:
                data = trickler.recv(4096)
                BODIES.append(data)
                if not data or data.startswith(b"HTTP/"):
                    dropped_at = time.monotonic() - t0
                    break
            if time.monotonic() - t0 > 60:
                break
        assert dropped_at is not None, "the trickling client was never dropped"
        assert dropped_at < 40, f"the trickling client held its connection {dropped_at:.1f}s"
        # The silent ones are gone too (EOF or reset).
        for s in silent:
            s.settimeout(30)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            BODIES.append(data)
            assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:100]
    finally:
        probes = prober.stop()
        trickler.close()
        for s in silent:
            s.close()
    slowest = _assert_probes_fast(probes, "slow clients held connections")
    assert call(m.port).status == 200
    m.wait_log(r"Dropped \d+ HTTP connection")
    print(f"trickler dropped after {dropped_at:.1f}s; {len(probes)} probes meanwhile, slowest {slowest:.3f}s")


def test_oversize_requests_are_refused(standin, mounter):
    m = ep_mount(mounter, standin)
    big_header = (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 64 * 1024 +
                  b"\r\n\r\n")
    long_url = b"GET /" + b"a" * 64 * 1024 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    many = (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" +
            b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
    for name, req in (("a 64 KiB header", big_header), ("a 64 KiB URL", long_url),
                      ("5,000 headers", many)):
        data = raw_exchange(m.port, req)
        st = status_of(data)
        assert st in (414, 431), f"{name}: {data[:200]!r}"
        assert st != 200, name
        print(f"{name}: {data[:40]!r}")
    # A body: no endpoint takes one; refused without reading it, no fetch.
    for req in (b"POST /refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000,
                b"POST /refresh HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"):
        data = raw_exchange(m.port, req)
        assert status_of(data) == 413, data[:300]
    assert standin.irsa_count == 0, "a refused request must not start a fetch"
    assert m.status()["refreshes"]["http"] == 0
    assert call(m.port).status == 200 and m.alive()


# ---------------------------------------------------------------------------------------------
# 7. No secrets anywhere; SIGTERM with refreshes in flight
# ---------------------------------------------------------------------------------------------

def test_no_token_or_config_text_in_any_body(standin, mounter):
    """Every endpoint in every state, every body scanned (by scan_bodies, at the end) for the
    stand-in's tokens and config text; here also an irsa-svc whose error echoes the config."""
    m = ep_mount(mounter, standin, deadline=2)
    paths = ["/healthz", "/readyz", "/status", "/metrics", "/nope"]

    def everything():
        for p in paths:
            call(m.port, "GET", p)
    everything()
    call(m.port, "GET", "/refresh")  # first fetch through /refresh
    everything()
    # irsa-svc fails, its error body holding the config text and a token-like string.
    token = standin.issued_tokens[-1]
    standin.set_default({"status": 500, "body": standin.config_bytes.decode() + token + "\n"})
    r = _refresh_until_new_request(m.port, standin)
    assert r.status == 502, r
    everything()
    # A 200 that is not a config (HTML) holding the token.
    standin.set_default({"body": f"<html>{token}</html>\n"})
    r = _refresh_until_new_request(m.port, standin)
    assert r.status == 502, r
    everything()
    # Seeded by a write: the written text is config text too.
    with open(m.file, "wb") as f:
        f.write(SMALL)
    m.wait_status(lambda s: s["source"] == "write" and s["writes"]["pending"] == 0, timeout=10)
    assert call(m.port, "POST", "/refresh").status == 409
    everything()
    joined = b"\n".join(BODIES)
    for s in secrets_of(standin) + [SMALL.decode()] + [ln for ln in SMALL.decode().splitlines()
                                                          if "role_arn" in ln]:
        assert s.encode() not in joined, f"a body holds {s[:40]!r}"
    assert len(BODIES) >= 25


def test_sigterm_with_refreshes_in_flight_answers_them_and_exits_0(standin, mounter):
    m = ep_mount(mounter, standin, deadline=30)
    read_bytes(m.file)
    standin.set_default({"delay": 30})
    n = 20
    answers: list = [None] * n

    def refresher(i):
        try:
            answers[i] = call(m.port, "POST", "/refresh", timeout=30)
        except Exception as e:  # noqa: BLE001 - recorded, asserted below
            answers[i] = e
    threads = [threading.Thread(target=refresher, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    assert standin.wait_for_requests(2, timeout=10), "the refresh must reach irsa-svc"
    m.wait_status(lambda s: s["refreshes"]["http"] == n, timeout=10, what="every /refresh arrived")
    t0 = time.monotonic()
    m.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    took = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a /refresh was left hanging at SIGTERM"
    assert m.wait_exit(20) == 0, m.log()
    bad = [a for a in answers if not isinstance(a, Reply)]
    assert not bad, f"{len(bad)} refreshes got no answer: {bad[:3]}"
    assert {a.status for a in answers} == {503}, [a for a in answers][:3]
    assert all(b"shutting down" in a.body for a in answers), answers[0]
    assert took < 15, f"answered and exited {took:.1f}s after SIGTERM"
    wait_until(lambda: not is_mounted(m.path), 10, "the unmount")
    assert not pid_alive(m.pid)
