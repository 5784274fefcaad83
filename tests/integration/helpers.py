"""Helpers shared by the integration tests: `irsafs fetch` runs, mounts and their daemons.

Never sleep for a fixed time to wait for something: poll the thing itself with a timeout.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import NamedTuple, Optional

DEFAULT_RUN_ID = "run-0123456789abcdef"


class RunResult(NamedTuple):
    """What a finished irsafs process did. Unpacks as (rc, stdout, stderr, elapsed)."""
    rc: int
    stdout: bytes
    stderr: str
    elapsed: float

    def explain(self) -> str:
        """For assertion messages."""
        out = self.stdout[:500]
        return (f"\nexit status {self.rc} after {self.elapsed:.2f}s\nstdout: {out!r}\n"
                f"stderr:\n{self.stderr}")


def clean_env(home: str, extra: Optional[dict] = None) -> dict:
    """A minimal environment: nothing from the outer one that could change TLS, AWS or
    Domino behaviour (SSL_CERT_FILE, CURL_CA_BUNDLE, AWS_*, DOMINO_*, *_proxy, ...)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    env.update({k: str(v) for k, v in (extra or {}).items() if v is not None})
    return env


def fetch_args(standin, run_id: Optional[str] = DEFAULT_RUN_ID, ca_file: Optional[str] = "",
               deadline: Optional[float] = 20, timeout: Optional[float] = None) -> list:
    """Command-line options pointing `irsafs fetch` at a stand-in. ca_file "" means the
    stand-in's CA, None means no --ca-file."""
    args = ["--endpoint", standin.endpoint, "--token-url", standin.token_url]
    if run_id is not None:
        args += ["--run-id", run_id]
    if ca_file is not None:
        args += ["--ca-file", ca_file or standin.ca_file]
    if deadline is not None:
        args += ["--deadline", _num(deadline)]
    if timeout is not None:
        args += ["--timeout", _num(timeout)]
    return args


def free_port() -> int:
    """A port nobody listens on right now (bound on port 0, then closed)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------------------------
# Mounts
# --------------------------------------------------------------------------------------------

def _canonical(path: str) -> str:
    # Resolve the parent only: stat() of a dead FUSE mount point itself fails (ENOTCONN).
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def mounts() -> list:
    """Every mount this process sees, oldest first, as findmnt (util-linux) reads
    /proc/self/mountinfo: dicts with id, target, fstype, source, vfs-options, fs-options."""
    out = subprocess.run(["findmnt", "--json", "--list", "--output",
                          "ID,TARGET,FSTYPE,SOURCE,VFS-OPTIONS,FS-OPTIONS"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)["filesystems"]


def mount_entry(path: str) -> Optional[dict]:
    """The topmost mount at path (see mounts()), or None."""
    target = _canonical(path)
    found = [m for m in mounts() if m["target"] == target]
    return found[-1] if found else None


def is_mounted(path: str, fstype_prefix: str = "fuse") -> bool:
    entry = mount_entry(path)
    return entry is not None and entry["fstype"].startswith(fstype_prefix)


def wait_for_mount(path: str, timeout: float = 10.0, proc: Optional[subprocess.Popen] = None,
                   fstype_prefix: str = "fuse") -> None:
    """Poll /proc/self/mountinfo until a FUSE mount appears at path. Raises TimeoutError, or
    RuntimeError when `proc` (the daemon, in the foreground) exits first."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if is_mounted(path, fstype_prefix):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {proc.returncode} before "
                               f"{path} was mounted")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} not mounted after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def mount_ids(path: str) -> set:
    """The mount ids of everything mounted at path."""
    target = _canonical(path)
    return {m["id"] for m in mounts() if m["target"] == target}


def mount_is_connected(path: str) -> bool:
    """statfs reaches the daemon: False for a stale FUSE mount (ENOTCONN)."""
    try:
        os.statvfs(path)
        return True
    except OSError:
        return False


def wait_for_daemon(ready, timeout: float = 10.0, proc: Optional[subprocess.Popen] = None,
                    what: str = "the mount") -> None:
    """Poll ready() until true. RuntimeError when `proc` exits first, TimeoutError after."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {proc.returncode} before {what} "
                               "was ready")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_for_unmount(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while is_mounted(path):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} still mounted after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def unmount(path: str, timeout: float = 10.0) -> None:
    """Unmount a FUSE mount: fusermount3 -u, falling back to a lazy -uz. No-op when not
    mounted. Waits until mountinfo no longer shows it."""
    if not is_mounted(path):
        return
    res = subprocess.run(["fusermount3", "-u", path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if res.returncode != 0 and is_mounted(path):
        subprocess.run(["fusermount3", "-uz", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    wait_for_unmount(path, timeout)


# --------------------------------------------------------------------------------------------
# irsafs mount: a daemon under test
# --------------------------------------------------------------------------------------------

DEBIAN_PYTHON = "/usr/bin/python3"
DEBIAN_AWS = "/usr/bin/aws"
UNREACHABLE_ARGS = ["--endpoint", "https://127.0.0.1:9/map_iam_roles_to_pod_sa",
                    "--token-url", "http://127.0.0.1:9/access-token",
                    "--run-id", DEFAULT_RUN_ID]


def free_port() -> int:
    """A port nobody listens on right now (bound on port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(home, config_file: str, extra: Optional[dict] = None) -> dict:
    """The environment of an AWS client (boto3, the AWS CLI) reading `config_file`: no shared
    credentials file, no instance metadata, one attempt per call, a region; plus `extra`."""
    env = {
        "AWS_CONFIG_FILE": config_file,
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(str(home), "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "AWS_PAGER": "",
        "AWS_CLI_AUTO_PROMPT": "off",
    }
    env.update(extra or {})
    return clean_env(home, env)


def fuse_skip_reason() -> Optional[str]:
    """Why mount tests cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: the mount tests need FUSE (in a container: --device /dev/fuse)"
    if os.geteuid() != 0:
        return "the mount tests run as root (allow_other, other uids, fusermount3 of stale mounts)"
    if subprocess.run(["sh", "-c", "command -v fusermount3"], stdout=subprocess.DEVNULL).returncode:
        return "fusermount3 is missing (apt-get install fuse3)"
    return None


def realistic_config(profiles: int, tag: str = "acme") -> str:
    """An AWS config as irsa-svc serves it: pairs of source + assumed-role profiles, with a
    [default] section and a comment. About 330 bytes per pair of profiles."""
    parts = [f"# AWS config for the Domino workload ({tag}), generated by irsa-svc\n",
             "[default]\nregion = us-west-2\n\n"]
    for i in range(profiles):
        role = f"{tag}-role-{i:03d}"
        parts.append(
            f"[profile src_{role}]\n"
            "web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token\n"
            f"role_arn = arn:aws:iam::{111111111111 + i}:role/{role}\n"
            "\n"
            f"[profile {role}]\n"
            f"source_profile = src_{role}\n"
            f"role_arn = arn:aws:iam::{222222222222 + i}:role/{role}\n"
            "\n")
    return "".join(parts)


def profile_names(text: str) -> list:
    """The profile names boto3 / the AWS CLI list for a config text, sorted."""
    names = []
    for line in text.splitlines():
        m = re.match(r"^\[(?:profile\s+)?([^\]]+)\]\s*$", line)
        if m:
            names.append(m.group(1).strip())
    return sorted(names)


class TimedOut(Exception):
    pass


def run_in_thread(fn, timeout: float = 10.0):
    """fn() in a daemon thread; its result, or its exception re-raised; TimedOut when it does
    not finish (a FUSE call that hangs: the mount's teardown kills the daemon, which frees the
    thread)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimedOut(f"{getattr(fn, '__name__', fn)} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def start_readers(path: str, n: int, gate: Optional[threading.Barrier] = None) -> tuple:
    """Starts n daemon threads that each read `path` whole (after waiting at `gate`, when
    given, so that they arrive together). Returns (threads, results): results[i] becomes the
    bytes reader i got, or the OSError it got instead."""
    results: list = [None] * n

    def reader(i):
        if gate is not None:
            gate.wait()
        try:
            with open(path, "rb") as f:
                results[i] = f.read()
        except OSError as e:
            results[i] = e
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def read_bytes(path: str, timeout: float = 20.0) -> bytes:
    """open + read + close with a hang guard."""
    def read():
        with open(path, "rb") as f:
            return f.read()
    read.__name__ = f"reading {path}"
    return run_in_thread(read, timeout)


def pid_alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.01):
    """Poll predicate() until it returns something truthy; return that. TimeoutError after."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Mount:
    """A running `irsafs mount`. path: the mount point; file: the config file in it."""

    def __init__(self, path: str, file_name: str, log_path: str, argv: list,
                 proc: Optional[subprocess.Popen] = None, pid: Optional[int] = None):
        self.path = path
        self.file_name = file_name
        self.log_path = log_path
        self.argv = argv
        self.proc = proc  # the foreground daemon; None when it daemonized
        self.pid = proc.pid if proc is not None else pid
        self.returncode: Optional[int] = None
        self.invalid_status_reads = 0
        # Set by the mounter fixture when the daemon was started without -f:
        self.parent_rc: Optional[int] = None          # exit status of the process we ran
        self.parent_elapsed: Optional[float] = None
        self.mounted_at_parent_exit: Optional[bool] = None

    @property
    def file(self) -> str:
        return os.path.join(self.path, self.file_name)

    @property
    def status_file(self) -> str:
        return os.path.join(self.path, ".status")

    def log(self) -> str:
        """Everything the daemon logged so far (its stderr)."""
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def status_text(self, timeout: float = 10.0) -> str:
        return read_bytes(self.status_file, timeout).decode("utf-8")

    def status(self, timeout: float = 10.0, strict: bool = False) -> dict:
        """.status parsed. Unless strict, a read that is not valid JSON is retried a few times
        (counted in invalid_status_reads): tests of other things must not fail on that; the
        tests of .status itself read it strictly."""
        for attempt in range(5):
            text = self.status_text(timeout)
            try:
                return json.loads(text)
            except ValueError as e:
                self.invalid_status_reads += 1
                if strict or attempt == 4:
                    raise AssertionError(f".status is not valid JSON ({e}): {text!r}") from None
        raise AssertionError("unreachable")

    def wait_status(self, predicate, timeout: float = 20.0, what: str = ".status condition") -> dict:
        """Poll .status until predicate(status) holds; return that status."""
        last = {}

        def check():
            last["s"] = self.status()
            return last["s"] if predicate(last["s"]) else None
        try:
            return wait_until(check, timeout, what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last .status: {last.get('s')}\nlog:\n{self.log()}") from None

    def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> list:
        """Poll the log until `pattern` (a regex) matches `count` lines; return the matches."""
        rx = re.compile(pattern)

        def check():
            found = [line for line in self.log().splitlines() if rx.search(line)]
            return found if len(found) >= count else None
        try:
            return wait_until(check, timeout, f"log line /{pattern}/ x{count}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\nlog:\n{self.log()}") from None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 10.0) -> Optional[int]:
        """Wait until the daemon is gone; its exit status when it is our child, else None."""
        if self.proc is not None:
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"irsafs (pid {self.pid}) still running after {timeout}s\n"
                                   f"log:\n{self.log()}") from None
            return self.returncode
        wait_until(lambda: not pid_alive(self.pid), timeout, f"exit of irsafs pid {self.pid}")
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        """Signal the daemon (SIGTERM), wait for its exit and for the mount to go."""
        if self.alive():
            self.send_signal(sig)
        rc = self.wait_exit(timeout)
        wait_for_unmount(self.path, timeout)
        return rc

    def kill(self) -> None:
        """kill -9: leaves a stale mount behind."""
        if self.alive():
            self.send_signal(signal.SIGKILL)
        self.wait_exit(10)

    def cleanup(self) -> None:
        """Teardown: never leaves a daemon or a mount behind, whatever state the test left."""
        try:
            if self.alive():
                self.send_signal(signal.SIGTERM)
                try:
                    self.wait_exit(5)
                except TimeoutError:
                    self.send_signal(signal.SIGKILL)
                    self.wait_exit(5)
        finally:
            unmount(self.path)


def mount_args(standin=None, deadline: Optional[float] = 20, timeout: Optional[float] = None) -> list:
    """The irsa-svc options for `irsafs mount`: the stand-in's, or an unreachable endpoint."""
    if standin is None:
        args = list(UNREACHABLE_ARGS)
        if deadline is not None:
            args += ["--deadline", _num(deadline)]
        return args
    return fetch_args(standin, deadline=deadline, timeout=timeout)


def daemon_pid_from_log(text: str) -> Optional[int]:
    """The pid in the daemon's `irsafs[PID]` log prefix (after daemonizing: the last one)."""
    pids = re.findall(r"irsafs\[(\d+)\]", text)
    return int(pids[-1]) if pids else None


def open_errno(fn) -> Optional[int]:
    """errno of the OSError fn() raises, or None when it succeeds."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None




def errno_of(fn):
    """The errno of the OSError fn() raises; fails the test when it succeeds."""
    import pytest
    try:
        value = fn()
    except OSError as e:
        return e.errno
    pytest.fail(f"expected an OSError, got {value!r:.200}")


def run_python_workers(script: str, argv: list, count: int, timeout: float) -> list:
    """Runs `count` processes of Debian's python3 executing `script` with `argv` at once, and
    returns the JSON document each printed. Any process still running at the end is killed."""
    procs = [subprocess.Popen([DEBIAN_PYTHON, "-c", script, *map(str, argv)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(count)]
    return collect_json(procs, timeout, "a worker process did not finish")


def collect_json(procs: list, timeout: float, hang_message: str) -> list:
    """Waits for each process (stdout and stderr piped), checks it exited 0, and returns the JSON
    document each printed. A process still running after `timeout` fails the test with
    `hang_message`; every process is reaped, also on failure."""
    import json
    import pytest
    results = []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{hang_message} within {timeout} s")
            assert p.returncode == 0, err.decode()
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results
