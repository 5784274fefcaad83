"""kill -9 of the daemon (issue 6, item 5): readers get an error, never a hang, and a new
`irsafs mount` at the same path restores service.

The daemon runs in the foreground (-f) so the test has its pid. Readers are separate processes
(a reader stuck in a FUSE call cannot hang the test run: it is killed after the hang guard).
The entrypoint-based restore is covered by the container test (tests/container).
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pytest

from helpers import (collect_json, DEBIAN_PYTHON, fuse_skip_reason, is_mounted, mount_is_connected,
                     read_bytes, realistic_config, wait_until)

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

# What a reader may get from a FUSE mount whose daemon died: a request in flight is aborted
# (ECONNABORTED), a new one finds no connection (ENOTCONN).
DEAD_DAEMON_ERRNOS = {errno.ECONNABORTED, errno.ENOTCONN}
PROMPT = 5.0        # seconds: "promptly" (measured: a few milliseconds)
HANG_GUARD = 30.0

READER = r"""
import json, os, sys, time
path = sys.argv[1]
t0 = time.monotonic()
try:
    with open(path, "rb") as f:
        data = f.read()
    out = {"bytes": len(data), "errno": None}
except OSError as e:
    out = {"bytes": None, "errno": e.errno}
out["done"] = time.monotonic()
print(json.dumps(out), flush=True)
"""

NEW_CONFIG = realistic_config(3, "after-restart").encode()


def errno_name(value) -> str:
    return errno.errorcode.get(value, str(value)) if isinstance(value, int) else repr(value)


def op_errno(fn):
    """None when fn() succeeds, else the errno; a hang guard around the call."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def restart_and_check(standin, mounter, old):
    """A new `irsafs mount` at the same path detaches the stale mount and serves the bytes
    (the new ones: the kernel's cache of the dead mount is not what answers)."""
    standin.set_default(None)
    standin.set_config(NEW_CONFIG)
    t0 = time.monotonic()
    new = mounter(standin, mountpoint=old.path)
    took = time.monotonic() - t0
    assert new.alive() and is_mounted(new.path) and mount_is_connected(new.path)
    new.wait_log(r"stale")
    assert read_bytes(new.file, timeout=15) == NEW_CONFIG
    assert new.status()["state"] == "ready"
    print(f"new mount over the stale one ready in {took:.2f}s")
    return new


def test_kill_9_while_readers_wait(standin, mounter):
    n = 6
    standin.set_default({"delay": 60})  # the fetch never ends by itself during the test
    m = mounter(standin, deadline=120)
    readers = [subprocess.Popen([DEBIAN_PYTHON, "-c", READER, m.file], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(n)]
    try:
        m.wait_status(lambda s: s["waiting_readers"] == n, timeout=20,
                      what=f"{n} parked readers")
        # The readers park before the fetch's POST reaches irsa-svc (token, TLS first).
        assert standin.wait_for_requests(1, timeout=20), "the readers' fetch never reached irsa-svc"
        assert standin.irsa_count == 1
        killed_at = time.monotonic()
        m.kill()  # SIGKILL, then reap
        results = collect_json(readers, HANG_GUARD, "a waiting reader still hangs after kill -9")
    finally:
        for p in readers:
            if p.poll() is None:
                p.kill()
                p.wait()
    got = sorted(errno_name(r["errno"]) for r in results)
    slowest = max(r["done"] - killed_at for r in results)
    print(f"{n} waiting readers after kill -9: {got}, the last after {slowest * 1000:.0f} ms")
    assert all(r["errno"] in DEAD_DAEMON_ERRNOS for r in results), results
    assert slowest < PROMPT, f"a reader got its error {slowest:.2f}s after kill -9"

    # Idle now: the mount is stale; every new open fails with ENOTCONN, at once.
    assert is_mounted(m.path) and not mount_is_connected(m.path)
    t0 = time.monotonic()
    assert op_errno(lambda: read_bytes(m.file, timeout=HANG_GUARD)) == errno.ENOTCONN
    assert op_errno(lambda: read_bytes(m.status_file, timeout=HANG_GUARD)) == errno.ENOTCONN
    assert time.monotonic() - t0 < PROMPT

    restart_and_check(standin, mounter, m)


@pytest.mark.parametrize("warm", [False, True], ids=["never-read", "after-a-read"])
def test_kill_9_while_idle(standin, mounter, warm):
    m = mounter(standin)
    old = standin.config_bytes
    if warm:
        assert read_bytes(m.file) == old
        os.stat(m.file)
    m.kill()
    assert is_mounted(m.path) and not mount_is_connected(m.path)

    results = {}
    t0 = time.monotonic()
    results["status"] = op_errno(lambda: read_bytes(m.status_file, timeout=HANG_GUARD))
    results["listdir"] = op_errno(lambda: os.listdir(m.path))
    box = {}

    def read_config():
        box["data"] = read_bytes(m.file, timeout=HANG_GUARD)
    results["config"] = op_errno(read_config)
    took = time.monotonic() - t0
    print(f"after kill -9 ({'warm' if warm else 'cold'}): "
          f"{ {k: errno_name(v) if v else 'ok' for k, v in results.items()} } in {took:.3f}s")
    assert took < PROMPT
    # .status (attribute timeout 0) and the directory always ask the daemon: ENOTCONN.
    assert results["status"] == errno.ENOTCONN
    assert results["listdir"] == errno.ENOTCONN
    if not warm:
        assert results["config"] == errno.ENOTCONN
    else:
        # The file's pages, attributes and dentry are cached in the kernel and no OPEN is sent
        # (no_open): a reader may still get the last served content from the page cache, or
        # ENOTCONN once it was evicted; never a partial or empty file, never a hang.
        assert results["config"] in (None, errno.ENOTCONN)
        if results["config"] is None:
            assert box["data"] == old, f"{len(box['data'])} bytes from the dead mount"

    restart_and_check(standin, mounter, m)


def test_kill_9_during_a_refresh_while_readers_read(standin, mounter):
    """Readers of a warm file while the daemon dies in the middle of a refresh: each read is
    the whole old text or an error, never partial; nobody hangs."""
    m = mounter(standin)
    old = standin.config_bytes
    assert read_bytes(m.file) == old
    standin.set_default({"delay": 60})
    n = standin.irsa_count
    m.send_signal(signal.SIGHUP)  # a refresh that hangs at irsa-svc
    assert standin.wait_for_requests(n + 1, timeout=10)
    readers = [subprocess.Popen([DEBIAN_PYTHON, "-c", READER, m.file], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(4)]
    try:
        m.kill()
        results = collect_json(readers, HANG_GUARD, "a reader still hangs after kill -9")
    finally:
        for p in readers:
            if p.poll() is None:
                p.kill()
                p.wait()
    print("readers around kill -9 during a refresh:", results)
    for r in results:
        assert r["bytes"] == len(old) or r["errno"] in DEAD_DAEMON_ERRNOS, r
    restart_and_check(standin, mounter, m)


def test_entrypoint_style_restart_loop_over_a_stale_mount(standin, mounter):
    """Killed twice in a row: each new mount at the same path detaches the stale one."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    for _ in range(2):
        m.kill()
        assert op_errno(lambda: read_bytes(m.status_file, timeout=HANG_GUARD)) == errno.ENOTCONN
        m = restart_and_check(standin, mounter, m)
    wait_until(lambda: m.status()["state"] == "ready", 5, "the last mount ready")
