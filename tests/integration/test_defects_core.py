"""Issue 9, the defects in core/ and fetcher/ (items 3, 4, 5, 6, 8, 9, 10, 12), each against a
real mount or a real `irsafs fetch` and the stand-in. Every test is named after its defect and
failed on the code the issue was filed against.
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import threading
import time

import pytest

from helpers import (DEFAULT_RUN_ID, Mount, clean_env, daemon_pid_from_log, errno_of, fetch_args,
                     fuse_skip_reason, is_mounted, read_bytes, realistic_config, unmount)

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

SEED = realistic_config(3, "seed")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Background:
    """fn() in a thread; result() waits for it and returns its value or raises its error."""

    def __init__(self, fn):
        self.box = {}

        def run():
            try:
                self.box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to result()
                self.box["error"] = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 30.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "still running"
        if "error" in self.box:
            raise self.box["error"]
        return self.box["value"]


# --- item 3 ----------------------------------------------------------------------------------

def test_ticker_spins_a_core_during_a_fetch_after_a_failure(standin, mounter):
    """After a failed fetch, the end of its hold-off stayed in next_wakeup() while the next
    fetch ran: the ticker spun (4.6 s of CPU in 5 s). The daemon must idle during a fetch."""
    standin.set_default({"status": 500})
    m = mounter(standin, deadline=3, timeout=1)
    assert errno_of(lambda: read_bytes(m.file)) == errno.EIO
    m.wait_status(lambda s: s["state"] == "error" and s["next_fetch_not_before"] is None, timeout=10,
                  what="the hold-off after the first failure to end")
    before = cpu_seconds(m.pid)
    t0 = time.monotonic()
    assert errno_of(lambda: read_bytes(m.file)) == errno.EIO  # a second fetch, ~3 s
    took = time.monotonic() - t0
    used = cpu_seconds(m.pid) - before
    print(f"second fetch: {took:.2f} s, daemon CPU {used:.2f} s")
    assert took >= 1.5, f"the second read ended after {took:.2f} s: no fetch was measured"
    assert used < 0.5 * took, f"the daemon used {used:.2f} s of CPU in {took:.2f} s of fetching"


# --- item 4 ----------------------------------------------------------------------------------

def test_a_mount_seeded_by_a_write_keeps_calling_irsa_svc(standin, mounter):
    """A reader starts a fetch (irsa-svc answers 500); a writer seeds the text meanwhile. From
    then on irsa-svc is never called: the running fetch is cancelled (a request on the wire
    may finish) and its failure schedules no refresh."""
    standin.set_default({"status": 500})
    m = mounter(standin, "--refresh-interval", "2", deadline=3, timeout=1)
    reader = Background(lambda: read_bytes(m.file))
    assert standin.wait_for_requests(1, timeout=10), "the reader started no fetch"
    with open(m.file, "w") as f:
        f.write(SEED)
    m.wait_log(r"irsa-svc will not be called for this mount")
    seeded_at = standin.irsa_count
    assert reader.result() == SEED.encode()
    # The absence of requests takes a wait to show: three refresh intervals, and more than
    # the running fetch's own deadline.
    time.sleep(6)
    later = standin.irsa_count - seeded_at
    assert later <= 1, f"{later} POSTs to irsa-svc after the mount was seeded by a write\n{m.log()}"
    m.wait_log(r"The fetch running when the content was written ended \(cancelled\)", timeout=1)
    status = m.status(strict=True)
    assert status["source"] == "write" and status["next_refresh_at"] is None, status
    assert read_bytes(m.file) == SEED.encode()


# --- item 5 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"body": "E" * 119 + "\u00e9"},
                                  {"body_b64": "//7toIAgcmF3IGJ5dGVzIMM="}],
                         ids=["cut-inside-a-character", "not-utf8"])
def test_status_fails_with_eio_after_an_error_body(standin, mounter, body):
    """The token endpoint answers 500 with a body whose first line, cut at 120 bytes, splits a
    character (or that is not UTF-8 at all): .status then failed with EIO for good."""
    standin.set_token_default({"status": 500, **body})
    m = mounter(standin, deadline=2, timeout=1)
    assert errno_of(lambda: read_bytes(m.file)) == errno.EIO
    status = m.status(strict=True)
    assert status["state"] == "error" and "HTTP 500" in status["last_error"], status
    if "body" in body:
        assert "E" * 100 in status["last_error"] and "\u00e9" not in status["last_error"], status
    log = m.log()
    assert "Cannot fetch the AWS config" in log


def run_daemonizing_mount(irsafs_bin, home, argv_tail, env=None, timeout=30):
    """Runs `irsafs mount ARGS MOUNTPOINT` (daemonizing) on a fresh mount point; returns
    (exit status, its stderr). A daemon left mounted (the old behaviour) is stopped and its
    mount removed before returning."""
    base = tempfile.mkdtemp(prefix="irsafs-mnt-")
    mp = os.path.join(base, "mnt")
    os.mkdir(mp)
    with tempfile.NamedTemporaryFile(prefix="irsafs-log-") as log:
        try:
            res = subprocess.run([irsafs_bin, "mount", *argv_tail, mp], env=clean_env(home, env),
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=timeout)
            with open(log.name, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            return res.returncode, text, is_mounted(mp)
        finally:
            with open(log.name, "rb") as f:
                pid = daemon_pid_from_log(f.read().decode("utf-8", "replace"))
            if is_mounted(mp):
                Mount(mp, "config", log.name, [], pid=pid).cleanup()
            unmount(mp)
            os.rmdir(mp)
            os.rmdir(base)


@pytest.mark.parametrize("name, problem", [
    ("conf\udcff", "not valid UTF-8"),  # argv byte 0xff
    ("c" * 300, "longer than 255 bytes"),
], ids=["not-utf8", "too-long"])
def test_a_file_name_that_breaks_status_is_accepted(irsafs_bin, home, standin, name, problem):
    """A --file name that is not UTF-8 made .status unrenderable (JSON), for good; one longer
    than NAME_MAX could never be looked up. Both are refused at start, exit 2."""
    rc, err, mounted = run_daemonizing_mount(irsafs_bin, home, [*fetch_args(standin), "--file", name])
    assert rc == 2 and not mounted, err
    assert "--file" in err and problem in err, err


# --- item 6 ----------------------------------------------------------------------------------

BAD_RUN_ID = "run-\udcff"  # passed to the process as the byte 0xff


def pod_info(tmp_path, value_escaped: str) -> str:
    path = tmp_path / "labels"
    path.write_text(f'app="x"\ndominodatalab.com/irsa-workload-type="{value_escaped}"\n')
    return str(path)


def bad_input_cases(standin, tmp_path):
    base = ["--endpoint", standin.endpoint, "--token-url", standin.token_url, "--ca-file", standin.ca_file,
            "--deadline", "5"]
    return {
        "run-id-flag": (base + ["--run-id", BAD_RUN_ID], None, "--run-id"),
        "run-id-env": (base, {"DOMINO_RUN_ID": BAD_RUN_ID}, "DOMINO_RUN_ID"),
        "workload-type-flag": (base + ["--run-id", DEFAULT_RUN_ID, "--workload-type", "w-\udcc3"], None,
                               "--workload-type"),
        "pod-info-label": (base + ["--run-id", DEFAULT_RUN_ID],
                           {"POD_INFO_PATH": pod_info(tmp_path, "cluster-\\xff")},
                           "dominodatalab.com/irsa-workload-type"),
    }


CASES = ["run-id-flag", "run-id-env", "workload-type-flag", "pod-info-label"]


@pytest.mark.parametrize("case", CASES)
def test_the_fetch_fails_on_a_non_utf8_run_id_or_workload_type(run_irsafs, standin, tmp_path, case):
    """`irsafs fetch` exited 1 (the JSON dump threw); it is bad usage, exit 2, said at once."""
    args, env, names = bad_input_cases(standin, tmp_path)[case]
    res = run_irsafs("fetch", *args, env=env)
    assert res.rc == 2, res.explain()
    first = res.stderr.splitlines()[0]
    assert names in first and "not valid UTF-8" in first, res.explain()
    assert standin.irsa_count == 0 and standin.token_count == 0


@pytest.mark.parametrize("case", CASES)
def test_the_daemon_aborts_on_a_non_utf8_run_id_or_workload_type(irsafs_bin, home, standin, tmp_path,
                                                                case):
    """`irsafs mount` mounted, then aborted (exit 134, a stale mount) at the first read. Now it
    refuses to start: exit 2 with one line naming the option or label."""
    args, env, names = bad_input_cases(standin, tmp_path)[case]
    rc, err, mounted = run_daemonizing_mount(irsafs_bin, home, args, env=env)
    assert rc == 2 and not mounted, err
    first = err.splitlines()[0]
    assert names in first and "not valid UTF-8" in first, err
    assert standin.irsa_count == 0


# --- item 8 ----------------------------------------------------------------------------------

def test_a_truncate_does_not_wake_the_ticker(standin, mounter):
    """truncate -s 36 (a valid prefix: the first section header) stayed pending until something
    unrelated woke the ticker. It is committed once quiet, like a write."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    prefix = standin.config_bytes[:36]
    assert prefix.endswith(b"]\n")
    subprocess.run(["truncate", "-s", "36", m.file], check=True, timeout=30)
    m.wait_status(lambda s: s["writes"]["pending"] == 0, timeout=5, what="the truncate to be committed")
    status = m.status(strict=True)
    assert status["version"] == 2 and status["source"] == "write", status
    assert read_bytes(m.file) == prefix


def test_an_o_rdonly_o_trunc_open_is_counted_as_a_rejected_write(standin, mounter):
    """An O_RDONLY|O_TRUNC open (the kernel truncates to 0, nothing is written) left a pending
    empty session, later counted as a rejected write. It changes nothing and is not counted."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    fd = os.open(m.file, os.O_RDONLY | os.O_TRUNC)
    os.close(fd)
    status = m.wait_status(lambda s: s["writes"]["pending"] == 0, timeout=5,
                           what="the empty session to end")
    assert status["writes"]["rejected"] == 0 and status["last_error"] is None, status
    assert status["state"] == "ready" and status["version"] == 1, status
    assert read_bytes(m.file) == standin.config_bytes


# --- item 9 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"], ids=["zero", "past-date"])
def test_retry_after_zero_makes_a_retry_storm(run_fetch, standin, value):
    """503 with Retry-After: 0 (or a date in the past) was a zero delay: 360 requests in 2 s.
    It falls back to the usual backoff, and the message does not blame the Retry-After."""
    standin.set_default({"status": 503, "retry_after": value})
    res = run_fetch(*fetch_args(standin, deadline=2, timeout=1))
    assert res.rc == 1, res.explain()
    assert standin.irsa_count <= 6, f"{standin.irsa_count} POSTs in {res.elapsed:.2f} s"
    assert standin.token_count <= 6
    assert "Retry-After" not in res.stderr, res.explain()
    assert "no time left before the deadline" in res.stderr, res.explain()


# --- item 10 ---------------------------------------------------------------------------------

def test_config_text_of_an_invalid_body_is_logged_at_debug(run_fetch, standin):
    """The first line of an invalid 200 body was logged at debug; the rule broken and its
    position are logged instead."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    standin.enqueue({"body": f"aws_secret_access_key = {secret}\n[default]\n"})
    res = run_fetch(*fetch_args(standin, deadline=10), "--log-level", "debug")
    assert res.rc == 0, res.explain()
    assert "line 1" in res.stderr, res.explain()
    assert secret not in res.stderr and "aws_secret_access_key" not in res.stderr, res.explain()


# --- item 12 ---------------------------------------------------------------------------------

def big_config(size: int) -> bytes:
    parts, total, i = [], 0, 0
    while True:
        part = (f"[profile big-{i}]\nrole_arn = arn:aws:iam::111111111111:role/big-{i}\n"
                "region = us-east-1\n\n").encode()
        if total + len(part) > size:
            return b"".join(parts)
        parts.append(part)
        total += len(part)
        i += 1


def test_quadratic_validation_of_a_config_written_in_4_kib_writes(standin, mounter):
    """A 1 MiB config written in 4 KiB writes took 12.2 s (each write validated the whole text
    under the lock) and published 81 intermediate versions."""
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    text = big_config((1 << 20) - 5000)
    assert len(text) % 4096 != 0
    t0 = time.monotonic()
    fd = os.open(m.file, os.O_WRONLY | os.O_TRUNC)
    try:
        for off in range(0, len(text), 4096):
            assert os.write(fd, text[off:off + 4096]) == len(text[off:off + 4096])
    finally:
        os.close(fd)
    took = time.monotonic() - t0
    status = m.wait_status(lambda s: s["source"] == "write" and s["writes"]["pending"] == 0, timeout=10,
                           what="the written text to be committed")
    print(f"{len(text)} bytes in 4 KiB writes: {took:.2f} s, version {status['version']}")
    assert status["bytes"] == len(text), status
    assert status["version"] <= 3, f"{status['version'] - 1} versions published for one written text"
    assert took < 4.0, f"writing {len(text)} bytes in 4 KiB writes took {took:.2f} s"
    assert read_bytes(m.file) == text


# --- suspected: --refresh-interval without an upper bound ------------------------------------

def test_refresh_interval_without_upper_bound_overflows(irsafs_bin, home, standin):
    """--refresh-interval 1e300 passed the check (finite) and overflowed the clock's range."""
    rc, err, mounted = run_daemonizing_mount(irsafs_bin, home,
                                             [*fetch_args(standin), "--refresh-interval", "1e300"])
    assert rc == 2 and not mounted, err
    assert "--refresh-interval" in err, err
