"""Shared fixtures for the irsafs integration tests.

Run from tests/integration with Debian's Python:
    IRSAFS_BIN=../../build/irsafs /usr/bin/python3 -m pytest -q -p no:cacheprovider test_fetch.py
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "standin"))
sys.path.insert(0, str(HERE))

from irsa_standin import IrsaStandin, TestPKI  # noqa: E402
from helpers import (Mount, RunResult, clean_env, daemon_pid_from_log,  # noqa: E402
                     is_mounted, mount_args, mount_ids, mount_is_connected, wait_for_daemon,
                     wait_until)


@pytest.fixture(scope="session")
def irsafs_bin() -> str:
    path = os.environ.get("IRSAFS_BIN")
    if not path:
        pytest.skip("IRSAFS_BIN is not set: run through ctest, or set IRSAFS_BIN to the built "
                    "irsafs binary (e.g. IRSAFS_BIN=$PWD/build/irsafs)")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        pytest.fail(f"IRSAFS_BIN={path} is not an executable file")
    return path


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    """Test CA and certificates, generated once per process."""
    return TestPKI.shared()


@pytest.fixture
def standin(pki):
    """A fresh irsa-svc + token endpoint stand-in per test."""
    s = IrsaStandin(pki=pki).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def home(tmp_path) -> pathlib.Path:
    h = tmp_path / "home"
    h.mkdir(exist_ok=True)
    return h


@pytest.fixture
def run_irsafs(irsafs_bin, home):
    """run_irsafs(*args, env=None, timeout=60, umask=None, cwd=None) -> RunResult.

    Runs irsafs with a clean environment: PATH, HOME (a fresh directory), LANG, plus `env`.
    """
    def run(*args, env: dict | None = None, timeout: float = 60, umask: int | None = None,
            cwd: str | None = None) -> RunResult:
        cmd = [irsafs_bin, *map(str, args)]
        preexec = (lambda: os.umask(umask)) if umask is not None else None
        start = time.monotonic()
        try:
            res = subprocess.run(cmd, env=clean_env(home, env), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=timeout, preexec_fn=preexec, cwd=cwd)
        except subprocess.TimeoutExpired as e:
            err = (e.stderr or b"").decode("utf-8", "replace")
            pytest.fail(f"{' '.join(cmd)} did not finish within {timeout}s\nstderr:\n{err}")
        return RunResult(res.returncode, res.stdout, res.stderr.decode("utf-8", "replace"),
                         time.monotonic() - start)
    return run


@pytest.fixture
def run_fetch(run_irsafs):
    """run_fetch(*args, env=None, timeout=60, umask=None) -> (rc, stdout, stderr, elapsed)
    for `irsafs fetch ARGS` in a clean environment."""
    def run(*args, **kwargs) -> RunResult:
        return run_irsafs("fetch", *args, **kwargs)
    return run


@pytest.fixture
def mounter(irsafs_bin, home, tmp_path):
    """mounter(standin=None, *extra, foreground=True, deadline=20, timeout=None, file=None,
    log_level="info", env=None, mountpoint=None, check=True) -> Mount

    Runs `irsafs mount` against `standin` (None: an unreachable irsa-svc) with the extra
    options, on a fresh mount point (or `mountpoint`), in a clean environment, with stderr
    (the log) going to a file. In the foreground (-f, the default) it returns once mountinfo
    shows a new mount there (a stale one from before does not count). Without -f it runs the parent to its end and records parent_rc,
    parent_stderr and mounted_at_parent_exit (mountinfo checked at once, no waiting) on the
    Mount. check=False returns a Mount also when mounting failed; wait=False (foreground only)
    returns at once after starting the daemon. Teardown stops every daemon
    (SIGTERM, then SIGKILL) and unmounts whatever is left, stale mounts included.

    Mount points live under a fresh 0755 directory in /tmp (not in tmp_path, which is 0700)
    so that other uids can reach them.
    """
    base = tempfile.mkdtemp(prefix="irsafs-mnt-")
    os.chmod(base, 0o755)
    started: list = []

    def start(standin=None, *extra, foreground: bool = True, deadline=20, timeout=None,
              file: str | None = None, log_level: str = "info", env: dict | None = None,
              mountpoint: str | None = None, check: bool = True, wait: bool = True) -> Mount:
        n = len(started)
        mp = mountpoint or os.path.join(base, f"mnt{n}")
        if mountpoint is None:
            os.makedirs(mp, exist_ok=True)
        log_path = str(tmp_path / f"irsafs-{n}.log")
        argv = [irsafs_bin, "mount", *mount_args(standin, deadline, timeout),
                "--log-level", log_level]
        if file is not None:
            argv += ["--file", file]
        argv += [str(a) for a in extra]
        if foreground:
            argv.append("-f")
        argv.append(mp)
        # Something already mounted there (a stale mount to be replaced) must not count as
        # our mount: a new mount id, or (ids are reused at once) the daemon's own word.
        before = mount_ids(mp)

        def mounted_now(m: Mount) -> bool:
            if not is_mounted(mp):
                return False
            if not before or mount_ids(mp) - before:
                return True
            return "Mounted irsafs" in m.log() and mount_is_connected(mp)
        with open(log_path, "ab") as log:
            if foreground:
                proc = subprocess.Popen(argv, env=clean_env(home, env), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log)
                m = Mount(mp, file or "config", log_path, argv, proc=proc)
                started.append(m)
                if not wait:
                    return m
                try:
                    wait_for_daemon(lambda: mounted_now(m), timeout=30, proc=proc,
                                    what=f"the mount at {mp}")
                except (RuntimeError, TimeoutError) as e:
                    if check:
                        pytest.fail(f"irsafs mount failed: {e}\n{' '.join(argv)}\n"
                                    f"log:\n{m.log()}")
                return m
            t0 = time.monotonic()
            try:
                res = subprocess.run(argv, env=clean_env(home, env), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"irsafs mount (daemonizing) did not return within 30s: {argv}")
        m = Mount(mp, file or "config", log_path, argv)
        # At once, no waiting: the parent must return only once mounted.
        mounted = is_mounted(mp) and (not before or bool(mount_ids(mp) - before)
                                      or mount_is_connected(mp))
        m.parent_rc = res.returncode
        m.parent_elapsed = time.monotonic() - t0
        m.mounted_at_parent_exit = mounted
        started.append(m)
        if res.returncode == 0:
            # The daemon logs "Mounted ..." with its own pid once detached.
            try:
                wait_until(lambda: "Mounted irsafs" in m.log(), 30, "the daemon's first log line")
            except TimeoutError:
                pass
            m.pid = daemon_pid_from_log(m.log())
        if check and (res.returncode != 0 or not mounted):
            pytest.fail(f"irsafs mount exited {res.returncode}, mounted={mounted}\n"
                        f"{' '.join(argv)}\nlog:\n{m.log()}")
        return m

    yield start

    errors = []
    for m in reversed(started):
        try:
            m.cleanup()
        except Exception as e:  # noqa: BLE001 - clean up the others, then report
            errors.append(f"{m.path}: {e}")
    for m in started:
        if os.path.dirname(m.path) == base:
            try:
                os.rmdir(m.path)
            except OSError:
                pass
    try:
        os.rmdir(base)
    except OSError as e:
        errors.append(f"{base}: {e}")
    if errors:
        pytest.fail("mount teardown: " + "; ".join(errors))
