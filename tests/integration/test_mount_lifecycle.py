"""`irsafs mount`: lifecycle, mount points and options (issue 3, items 9 and the command line).

Signals, stale mounts left by a killed daemon, missing and busy mount points, daemonizing,
--uid/--gid/--mode, --file, --prefetch.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import time

import pytest

from helpers import errno_of, fuse_skip_reason, is_mounted, read_bytes, unmount, wait_until

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)



# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly_and_exits_0(standin, mounter, sig):
    m = mounter(standin)
    assert read_bytes(m.file) == standin.config_bytes
    rc = m.stop(sig, timeout=10)
    assert rc == 0, f"exit status {rc}\n{m.log()}"
    assert not is_mounted(m.path)
    assert os.listdir(m.path) == [], "the mount point is a plain empty directory again"
    m.wait_log(r"Unmounting")


def test_sigterm_while_readers_wait_ends_them_and_exits_0(standin, mounter):
    standin.set_default({"delay": 20})
    m = mounter(standin)
    p = subprocess.Popen(["cat", m.file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        m.wait_status(lambda s: s["waiting_readers"] >= 1, timeout=10)
        t0 = time.monotonic()
        rc = m.stop(signal.SIGTERM, timeout=10)
        assert rc == 0, m.log()
        out, _ = p.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0 and out == b"", "a waiting reader gets an error, never partial bytes"


def test_sighup_on_an_idle_mount_fetches_in_the_background(standin, mounter):
    m = mounter(standin)
    assert m.status()["state"] == "empty"  # the daemon serves: its setup is complete
    m.send_signal(signal.SIGHUP)
    status = m.wait_status(lambda s: s["version"] == 1, timeout=10)
    assert status["source"] == "irsa-svc"
    assert read_bytes(m.file) == standin.config_bytes
    assert standin.irsa_count == 1
    assert m.alive()


def test_sighup_as_soon_as_the_mount_appears_does_not_stop_the_daemon(standin, mounter):
    """Whoever sees the mount may send SIGHUP at once (e.g. an entrypoint asking for a
    refresh): it must refresh, never unmount."""
    died = []
    attempts = 20
    for i in range(attempts):
        m = mounter(standin, wait=False)
        while not is_mounted(m.path):  # poll mountinfo tightly: SIGHUP the moment it shows
            assert m.alive(), m.log()
        m.send_signal(signal.SIGHUP)

        def settled():
            if not m.alive():
                return "exited"
            try:
                return "refreshed" if m.status(timeout=5)["version"] >= 1 else None
            except OSError:
                return None
        outcome = wait_until(settled, 10, "the daemon to refresh or exit")
        if outcome == "exited":
            died.append(f"attempt {i}: exit status {m.wait_exit(5)}; log: {m.log()!r}")
    assert not died, f"SIGHUP stopped {len(died)} of {attempts} daemons:\n" + "\n".join(died[:3])


# ---------------------------------------------------------------------------------------------
# Stale, missing and busy mount points
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("used, foreground", [
    (True, True), (True, False), (False, True),
], ids=["after-read-foreground", "after-read-daemon", "never-read-foreground"])
def test_mount_over_a_stale_mount_left_by_a_killed_daemon(standin, mounter, used, foreground):
    old = mounter(standin)
    if used:
        assert read_bytes(old.file) == standin.config_bytes
    old.kill()
    assert is_mounted(old.path), "kill -9 leaves the mount behind"
    if used:
        assert errno_of(lambda: os.stat(old.file)) == errno.ENOTCONN
    else:
        assert errno_of(lambda: os.listdir(old.path)) == errno.ENOTCONN

    standin.set_config("[profile after-restart]\nregion = eu-west-1\n")
    new = mounter(standin, mountpoint=old.path, foreground=foreground)
    assert read_bytes(new.file) == standin.config_bytes
    assert new.alive()
    new.wait_log(r"stale")
    rc = new.stop()
    assert rc in (0, None)
    assert not is_mounted(new.path), "one mount only: the stale one was detached"


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_missing_mount_point_fails_naming_the_path(standin, mounter, tmp_path, foreground):
    missing = str(tmp_path / "no" / "such-dir")
    m = mounter(standin, mountpoint=missing, foreground=foreground, check=False)
    if foreground:
        rc = m.wait_exit(10)
    else:
        rc = m.parent_rc
    assert rc not in (0, None), m.log()
    assert missing in m.log() and "No such file or directory" in m.log(), m.log()
    assert not is_mounted(missing)
    assert standin.irsa_count == 0


def test_mount_point_that_is_a_file_fails(standin, mounter, tmp_path):
    path = tmp_path / "a-file"
    path.write_text("x")
    m = mounter(standin, mountpoint=str(path), foreground=False, check=False)
    assert m.parent_rc != 0
    assert str(path) in m.log() and "not a directory" in m.log(), m.log()


@pytest.mark.parametrize("occupant", ["irsafs", "tmpfs"])
def test_busy_mount_point_fails_with_a_clear_error(standin, mounter, tmp_path, occupant):
    first = None
    if occupant == "irsafs":
        first = mounter(standin)
        path = first.path
        assert read_bytes(first.file) == standin.config_bytes
    else:
        path = str(tmp_path / "tmpfs")
        os.mkdir(path)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path], check=True)
    try:
        m = mounter(standin, mountpoint=path, foreground=False, check=False)
        assert m.parent_rc != 0, m.log()
        assert path in m.log() and "busy" in m.log(), m.log()
        if first is not None:
            assert first.alive() and read_bytes(first.file) == standin.config_bytes
    finally:
        if occupant == "tmpfs":
            subprocess.run(["umount", path], check=False)


# ---------------------------------------------------------------------------------------------
# Daemonizing
# ---------------------------------------------------------------------------------------------

def test_daemonized_parent_exits_0_only_once_mounted(standin, mounter):
    m = mounter(standin, foreground=False)
    assert m.parent_rc == 0, m.log()
    assert m.mounted_at_parent_exit, "the parent exited 0 before the mount was there"
    assert m.pid and m.alive(), f"no daemon pid in the log:\n{m.log()}"
    assert read_bytes(m.file) == standin.config_bytes
    # The log stays on the stderr we gave (a file, not a terminal) after daemonizing.
    m.wait_log(r"Fetched the AWS config in [0-9.]+ ?s")
    m.stop(signal.SIGTERM)
    assert not m.alive() and not is_mounted(m.path)


def test_daemonized_mount_is_cleaned_up_by_fusermount(standin, mounter):
    m = mounter(standin, foreground=False)
    unmount(m.path)
    wait_until(lambda: not m.alive(), 10, "the daemon to exit after fusermount3 -u")


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def test_mount_is_nosuid_and_nodev(standin, mounter):
    m = mounter(standin)
    with open("/proc/self/mountinfo") as f:
        lines = [line for line in f if f" {m.path} " in line]
    assert lines, "no mountinfo line"
    options = set(lines[-1].split()[5].split(","))
    assert {"nosuid", "nodev"} <= options, lines[-1]
    assert "fuse.irsafs" in lines[-1]


def test_uid_gid_mode_show_in_stat_and_are_enforced(standin, mounter):
    m = mounter(standin, "--uid", "1234", "--gid", "2345", "--mode", "0640")

    def check():
        st = os.stat(m.file)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 2345, 0o640)
        assert stat.S_ISREG(st.st_mode)
    check()                                    # before the content is known
    assert read_bytes(m.file) == standin.config_bytes
    check()                                    # and after

    def cat_as(uid, gid):
        return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                               "cat", m.file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30)
    owner = cat_as(1234, 1234)
    assert owner.returncode == 0 and owner.stdout == standin.config_bytes, owner.stderr
    group = cat_as(4321, 2345)
    assert group.returncode == 0 and group.stdout == standin.config_bytes, group.stderr
    other = cat_as(4321, 4321)
    assert other.returncode != 0 and b"Permission denied" in other.stderr, other


def test_file_option_names_the_file(standin, mounter):
    m = mounter(standin, file="aws-config")
    assert sorted(os.listdir(m.path)) == [".status", "aws-config"]
    assert read_bytes(m.file) == standin.config_bytes
    assert errno_of(lambda: os.stat(os.path.join(m.path, "config"))) == errno.ENOENT
    assert m.status()["file"] == "aws-config"


def test_prefetch_fetches_at_mount_time(standin, mounter):
    m = mounter(standin, "--prefetch")
    assert standin.wait_for_requests(1, timeout=10), "--prefetch must fetch without a reader"
    m.wait_status(lambda s: s["state"] == "ready", timeout=10)
    assert os.stat(m.file).st_size == len(standin.config_bytes)
    assert read_bytes(m.file) == standin.config_bytes
    assert standin.irsa_count == 1


@pytest.mark.parametrize("extra, message", [
    (["--mode", "rw"], "--mode"),
    (["--refresh-interval", "-1"], "--refresh-interval"),
    (["--file", ".status"], "--file"),
    (["--file", "a/b"], "--file"),
], ids=["mode", "refresh-interval", "file-status", "file-slash"])
def test_bad_mount_options_exit_2(standin, mounter, extra, message):
    m = mounter(standin, *extra, foreground=False, check=False)
    assert m.parent_rc == 2, m.log()
    assert message in m.log()
    assert not is_mounted(m.path)


# ---------------------------------------------------------------------------------------------
# --link: the sidecar's shape (a mount on a subdirectory of the shared volume, the config's path
# a link to it)
# ---------------------------------------------------------------------------------------------

def test_link_points_at_the_file_and_survives_a_daemon_restart(standin, mounter, tmp_path):
    volume = tmp_path / "aws"
    volume.mkdir()
    (volume / "config").write_text("left by the old sidecar\n")  # replaced, never read
    mnt = volume / ".irsafs"
    mnt.mkdir()
    link = str(volume / "config")
    old = mounter(standin, "--link", link, mountpoint=str(mnt))
    assert os.readlink(link) == ".irsafs/config", "relative: the volume may be mounted anywhere"
    with open(link, "rb") as f:
        assert f.read() == standin.config_bytes
    old.wait_log(r"linked from " + link + r" -> \.irsafs/config")

    # The daemon dies: the link stays, the dead mount answers ENOTCONN at once (no hang; the
    # file's cached pages may still be read); a new daemon detaches it and serves through the
    # same link.
    old.kill()
    assert errno_of(lambda: os.listdir(mnt)) == errno.ENOTCONN
    standin.set_config("[profile after-restart]\nregion = eu-west-1\n")
    new = mounter(standin, "--link", link, mountpoint=str(mnt))
    with open(link, "rb") as f:
        assert f.read() == standin.config_bytes

    # SIGTERM: unmounted, the link removed: a reader gets ENOENT at once.
    assert new.stop() == 0, new.log()
    assert not is_mounted(str(mnt))
    assert not os.path.lexists(link)
    assert errno_of(lambda: open(link, "rb")) == errno.ENOENT


def test_link_outside_the_mount_points_directory_is_relative_too(standin, mounter, tmp_path):
    link = tmp_path / "elsewhere" / "config"
    link.parent.mkdir()
    m = mounter(standin, "--link", str(link))
    assert os.readlink(link) == os.path.relpath(m.file, link.parent)
    assert read_bytes(str(link)) == standin.config_bytes


def test_link_over_a_directory_fails_and_leaves_no_mount(standin, mounter, tmp_path):
    link = tmp_path / "config"
    link.mkdir()
    m = mounter(standin, "--link", str(link), check=False)
    assert m.wait_exit(10) == 1, m.log()
    assert f"Cannot create the link {link}" in m.log()
    assert not is_mounted(m.path)
    assert link.is_dir()
