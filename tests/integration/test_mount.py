"""`irsafs mount` end to end (issue 3): reading the virtual AWS config file.

Every test mounts for real on a fresh mount point against the local HTTPS stand-in of irsa-svc
(tests/standin), through the `mounter` fixture (conftest.py), which always stops the daemon and
unmounts in teardown. Readiness is detected by polling mountinfo or .status, never by fixed
sleeps; time bounds are generous hang guards.

Writes (seeding) are in test_mount_writes.py, the mount lifecycle in test_mount_lifecycle.py.
"""
from __future__ import annotations

import configparser
import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest

from helpers import (errno_of, run_python_workers, DEBIAN_AWS, DEBIAN_PYTHON, clean_env, fuse_skip_reason,
                     is_mounted, profile_names, read_bytes, realistic_config, start_readers, wait_until)

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

SMALL = realistic_config(1, "small").encode()      # ~0.4 KiB: one page
LARGE = realistic_config(50, "large").encode()     # ~14 KiB: several pages
assert len(SMALL) < 4096 < 3 * 4096 < len(LARGE)

# What .status must show (issue 3, item 8, and the fields the brief lists).
STATUS_FIELDS = {"state", "source", "version", "bytes", "sha256", "obtained_at", "last_success_at",
                 "last_fetch_ms", "fetches", "upstream_requests", "token_requests", "failures",
                 "last_error", "next_refresh_at", "waiting_readers", "writes"}



def timed(fn):
    t0 = time.monotonic()
    value = fn()
    return value, time.monotonic() - t0


def run(argv, timeout=30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, **kwargs)


# ---------------------------------------------------------------------------------------------
# 1. Lazy and coalesced
# ---------------------------------------------------------------------------------------------

def test_mounting_and_listing_make_no_request(standin, mounter):
    m = mounter(standin)
    assert sorted(os.listdir(m.path)) == [".status", "config"]
    res = run(["ls", "-la", m.path])
    assert res.returncode == 0 and b"config" in res.stdout, res
    st = os.stat(m.file)
    assert st.st_size == 0, "documented: stat before any open shows size 0"
    status = m.status()
    assert status["state"] == "empty" and status["fetches"] == 0, status
    assert standin.irsa_count == 0 and standin.token_count == 0

    assert read_bytes(m.file) == standin.config_bytes
    assert standin.irsa_count == 1 and standin.token_count == 1


def test_500_concurrent_first_readers_share_one_fetch(standin, mounter):
    n = 500
    standin.set_config(LARGE)
    standin.set_default({"delay": 2.0})  # every POST is slow: the readers pile up
    m = mounter(standin)

    gate = threading.Barrier(n + 1)
    threads, results = start_readers(m.file, n, gate)
    gate.wait(timeout=30)
    assert standin.wait_for_requests(1, timeout=10), "the first reader must start a fetch"

    # While the fetch is held, .status answers at once and shows the parked readers.
    slowest, most_waiting, status = 0.0, 0, {}
    while True:
        status, took = timed(m.status)
        slowest = max(slowest, took)
        if status["state"] != "fetching":
            break
        most_waiting = max(most_waiting, status["waiting_readers"])
        if most_waiting == n:
            break
        time.sleep(0.02)
    assert slowest < 1.0, f"reading .status took {slowest:.2f}s while readers waited"
    assert most_waiting > 0, f"no waiting reader seen in .status: {status}"

    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "some readers never got an answer"
    errors = [r for r in results if not isinstance(r, bytes)]
    assert not errors, f"{len(errors)} readers failed, e.g. {errors[:3]}"
    wrong = [len(r) for r in results if r != LARGE]
    assert not wrong, f"{len(wrong)} readers got other bytes (lengths {sorted(set(wrong))[:10]})"
    assert standin.irsa_count == 1, f"{standin.irsa_count} POSTs for {n} coalesced readers"
    assert standin.token_count == 1
    status = m.status()
    assert status["fetches"] == 1 and status["upstream_requests"] == 1, status
    assert status["waiting_readers"] == 0, status
    print(f"max waiting_readers seen: {most_waiting}; slowest .status read {slowest:.3f}s")


# ---------------------------------------------------------------------------------------------
# 2. Exact bytes: the very first access by each tool, on a fresh mount per tool
# ---------------------------------------------------------------------------------------------

CONFIGPARSER_DUMP = (
    "import configparser, json, sys\n"
    "c = configparser.ConfigParser(interpolation=None)\n"
    "assert c.read(sys.argv[1]) == [sys.argv[1]]\n"
    "print(json.dumps({s: dict(c.items(s)) for s in c.sections()}, sort_keys=True))\n")


def parsed_sections(body: bytes) -> dict:
    c = configparser.ConfigParser(interpolation=None)
    c.read_string(body.decode())
    return {s: dict(c.items(s)) for s in c.sections()}


def tool_cases():
    """name -> (argv builder, expected-stdout builder, needs the AWS environment)."""
    return {
        "cat": (lambda p: ["cat", p], lambda b, p: b, False),
        "head-c-100": (lambda p: ["head", "-c", "100", p], lambda b, p: b[:100], False),
        "wc-c": (lambda p: ["wc", "-c", p], lambda b, p: f"{len(b)} {p}\n".encode(), False),
        "python-read": (lambda p: [DEBIAN_PYTHON, "-c",
                                   "import sys; print(open(sys.argv[1]).read(), end='')", p],
                        lambda b, p: b, False),
        "configparser": (lambda p: [DEBIAN_PYTHON, "-c", CONFIGPARSER_DUMP, p],
                         lambda b, p: (json.dumps(parsed_sections(b), sort_keys=True) + "\n").encode(),
                         False),
        "aws-list-profiles": (lambda p: [DEBIAN_AWS, "configure", "list-profiles"],
                              lambda b, p: profile_names(b.decode()), True),
        "boto3-profiles": (lambda p: [DEBIAN_PYTHON, "-c",
                                      "import boto3, json; "
                                      "print(json.dumps(sorted(boto3.session.Session().available_profiles)))"],
                           lambda b, p: (json.dumps(profile_names(b.decode())) + "\n").encode(), True),
    }


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("tool", list(tool_cases()))
def test_first_access_by_each_tool_gets_the_exact_bytes(standin, mounter, home, tool, size):
    if tool.startswith("aws") and not os.access(DEBIAN_AWS, os.X_OK):
        pytest.skip("Debian's awscli is not installed (apt-get install awscli)")
    body = SMALL if size == "small" else LARGE
    standin.set_config(body)
    m = mounter(standin)
    argv, expected, aws_env = tool_cases()[tool]
    env = clean_env(home, {"AWS_CONFIG_FILE": m.file} if aws_env else None)
    res = run(argv(m.file), env=env, cwd=str(home))
    assert res.returncode == 0, f"{argv(m.file)} exited {res.returncode}: {res.stderr!r}"
    want = expected(body, m.file)
    if tool == "aws-list-profiles":
        assert sorted(res.stdout.decode().split()) == want, res.stdout
    else:
        assert res.stdout == want, (f"{tool} read {len(res.stdout)} bytes, wanted {len(want)}:"
                                    f" {res.stdout[:200]!r}")
    assert os.stat(m.file).st_size == len(body), "stat must show the real size once known"
    assert standin.irsa_count == 1


# ---------------------------------------------------------------------------------------------
# 3. Waiting: interruption and the deadline
# ---------------------------------------------------------------------------------------------

PY_READER = "import sys; open(sys.argv[1], 'rb').read()"


@pytest.mark.parametrize("reader", ["cat", "python"])
def test_interrupted_waiting_reader_returns_promptly(standin, mounter, reader):
    """cat dies of SIGINT (a fatal signal); Python handles it (KeyboardInterrupt). Either way
    the kernel sends FUSE_INTERRUPT and waits for the daemon to answer the parked open."""
    standin.set_default({"delay": 10})
    m = mounter(standin)
    argv = ["cat", m.file] if reader == "cat" else [DEBIAN_PYTHON, "-c", PY_READER, m.file]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        m.wait_status(lambda s: s["waiting_readers"] >= 1, timeout=10, what="the reader parks")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the interrupted reader is still blocked after 5s")
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    assert took < 3, f"the interrupted reader took {took:.2f}s to end"
    assert p.returncode != 0 and out == b""
    m.wait_status(lambda s: s["waiting_readers"] == 0, timeout=5,
                  what="the interrupted reader is no longer counted as waiting")
    assert m.alive() and is_mounted(m.path)


def test_reader_never_waits_beyond_the_deadline(standin, mounter):
    standin.set_default({"delay": 30})
    m = mounter(standin, deadline=2)
    t0 = time.monotonic()
    err = errno_of(lambda: read_bytes(m.file, timeout=15))
    took = time.monotonic() - t0
    assert err == errno.EIO
    assert 1.5 <= took < 5, f"EIO after {took:.2f}s with --deadline 2"
    # Either the deadline's line ("N reader(s) waited 2.00 s ... they get EIO") or the failed
    # fetch's ("Cannot fetch the AWS config: WHY (N request(s) in 2.00 s); N reader(s) get EIO").
    lines = m.wait_log(r"reader.*\bEIO\b")
    assert re.search(r"\b2(\.0+)? ?s\b", lines[0]), f"the log should say how long: {lines[0]!r}"
    assert re.search(r"waited|Cannot fetch", lines[0]), f"the log should say why: {lines[0]!r}"
    assert m.alive() and is_mounted(m.path)


# ---------------------------------------------------------------------------------------------
# 4. Failure
# ---------------------------------------------------------------------------------------------

def test_failed_fetch_gives_eio_keeps_running_and_recovers_after_hold_off(standin, mounter):
    standin.set_default({"status": 500})
    m = mounter(standin, deadline=2)

    # Several readers wait for the same (failing) fetch: every one gets EIO.
    n = 20
    t0 = time.monotonic()
    threads, results = start_readers(m.file, n)
    for t in threads:
        t.join(timeout=15)
    errors = [r.errno if isinstance(r, OSError) else r for r in results]
    assert time.monotonic() - t0 < 5, "the readers waited longer than the deadline allows"
    assert errors == [errno.EIO] * n, errors
    assert m.alive() and is_mounted(m.path), "the daemon must stay up after a failed fetch"
    status = m.wait_status(lambda s: s["state"] == "error", timeout=5)
    assert status["last_error"] and status["failures"] >= 1 and status["version"] == 0, status
    assert status["fetches"] == 1, f"{n} readers must share one fetch: {status}"
    assert status["source"] is None and status["bytes"] == 0
    assert standin.irsa_count >= 1
    last_failed_post = standin.requests()[-1]["monotonic"]
    m.wait_log(r"Cannot fetch the AWS config: .*EIO")

    standin.set_default(None)  # healthy again

    def try_read():
        try:
            return read_bytes(m.file, timeout=15)
        except OSError:
            return None
    data = wait_until(try_read, timeout=15, what="a read after irsa-svc recovered")
    assert data == standin.config_bytes
    ok = [r for r in standin.requests() if r["status"] == 200]
    assert ok, standin.requests()
    gap = ok[0]["monotonic"] - last_failed_post
    assert gap >= 0.45, f"a new fetch {gap:.2f}s after the failure: sooner than the hold-off"
    status = m.status()
    assert status["state"] == "ready" and status["source"] == "irsa-svc", status
    assert status["bytes"] == len(standin.config_bytes)


@pytest.mark.parametrize("behaviour", [
    {"status": 500},
    {"body": "<html><body><h1>502 Bad Gateway</h1></body></html>\n"},
    {"body": ""},
], ids=["500", "html-200", "empty-200"])
def test_failed_refresh_keeps_serving_the_old_content(standin, mounter, behaviour):
    m = mounter(standin, deadline=2)
    old = read_bytes(m.file)
    assert old == standin.config_bytes

    standin.set_config(LARGE)  # would be visible if anything were replaced
    standin.set_default(behaviour)
    n = standin.irsa_count
    m.send_signal(signal.SIGHUP)
    assert standin.wait_for_requests(n + 1, timeout=10), "SIGHUP must start a refresh"
    # Readers keep the current content, at once, while the refresh fails and retries.
    data, took = timed(lambda: read_bytes(m.file))
    assert data == old and took < 1.0
    status = m.wait_status(lambda s: s["failures"] >= 1 and not s["refreshing"], timeout=10)
    assert status["state"] == "ready" and status["version"] == 1, status
    assert status["last_error"], status
    assert status["bytes"] == len(old) and status["sha256"] == hashlib.sha256(old).hexdigest()
    assert read_bytes(m.file) == old
    assert os.stat(m.file).st_size == len(old)
    m.wait_log(r"Cannot refresh the AWS config: .*still serving version 1")


# ---------------------------------------------------------------------------------------------
# 5. Refresh
# ---------------------------------------------------------------------------------------------

def test_sighup_refresh_with_a_new_size(standin, mounter):
    old, new = SMALL, LARGE
    standin.set_config(old)
    m = mounter(standin)
    assert read_bytes(m.file) == old

    held = open(m.file, "rb")        # opened before the refresh, not read yet
    partial = open(m.file, "rb")     # opened and partly read before the refresh
    try:
        head = partial.read(100)
        standin.set_config(new)
        m.send_signal(signal.SIGHUP)
        status = m.wait_status(lambda s: s["version"] == 2, timeout=10, what="version 2")
        assert status["bytes"] == len(new) and status["source"] == "irsa-svc"
        assert status["sha256"] == hashlib.sha256(new).hexdigest()

        assert read_bytes(m.file) == new, "the next reader must see the new bytes"
        assert os.stat(m.file).st_size == len(new), "and the new size"
        res = run(["cat", m.file])
        assert res.stdout == new

        # Descriptors from before keep their version, complete, also when the pages must be
        # read again from the daemon.
        os.posix_fadvise(held.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert held.read() == old
        assert os.fstat(held.fileno()).st_size == len(old)
        assert head + partial.read() == old
    finally:
        held.close()
        partial.close()
    assert standin.irsa_count == 2
    m.wait_log(r"Refreshed the AWS config in [0-9.]+ ?s")


def test_refresh_interval_picks_up_new_content_without_a_signal(standin, mounter):
    standin.set_config(SMALL)
    m = mounter(standin, "--refresh-interval", "1")
    assert read_bytes(m.file) == SMALL
    status = m.status()
    assert status["next_refresh_at"] is not None, status
    standin.set_config(LARGE)
    m.wait_status(lambda s: s["version"] >= 2, timeout=10, what="a refresh from the interval")
    assert read_bytes(m.file) == LARGE
    assert os.stat(m.file).st_size == len(LARGE)


# ---------------------------------------------------------------------------------------------
# 6. No torn reads while refreshes change the size (short; part 5's soak test is longer)
# ---------------------------------------------------------------------------------------------

LOOP_READER = r"""
import json, os, sys, time
path, a_path, b_path, stop_path = sys.argv[1:5]
texts = {"a": open(a_path, "rb").read(), "b": open(b_path, "rb").read()}
counts = {"a": 0, "b": 0, "bad": 0, "errors": 0}
bad = []
give_up = time.monotonic() + 120  # hang guard: the test creates stop_path when done
while not os.path.exists(stop_path) and time.monotonic() < give_up:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        counts["errors"] += 1
        bad.append(repr(e))
        continue
    for name, text in texts.items():
        if data == text:
            counts[name] += 1
            break
    else:
        counts["bad"] += 1
        bad.append(f"{len(data)} bytes: {data[:40]!r}...{data[-40:]!r}")
print(json.dumps({"counts": counts, "bad": bad[:10]}))
"""


def test_no_torn_reads_while_refreshes_change_the_size(standin, mounter, tmp_path):
    """4 reader processes in a tight loop while SIGHUP refreshes alternate two contents of
    different sizes, one every ~20 ms, for at least 3 s and at least 10 versions."""
    a, b = SMALL, LARGE
    (tmp_path / "a").write_bytes(a)
    (tmp_path / "b").write_bytes(b)
    stop = tmp_path / "stop"
    standin.set_config(a)
    m = mounter(standin)
    assert read_bytes(m.file) == a

    readers = [subprocess.Popen([DEBIAN_PYTHON, "-c", LOOP_READER, m.file, str(tmp_path / "a"),
                                 str(tmp_path / "b"), str(stop)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for _ in range(4)]
    try:
        version = 1
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0 or version < 11:
            assert time.monotonic() - t0 < 60, f"only {version} versions in 60s"
            assert all(p.poll() is None for p in readers), "a reader ended early"
            standin.set_config(b if version % 2 else a)
            m.send_signal(signal.SIGHUP)
            version = m.wait_status(lambda s: s["version"] > version, timeout=20,
                                    what="the refresh to publish")["version"]
            time.sleep(0.02)  # pacing of the refreshes, not a wait for anything
        stop.touch()
        outs = [p.communicate(timeout=30) for p in readers]
    finally:
        stop.touch()
        for p in readers:
            if p.poll() is None:
                p.kill()
    results = []
    for p, (out, err) in zip(readers, outs):
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out))
    total = {k: sum(r["counts"][k] for r in results) for k in ("a", "b", "bad", "errors")}
    print(f"{version} versions; reads: {total}")
    assert total["bad"] == 0 and total["errors"] == 0, [r["bad"] for r in results]
    assert total["a"] > 0 and total["b"] > 0, total


# ---------------------------------------------------------------------------------------------
# 8. Status
# ---------------------------------------------------------------------------------------------

def iso_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_status_fields_and_never_the_token_or_the_config(standin, mounter):
    body = LARGE
    standin.set_config(body)
    m = mounter(standin, log_level="trace")

    before = m.status(strict=True)
    missing = STATUS_FIELDS - set(before)
    assert not missing, f".status lacks {sorted(missing)}: {before}"
    assert set(before["writes"]) >= {"committed", "rejected", "pending"}
    assert before["state"] == "empty" and before["version"] == 0 and before["fetches"] == 0
    assert before["waiting_readers"] == 0 and before["source"] is None

    t0 = time.time()
    assert read_bytes(m.file) == body
    text = m.status_text()
    st = json.loads(text)
    assert not STATUS_FIELDS - set(st)
    assert st["state"] == "ready" and st["source"] == "irsa-svc" and st["version"] == 1
    assert st["bytes"] == len(body)
    assert st["sha256"] == hashlib.sha256(body).hexdigest()
    assert st["fetches"] == 1 and st["failures"] == 0 and st["last_error"] is None
    assert st["upstream_requests"] == standin.irsa_count == 1
    assert st["token_requests"] == standin.token_count == 1
    assert isinstance(st["last_fetch_ms"], (int, float)) and 0 <= st["last_fetch_ms"] < 10000
    for key in ("obtained_at", "last_success_at"):
        assert abs(iso_time(st[key]).timestamp() - t0) < 60, (key, st[key])
    assert st["next_refresh_at"] is None and st["waiting_readers"] == 0
    assert st["writes"] == {"committed": 0, "rejected": 0, "pending": 0}

    tokens = standin.issued_tokens
    assert tokens
    log = m.log()
    for token in tokens:
        assert token not in text, ".status shows the token"
        assert token not in log, "the log (at trace level) shows the token"
    assert body.decode() not in text
    secrets_in_config = {line.split("=", 1)[1].strip() for line in body.decode().splitlines()
                         if line.startswith("role_arn")}
    leaked = [v for v in secrets_in_config if v in text]
    assert not leaked, f".status shows config text: {leaked[:3]}"


STATUS_LOOP = r"""
import json, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
ok, bad = 0, []
end = time.monotonic() + seconds
while time.monotonic() < end:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        json.loads(raw)
        ok += 1
    except ValueError as e:
        bad.append(f"{e}: {raw[-60:]!r}")
print(json.dumps({"ok": ok, "bad": len(bad), "examples": bad[:5]}))
"""


def test_status_is_valid_json_for_concurrent_readers(standin, mounter):
    """The text changes with every rendering (uptime, counters): concurrent readers must
    still each get one whole JSON document."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes  # content known: no OPEN any more
    seconds = 2.0
    results = run_python_workers(STATUS_LOOP, [m.status_file, seconds], 4, timeout=seconds + 20)
    ok = sum(r["ok"] for r in results)
    bad = sum(r["bad"] for r in results)
    assert bad == 0, f"{bad} of {ok + bad} .status reads were not valid JSON, e.g. " \
                     f"{[e for r in results for e in r['examples']][:5]}"
    assert ok > 0


def test_status_sequential_reads_are_valid_json(standin, mounter):
    """One reader, one read after the other (each read()s to EOF, like cat or json.load)."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    res = run([DEBIAN_PYTHON, "-c", STATUS_LOOP, m.status_file, "1.0"])
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["bad"] == 0, (f"{result['bad']} of {result['ok'] + result['bad']} sequential "
                                f".status reads were not valid JSON, e.g. {result['examples'][:3]}")


def test_status_follows_the_state_after_content_is_cached(standin, mounter):
    """Once opens no longer reach the daemon (no_open), .status must still change."""
    m = mounter(standin)
    assert m.status()["state"] == "empty"
    assert read_bytes(m.file) == standin.config_bytes
    assert m.status()["state"] == "ready"
    standin.set_config(SMALL)
    m.send_signal(signal.SIGHUP)
    status = m.wait_status(lambda s: s["version"] == 2, timeout=10)
    assert status["bytes"] == len(SMALL)
    for _ in range(5):  # (validity of every single read: the tests above)
        res = run(["cat", m.status_file])
        try:
            assert json.loads(res.stdout)["version"] == 2
            break
        except ValueError:
            continue
    else:
        pytest.fail(f"cat .status never gave valid JSON: {res.stdout!r}")


# ---------------------------------------------------------------------------------------------
# 10. Logs
# ---------------------------------------------------------------------------------------------

def test_one_log_line_per_fetch_with_outcome_and_duration(standin, mounter):
    standin.enqueue({"status": 500})  # the first POST fails, the retry succeeds: ONE fetch
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    assert read_bytes(m.file) == standin.config_bytes  # cached: no further fetch
    [line] = m.wait_log(r"Fetched the AWS config in [0-9.]+ ?s")
    assert re.search(r"2 request", line) and re.search(rf"{len(standin.config_bytes)} bytes", line), line
    assert len(re.findall(r"Fetched the AWS config", m.log())) == 1, m.log()
    assert standin.irsa_count == 2


def test_failed_fetch_logs_one_line_with_reason_and_duration(standin, mounter):
    standin.set_default({"status": 403})  # permanent: one request, one failed fetch
    m = mounter(standin, deadline=5)
    assert errno_of(lambda: read_bytes(m.file, timeout=15)) == errno.EIO
    [line] = m.wait_log(r"Cannot fetch the AWS config")
    assert "403" in line and re.search(r"in [0-9.]+ ?s", line), line
    assert len(re.findall(r"Cannot fetch the AWS config", m.log())) == m.status()["fetches"]
