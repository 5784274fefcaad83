"""Security (issue 6, item 6), shown against real mounts and the local HTTPS stand-in.

  * The bearer token never appears: in the daemon's log at trace level (text and JSON) through
    a success, a 403, a 401 twice, an HTML 200, a stalled body, and error bodies that echo the
    token; in .status; in any process's argv or environment during a fetch; and it is not kept
    in the daemon's memory after its request (/proc/PID/mem is scanned for every issued token
    and for fragments of it).
  * File permissions hold for another uid (setpriv as nobody): reads and writes per --mode.
  * TLS verification is off only with --insecure; the token is never sent to a server that
    failed verification.
  * The mount is nosuid, nodev (and noatime).
  * The response size cap: 1 MiB is served, 1 MiB + 1 byte is refused.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time

import pytest

from helpers import (errno_of, DEBIAN_PYTHON, fetch_args, fuse_skip_reason, mount_entry, read_bytes,
                     realistic_config)

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

NOBODY = 65534
MIB = 1024 * 1024



# ---------------------------------------------------------------------------------------------
# Looking for tokens
# ---------------------------------------------------------------------------------------------

def token_needles(tokens, fragment: int = 12) -> dict:
    """What must not be found, for each token: the whole token and every `fragment`-character
    window of its secret part (the stand-in issues tok-<n>-<32 hex>; a fixed test token is all
    secret). Fragments catch a partial copy, e.g. a buffer freed and partly overwritten by the
    allocator's own bookkeeping."""
    needles = {}
    for t in tokens:
        secret = t.rsplit("-", 1)[-1] if re.fullmatch(r"tok-\d+-[0-9a-f]{32}", t) else t
        needles[t] = t
        for i in range(0, len(secret) - fragment + 1):
            needles[f"{t}[{i}:{i + fragment}]"] = secret[i:i + fragment]
    return needles


def find_tokens(text: str, tokens) -> list:
    return [name for name, needle in token_needles(tokens).items() if needle in text]


CHUNK = 16 * MIB
MAX_REGION = 1 << 30


def scan_memory(pid: int, tokens) -> tuple:
    """Every readable mapping of pid, searched for the tokens and their fragments.
    Returns (findings, bytes scanned)."""
    needles = {name: n.encode() for name, n in token_needles(tokens).items()}
    longest = max(len(n) for n in needles.values())
    found, scanned = [], 0
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            region = fields[5] if len(fields) > 5 else "anonymous"
            if "r" not in fields[1] or region in ("[vvar]", "[vsyscall]"):
                continue
            if hi - lo > MAX_REGION:
                # Only a sanitizer's shadow memory is this big (terabytes, reserved, not data).
                continue
            addr, tail = lo, b""
            while addr < hi:
                try:
                    mem.seek(addr)
                    chunk = mem.read(min(CHUNK, hi - addr))
                except OSError:
                    break
                if not chunk:
                    break
                data = tail + chunk
                base = addr - len(tail)
                scanned += len(chunk)
                for name, needle in needles.items():
                    at = data.find(needle)
                    if at >= 0:
                        found.append((name, base + at, region))
                tail = data[-(longest - 1):]
                addr += len(chunk)
    return _summarize(found), scanned


def _summarize(found) -> list:
    """One line per token: the whole token and/or which of its characters were found, where."""
    per_token: dict = {}
    for name, addr, region in found:
        token, _, window = name.partition("[")
        entry = per_token.setdefault(token, {"whole": [], "chars": set(), "at": set()})
        if window:
            i, j = (int(x) for x in window.rstrip("]").split(":"))
            entry["chars"].update(range(i, j))
        else:
            entry["whole"].append(addr)
        entry["at"].add(f"{addr & ~0xfff:#x} ({region})")
    lines = []
    for token, e in per_token.items():
        chars = sorted(e["chars"])
        span = f"secret chars {chars[0]}-{chars[-1]}" if chars else "no fragment"
        whole = f"whole token x{len(e['whole'])}" if e["whole"] else "not whole"
        lines.append(f"{token}: {whole}, {span}, pages {sorted(e['at'])[:4]}")
    return lines


def assert_no_token(text: str, tokens, where: str) -> None:
    assert tokens, "no token was issued: the test proves nothing"
    hits = find_tokens(text, tokens)
    assert not hits, f"token material in {where}: {hits[:5]}"


# ---------------------------------------------------------------------------------------------
# 1. Logs at trace level, and .status
# ---------------------------------------------------------------------------------------------

ECHO = "echo"  # marker: the scenario's error body contains the (fixed) token


def _fixed_token() -> str:
    return "sekret" + secrets.token_hex(16)


SCENARIOS = {
    # name: (irsa behaviour, reader expects bytes?, echo the token in the body?)
    "success": ({}, True, False),
    "403": ({"status": 403}, False, False),
    "403-echoing-the-token": ({"status": 403, "body": "403 Forbidden: Authorization: Bearer {T}\n"},
                              False, True),
    "401-twice": ({"reject_token": True}, False, False),
    "401-echoing-the-token": ({"status": 401, "body": "401 invalid token {T}\n"}, False, True),
    "html-200": ({"body": "<html><body><h1>Bad Gateway</h1></body></html>\n"}, False, False),
    "html-200-echoing-the-token": (
        {"body": "<html><pre>Authorization: Bearer {T}</pre></html>\n{T}\n"}, False, True),
    "stalled-body": ({"stall_after": 10}, False, False),
}


def _apply_scenario(standin, name):
    behaviour, ok, echo = SCENARIOS[name]
    behaviour = dict(behaviour)
    if echo:
        token = _fixed_token()
        standin.set_token_default({"token": token})
        behaviour["body"] = behaviour["body"].replace("{T}", token)
    standin.set_default(behaviour)
    return ok


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_token_never_in_the_log_or_status(standin, mounter, scenario, fmt):
    ok = _apply_scenario(standin, scenario)
    m = mounter(standin, "--log-format", fmt, deadline=3, timeout=1, log_level="trace")
    if ok:
        assert read_bytes(m.file, timeout=20) == standin.config_bytes
        m.send_signal(signal.SIGHUP)  # and a refresh: a second token
        m.wait_status(lambda s: s["fetches"] == 2 and not s["refreshing"], timeout=15)
    else:
        assert errno_of(lambda: read_bytes(m.file, timeout=20)) == errno.EIO
        m.wait_status(lambda s: s["state"] == "error", timeout=10)
    tokens = standin.issued_tokens
    status_text = m.status_text()
    log = m.log()

    # The format took effect; an invalid body is described by the rule it breaks and where,
    # never quoted (it may hold the token or the config text), not even at debug level.
    lines = [line for line in log.splitlines() if line.strip()]
    if fmt == "json":
        parsed = [json.loads(line) for line in lines]
        assert all({"time", "level", "message", "pid"} <= set(p) for p in parsed), parsed[:3]
    if scenario.startswith("html"):
        assert re.search(r"HTTP 200 but not an AWS config: line 1: ", log), log
        assert "Invalid body starts with" not in log and "<html" not in log.lower(), log
    if not ok:
        assert re.search(r"Cannot fetch the AWS config", log), log
    if SCENARIOS[scenario][2]:
        assert "[redacted]" in log or scenario.startswith("html"), log

    assert_no_token(log, tokens, f"the {fmt} log")
    assert_no_token(status_text, tokens, ".status")
    assert len(tokens) >= 1
    print(f"{scenario}/{fmt}: {len(tokens)} token(s) issued, {len(lines)} log lines, none "
          "holds token material")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_token_never_in_irsafs_fetch_output(standin, run_fetch, fmt):
    token = _fixed_token()
    standin.set_token_default({"token": token})
    standin.enqueue({"status": 401, "body": f"401 invalid token {token}\n"})
    standin.enqueue({"body": f"<html>{token}</html>\n"})
    res = run_fetch(*_stand_in_args(standin), "--log-level", "trace", "--log-format", fmt)
    assert res.rc == 0 and res.stdout == standin.config_bytes, res.explain()
    assert_no_token(res.stderr, standin.issued_tokens, "irsafs fetch's stderr")
    assert_no_token(res.stdout.decode(), standin.issued_tokens, "irsafs fetch's stdout")


def _stand_in_args(standin):
    return fetch_args(standin, deadline=10, timeout=2)


# ---------------------------------------------------------------------------------------------
# 2. argv and environment of every process, during a fetch
# ---------------------------------------------------------------------------------------------

def _all_proc_files(name: str):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}", "rb") as f:
                yield int(entry), f.read()
        except OSError:
            continue


def test_token_never_in_any_process_argv_or_environment(standin, mounter):
    standin.set_default({"delay": 3})  # the POST is held: the token is in use right now
    m = mounter(standin)
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("data", read_bytes(m.file, 30)),
                              daemon=True)
    reader.start()
    assert standin.wait_for_requests(1, timeout=10)
    tokens = standin.issued_tokens
    assert tokens
    needles = token_needles(tokens)
    checked = 0
    for name in ("cmdline", "environ"):
        for pid, data in _all_proc_files(name):
            text = data.decode("utf-8", "replace")
            hits = [k for k, n in needles.items() if n in text]
            assert not hits, f"token material in /proc/{pid}/{name}: {hits[:3]}"
            checked += 1
    # The daemon's threads too (they share argv, but not comm).
    for tid in os.listdir(f"/proc/{m.pid}/task"):
        with open(f"/proc/{m.pid}/task/{tid}/comm") as f:
            assert not find_tokens(f.read(), tokens)
    reader.join(30)
    assert box.get("data") == standin.config_bytes
    print(f"checked {checked} /proc files during a fetch")


# ---------------------------------------------------------------------------------------------
# 3. Not kept in memory after the request
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["fetch-and-refresh", "401-twice", "403-echoing-the-token",
                                      "html-200-echoing-the-token"])
def test_token_not_kept_in_daemon_memory(standin, mounter, scenario):
    if scenario == "fetch-and-refresh":
        m = mounter(standin)
        assert read_bytes(m.file) == standin.config_bytes
        m.send_signal(signal.SIGHUP)  # a second fetch: a second token
        m.wait_status(lambda s: s["fetches"] == 2 and not s["refreshing"], timeout=15)
        m.wait_log(r"Refreshed the AWS config")
    else:
        _apply_scenario(standin, scenario)
        m = mounter(standin, deadline=3, timeout=1)
        assert errno_of(lambda: read_bytes(m.file, timeout=20)) == errno.EIO
        m.wait_status(lambda s: s["state"] == "error", timeout=10)
    tokens = standin.issued_tokens
    assert tokens, "no token was issued"
    found, scanned = scan_memory(m.pid, tokens)
    print(f"{scenario}: scanned {scanned / MIB:.1f} MiB of pid {m.pid} for {len(tokens)} "
          f"token(s) and their fragments: {len(found)} found")
    assert not found, "token material left in the daemon's memory:\n" + "\n".join(found[:10])
    assert m.alive()


def test_sts_credentials_and_the_service_account_token_not_kept_after_verification(standin, mounter,
                                                                                   tmp_path):
    """Role verification (issue 13): the credentials in STS's answers are wiped as they are
    parsed, and the service-account token read for each call is wiped after its request."""
    from sts_standin import FakeSTS
    sa_token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_hex(24)
    token_file = tmp_path / "sa-token"
    token_file.write_text(sa_token)
    standin.set_config(realistic_config(2).replace(
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token", str(token_file)))
    sts = FakeSTS(random_credentials=True).start()
    try:
        sts.enqueue({"deny": True})  # one denial first: its error answer goes through too
        m = mounter(standin, "--verify-roles", "on", "--sts-endpoint", sts.url)
        assert read_bytes(m.file) == standin.config_bytes
        m.wait_status(lambda s: not s["verification"]["running"]
                      and [r["state"] for r in s["verification"]["roles"]] == ["verified"] * 2)
        secrets_issued = sts.credential_strings()
        assert len(secrets_issued) == 2 * 2 * 3, secrets_issued  # 2 roles x 2 successes x 3 strings
        found, scanned = scan_memory(m.pid, secrets_issued + [sa_token])
        print(f"scanned {scanned / MIB:.1f} MiB of pid {m.pid} for {len(secrets_issued)} STS credential "
              f"strings and the service-account token: {len(found)} found")
        assert not found, "STS credentials or the token left in the daemon's memory:\n" + "\n".join(found[:10])
        assert_no_token(m.log() + m.status_text(), secrets_issued + [sa_token], "the log or .status")
    finally:
        sts.stop()


def test_memory_scan_finds_a_token_that_is_kept():
    """The scanner itself works: a process that keeps a token in memory is caught."""
    token = "tok-1-" + secrets.token_hex(16)
    p = subprocess.Popen([DEBIAN_PYTHON, "-c",
                          "import sys; t = bytearray(sys.stdin.readline().strip().encode()); "
                          "print('ready', flush=True); sys.stdin.read()"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        p.stdin.write(token + "\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ready"
        found, _ = scan_memory(p.pid, [token])
        assert any(f.startswith(token + ": whole token") for f in found), found[:3]
    finally:
        p.stdin.close()
        p.wait(10)


# ---------------------------------------------------------------------------------------------
# 4. File permissions for another uid
# ---------------------------------------------------------------------------------------------

AS_OTHER = r"""
import errno, json, os, sys, time
path, status_path, text = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
def attempt(fn):
    try:
        return {"ok": fn()}
    except OSError as e:
        return {"errno": errno.errorcode.get(e.errno, e.errno)}
def read():
    with open(path, "rb") as f:
        return f.read().decode()
def write():
    with open(path, "w") as f:
        f.write(text)
    return True
def status():
    with open(status_path, "rb") as f:
        return json.loads(f.read())["state"]
for op in sys.argv[4].split(","):
    out[op] = attempt({"read": read, "write": write, "status": status}[op])
print(json.dumps(out))
"""


def as_nobody(m, ops, text=""):
    res = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          DEBIAN_PYTHON, "-c", AS_OTHER, m.file, m.status_file, text,
                          ",".join(ops)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout)
    assert out["uid"] == NOBODY and out["gid"] == NOBODY and out["groups"] == [], out
    return out


def test_mode_0600_owner_root_nobody_can_neither_read_nor_write(standin, mounter):
    m = mounter(standin, "--mode", "0600", "--uid", "0", "--gid", "0")
    assert read_bytes(m.file) == standin.config_bytes  # root, the owner, reads
    out = as_nobody(m, ["read", "write", "status"], realistic_config(1, "intruder"))
    assert out["read"] == {"errno": "EACCES"}, out
    assert out["write"] == {"errno": "EACCES"}, out
    assert out["status"] == {"ok": "ready"}, out
    assert read_bytes(m.file) == standin.config_bytes
    assert m.status()["source"] == "irsa-svc"


def test_mode_0600_nobody_refused_before_any_fetch(standin, mounter):
    """A refused open must not even start the fetch (the kernel refuses it)."""
    m = mounter(standin, "--mode", "0600", "--uid", "0")
    out = as_nobody(m, ["read", "status"])
    assert out["read"] == {"errno": "EACCES"}, out
    assert out["status"] == {"ok": "empty"}, out
    assert standin.irsa_count == 0 and m.status()["fetches"] == 0


def test_mode_0644_nobody_reads_but_cannot_write(standin, mounter):
    m = mounter(standin, "--mode", "0644", "--uid", "0", "--gid", "0")
    out = as_nobody(m, ["read", "write", "status"], realistic_config(1, "intruder"))
    assert out["read"] == {"ok": standin.config_bytes.decode()}, out
    assert out["write"] == {"errno": "EACCES"}, out
    assert out["status"] == {"ok": "ready"}, out
    status = m.status()
    assert status["source"] == "irsa-svc" and status["writes"]["committed"] == 0, status
    assert read_bytes(m.file) == standin.config_bytes


def test_mode_0666_nobody_can_write_a_valid_config(standin, mounter):
    text = realistic_config(2, "written-by-nobody")
    m = mounter(standin, "--mode", "0666", "--uid", "0", "--gid", "0")
    out = as_nobody(m, ["write", "read", "status"], text)
    assert out["write"] == {"ok": True}, out
    status = m.wait_status(lambda s: s["source"] == "write", timeout=10,
                           what="the written text served")
    assert status["bytes"] == len(text.encode()), status
    assert read_bytes(m.file) == text.encode()
    assert standin.irsa_count == 0, "seeded by a write: irsa-svc is never called"
    again = as_nobody(m, ["read"])
    assert again["read"] == {"ok": text}, again


def test_read_only_mode_0666_still_refuses_writes(standin, mounter):
    m = mounter(standin, "--mode", "0666", "--read-only")
    out = as_nobody(m, ["write", "read"], realistic_config(1, "intruder"))
    assert out["write"] == {"errno": "EROFS"}, out
    assert out["read"] == {"ok": standin.config_bytes.decode()}, out


# ---------------------------------------------------------------------------------------------
# 5. TLS verification
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cert", ["untrusted", "other-host"])
def test_tls_verification_fails_without_insecure_and_the_token_is_not_sent(standin, mounter,
                                                                            cert):
    standin.set_cert(cert)
    # Environment variables that some TLS stacks honour must not change irsafs's trust.
    env = {"SSL_CERT_FILE": standin.other_ca_file, "CURL_CA_BUNDLE": standin.other_ca_file,
           "SSL_CERT_DIR": os.path.dirname(standin.other_ca_file)}
    m = mounter(standin, deadline=3, timeout=1, env=env)
    t0 = time.monotonic()
    assert errno_of(lambda: read_bytes(m.file, timeout=20)) == errno.EIO
    assert time.monotonic() - t0 < 2
    [line] = m.wait_log(r"Cannot fetch the AWS config: .*certificate")
    assert standin.irsa_count == 0, "no HTTP request (no token) may reach an unverified server"
    assert m.status()["upstream_requests"] == 1, "certificate failures are not retried"
    assert "TLS verification is off" not in m.log()


@pytest.mark.parametrize("cert", ["untrusted", "other-host"])
def test_insecure_accepts_any_certificate_and_warns(standin, mounter, cert):
    standin.set_cert(cert)
    m = mounter(standin, "--insecure")
    m.wait_log(r"warn.*TLS verification is off")
    assert read_bytes(m.file) == standin.config_bytes
    assert standin.irsa_count == 1


def test_verification_is_on_with_the_right_ca(standin, mounter):
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    assert "TLS verification is off" not in m.log()
    assert "insecure" not in m.log().lower()


# ---------------------------------------------------------------------------------------------
# 6. Mount options
# ---------------------------------------------------------------------------------------------

def test_mount_is_nosuid_nodev_noatime(standin, mounter):
    m = mounter(standin)
    entry = mount_entry(m.path)
    assert entry, f"{m.path} is not mounted"
    options = set(entry["vfs-options"].split(","))
    assert {"nosuid", "nodev"} <= options, entry
    assert "noatime" in options, f"README: the mount is nosuid,nodev,noatime: {entry}"
    assert entry["fstype"] == "fuse.irsafs", entry
    assert "default_permissions" in entry["fs-options"].split(","), entry


# ---------------------------------------------------------------------------------------------
# 7. The response size cap
# ---------------------------------------------------------------------------------------------

def config_of_size(size: int) -> bytes:
    """A valid AWS config of exactly `size` bytes: one section, many unique options."""
    head = b"[profile big]\n"
    out = [head]
    left = size - len(head)
    i = 0
    while left > 0:
        key = b"option_%07d = " % i
        i += 1
        if left <= len(key) + 100 + 1 + len(key) + 2:
            # the last line: pad its value so the text ends exactly at `size`
            assert left >= len(key) + 2, left
            out.append(key + b"v" * (left - len(key) - 1) + b"\n")
            left = 0
        else:
            line = key + b"v" * 100 + b"\n"
            out.append(line)
            left -= len(line)
    body = b"".join(out)
    assert len(body) == size
    return body


def test_a_body_of_exactly_1_mib_is_served(standin, mounter):
    body = config_of_size(MIB)
    standin.set_config(body)
    m = mounter(standin)
    data = read_bytes(m.file, timeout=30)
    assert data == body
    assert os.stat(m.file).st_size == MIB
    assert m.status()["bytes"] == MIB


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_1_mib_plus_1_is_refused(standin, mounter, chunked):
    body = config_of_size(MIB + 1)
    if chunked:
        standin.set_default({"big": MIB + 1, "fill": "config", "chunked": True})
    else:
        standin.set_config(body)
    m = mounter(standin, deadline=3, timeout=1)
    assert errno_of(lambda: read_bytes(m.file, timeout=20)) == errno.EIO
    m.wait_log(r"Cannot fetch the AWS config: .*larger than 1048576 bytes")
    status = m.status()
    assert status["state"] == "error" and "larger than" in status["last_error"], status
    assert m.alive()
