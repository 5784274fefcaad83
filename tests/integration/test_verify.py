"""Role verification with STS before the content is released (issue 13), against real mounts,
the irsa-svc stand-in and a local fake STS (tests/standin/sts_standin.py) that denies
AssumeRoleWithWebIdentity for T seconds after irsa-svc answered, as IAM does while a trust
policy change spreads.

* The reason this exists: 50 boto3 processes (Debian's python3-boto3) read the mounted file and
  resolve a chained profile (source_profile over the web-identity profile) the moment the read
  returns. T = 3 s: with --verify-roles on none fails; with it off, the failures are counted and
  printed (AccessDenied, which botocore does not retry).
* Fault rows (docs/fault-matrix.md): STS down, slow, throttling, a permanent error, malformed XML,
  a 5 MiB answer, a role that flips allow/deny/allow, and a role that never propagates (the
  deadline): what the reader gets, after how long, the log line and .status.
* --verify-roles auto, `irsafs fetch` with verification, /metrics.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from helpers import (DEBIAN_PYTHON, client_env, fetch_args, fuse_skip_reason, read_bytes,
                     realistic_config, run_in_thread)
from metrics_parse import parse
from sts_standin import FakeSTS

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

T = 3.0            # the propagation delay of the fake IAM
WORKERS = 50
ROLE = "acme-role-001"  # a chained profile of realistic_config(3): source_profile src_acme-role-001
MIB = 1024 * 1024
DEFAULT_TOKEN_PATH = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"


def served(standin, tmp_path, profiles: int = 3) -> str:
    """Serves realistic_config(profiles) with its token file pointing at a fresh token file."""
    token_file = tmp_path / "sa-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.service-account-token." + os.urandom(8).hex())
    text = realistic_config(profiles).replace(DEFAULT_TOKEN_PATH, str(token_file))
    standin.set_config(text)
    return text


@pytest.fixture
def sts(standin):
    fake = FakeSTS(propagation=T, trust_changed_at=standin.last_answered_at).start()
    try:
        yield fake
    finally:
        fake.stop()


def assert_no_credentials(sts: FakeSTS, *texts: str) -> None:
    issued = sts.credential_strings()
    for text in texts:
        leaked = [c for c in issued if c in text]
        assert not leaked, f"STS credentials leaked: {leaked[:3]}"


# ---------------------------------------------------------------------------------------------
# 50 boto3 processes, T = 3 s
# ---------------------------------------------------------------------------------------------

WORKER = r"""
import json, sys, time
import boto3, botocore.exceptions, botocore.session
path, profile = sys.argv[1], sys.argv[2]
# What a process does before it needs credentials (imports, a session, the STS model and endpoint
# data), done before the start signal, so that what follows it is only what depends on the file.
session = botocore.session.Session()
loader = session.get_component("data_loader")  # AWS_DATA_PATH: the config file is not read
for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
    loader.load_data(name)
for kind in ("service-2", "endpoint-rule-set-1"):
    loader.load_service_model("sts", kind)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
with open(path, "rb") as f:
    f.read()
out = {"read_s": time.monotonic() - t0}
try:
    s = boto3.session.Session(botocore_session=session, profile_name=profile)
    creds = s.get_credentials().get_frozen_credentials()
    out.update(ok=True, key=creds.access_key)
except botocore.exceptions.ClientError as e:
    out.update(ok=False, error=e.response.get("Error", {}).get("Code"), message=str(e)[:300])
except Exception as e:
    out.update(ok=False, error=type(e).__name__, message=str(e)[:300])
out["done_s"] = time.monotonic() - t0
print(json.dumps(out), flush=True)
"""


def run_workers(path: str, env: dict, n: int) -> list:
    """n boto3 processes: each imports boto3, says ready; then all are told to start at once:
    read `path` (which blocks until irsafs releases it), resolve ROLE's credentials."""
    procs = [subprocess.Popen([DEBIAN_PYTHON, "-c", WORKER, path, ROLE], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        def all_ready():
            for p in procs:
                line = p.stdout.readline()
                assert line.strip() == "ready", f"a worker did not start: {p.stderr.read()[-2000:]}"
        run_in_thread(all_ready, timeout=240)
        for p in procs:  # go
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("verify", ["on", "off"])
def test_fifty_boto3_processes_resolve_the_chained_profile_at_release(standin, mounter, sts, home,
                                                                     tmp_path, verify):
    text = served(standin, tmp_path)
    m = mounter(standin, "--verify-roles", verify, "--sts-endpoint", sts.url, deadline=30)
    # botocore's own retry defaults (AccessDenied is never retried anyway).
    env = client_env(home, m.file, {"AWS_DATA_PATH": sts.data_path(tmp_path / "data"),
                                    "AWS_MAX_ATTEMPTS": None, "AWS_RETRY_MODE": None})
    results = run_workers(m.file, env, WORKERS)

    failed = [r for r in results if not r["ok"]]
    reads = sorted(r["read_s"] for r in results)
    denied_irsafs = [r for r in sts.web_identity_requests(from_irsafs=True) if r.get("denied")]
    print(f"\n--verify-roles {verify}, IAM propagation T = {T:g} s, {WORKERS} boto3 processes: "
          f"{len(failed)} failed ({', '.join(sorted({str(r['error']) for r in failed})) or '-'}); "
          f"read returned after {reads[0]:.2f}-{reads[-1]:.2f} s; irsafs's STS calls: "
          f"{len(sts.web_identity_requests(from_irsafs=True))} ({len(denied_irsafs)} denied)")
    calls = sorted(r["monotonic"] - standin.last_answered_at()
                   for r in sts.web_identity_requests(from_irsafs=False))
    print(f"the clients called AssumeRoleWithWebIdentity {calls[0]:.2f}-{calls[-1]:.2f} s after irsa-svc "
          f"answered (IAM lets them in after {T:g} s)")
    assert read_bytes(m.file) == text.encode()
    if verify == "on":
        assert not failed, f"{len(failed)} of {WORKERS} failed: {failed[:3]}\nlog:\n{m.log()}"
        assert all(r["key"].startswith("ASIAASSUMED") for r in results)
        # irsafs did meet the propagation delay, and waited it out.
        assert denied_irsafs, "the fake STS never denied irsafs: the test proves nothing"
        m.wait_log(r"Role arn:aws:iam::111111111112:role/acme-role-001 verified with STS")
        v = m.status()["verification"]
        assert [r["state"] for r in v["roles"]] == ["verified"] * 3, v
        assert v["enabled"] and not v["running"] and v["total_seconds"] > 0
    else:
        assert not sts.web_identity_requests(from_irsafs=True)
        # Released at once, the processes meet IAM before it propagated: the reason this exists.
        assert failed, "no process failed without verification: T is too short to show anything"
        assert {r["error"] for r in failed} == {"AccessDenied"}, failed[:3]
    assert_no_credentials(sts, m.log(), m.status_text())


# ---------------------------------------------------------------------------------------------
# Fault rows (docs/fault-matrix.md)
# ---------------------------------------------------------------------------------------------

DENIED = {"error": ["AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"],
          "status": 403}
FAULTS = {
    # name: (fake STS queue, its default, --deadline, expected state, log line)
    "down": ([], {}, 30, "unverified",
             r"Role \S+ not verified: STS at http://127\.0\.0\.1:\d+ unreachable for 5\.\d+ s .*"
             r"released without verification"),
    "slow": ([], {"allow": True, "delay": 1.5}, 30, "verified",
             r"Role \S+ verified with STS \(2 attempts in [3-9]\.\d+ s\)"),
    "throttling": ([{"error": ["Throttling", "Rate exceeded"], "status": 400}] * 3, {"allow": True}, 30,
                   "verified", r"Role \S+ verified with STS \(5 attempts"),
    "permanent": ([{"error": ["InvalidIdentityToken", "Incorrect token audience"], "status": 400}], {}, 30,
                  "permanent", r"Role \S+ will not be verified: STS answered InvalidIdentityToken \(HTTP 400\): "
                               r"Incorrect token audience; released without verification"),
    "malformed-xml": ([{"body": "<AssumeRoleWithWebIdentityResponse><Credentials>", "status": 200}], {}, 30,
                      "permanent", r"Role \S+ will not be verified: STS answered MalformedResponse \(HTTP 200\): "
                                   r"HTTP 200 with a body that is not XML"),
    "5mib-body": ([{"big": 5 * MIB}], {}, 30, "permanent",
                  r"Role \S+ will not be verified: STS answered ResponseTooLarge \(HTTP 200\): "
                  r"response body larger than 65536 bytes"),
    "flip": ([{"allow": True}, DENIED, {"allow": True}, {"allow": True}], {}, 30, "verified",
             r"Role \S+: STS denied it again after 1 success"),
    "never-propagates": ([], DENIED, 6, "unverified",
                         r"Role \S+ not verified after \d+ attempts in \d+\.\d+ s \(last answer AccessDenied: "
                         r"Not authorized to perform sts:AssumeRoleWithWebIdentity\): released unverified so "
                         r"that readers are answered within the deadline of 6\.00 s"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_rows(standin, mounter, tmp_path, fault):
    queue, default, deadline, state, log_line = FAULTS[fault]
    sts = FakeSTS().start()
    try:
        sts.enqueue(*queue)
        sts.set_default(default)
        endpoint = FakeSTS.down_url() if fault == "down" else sts.url
        text = served(standin, tmp_path, profiles=1)
        m = mounter(standin, "--verify-roles", "on", "--sts-endpoint", endpoint, deadline=deadline)
        t0 = time.monotonic()
        got = read_bytes(m.file, timeout=deadline + 10)
        elapsed = time.monotonic() - t0
        # Verification never turns a good fetch into an error: the whole content, always.
        assert got == text.encode()
        line = m.wait_log(log_line)[0]
        v = m.wait_status(lambda s: not s["verification"]["running"], what="verification ended")["verification"]
        role = v["roles"][0]
        print(f"\n{fault}: reader got the {len(got)} bytes after {elapsed:.2f} s; role {role['state']} after "
              f"{role['attempts']} attempts (last error {role['last_error_code']}); log: "
              f"{line.split('] ', 2)[-1]}")
        assert role["state"] == state and role["verified"] == (state == "verified"), v
        if fault in ("down", "never-propagates"):
            # Released by the give-up (about 5 s) or just before the deadline, never after it.
            assert elapsed < (15 if fault == "down" else deadline), elapsed
        assert_no_credentials(sts, m.log(), m.status_text())
    finally:
        sts.stop()


# ---------------------------------------------------------------------------------------------
# auto, irsafs fetch, /metrics
# ---------------------------------------------------------------------------------------------

def test_auto_is_off_when_the_token_file_is_not_readable(standin, mounter, sts, tmp_path):
    text = served(standin, tmp_path)
    os.unlink(tmp_path / "sa-token")
    m = mounter(standin, "--sts-endpoint", sts.url)  # --verify-roles auto is the default
    assert read_bytes(m.file) == text.encode()
    m.wait_log(r"Role verification is off \(--verify-roles auto\): the token file \S+sa-token is not readable "
               r"\(No such file or directory\)")
    assert not sts.requests()
    assert m.status()["verification"]["enabled"] is False


def test_verify_token_file_replaces_the_profiles_path(standin, mounter, sts, tmp_path):
    """A sidecar sees the workload's token at a path of its own: --verify-token-file."""
    text = served(standin, tmp_path)
    elsewhere = tmp_path / "sidecar-token"
    os.rename(tmp_path / "sa-token", elsewhere)  # the profile's path no longer exists
    m = mounter(standin, "--sts-endpoint", sts.url, "--verify-token-file", str(elsewhere))
    assert read_bytes(m.file) == text.encode()
    m.wait_log(r"verified with STS")
    token = elsewhere.read_text()
    assert sts.web_identity_requests(from_irsafs=True), "auto is on: that token file is readable"
    sent = {r["params"].get("WebIdentityToken") for r in sts.web_identity_requests(from_irsafs=True)}
    assert sent == {token}, "the token sent is that file's"


def test_fetch_verifies_and_metrics_show_the_roles(standin, mounter, run_fetch, sts, tmp_path):
    text = served(standin, tmp_path, profiles=2)
    res = run_fetch(*fetch_args(standin), "--sts-endpoint", sts.url)  # auto: the token file is readable
    assert res.rc == 0, res.explain()
    assert res.stdout == text.encode()
    assert "Role verification is on (--verify-roles auto)" in res.stderr
    assert len(re.findall(r"verified with STS", res.stderr)) == 2, res.stderr
    # irsafs waited until T after irsa-svc's answer.
    assert sts.web_identity_requests(from_irsafs=True)[0].get("denied"), res.stderr

    port = urllib.parse.urlsplit(FakeSTS.down_url()).port  # a free port
    m = mounter(standin, "--sts-endpoint", sts.url, "--listen", f"127.0.0.1:{port}", "--prefetch")
    m.wait_status(lambda s: s.get("verification", {}).get("runs") == 1 and not s["verification"]["running"],
                  timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        families = parse(r.read().decode())
    states = {(labels["role_arn"], labels["state"]): value
              for _, labels, value in families["irsafs_role_verification"]["samples"]}
    for i in range(2):
        arn = f"arn:aws:iam::{111111111111 + i}:role/acme-role-00{i}"
        assert states[(arn, "verified")] == 1, states
        assert states[(arn, "unverified")] == 0 and states[(arn, "permanent")] == 0, states
    attempts = families["irsafs_role_verification_attempts"]["samples"]
    assert attempts[0][0] == "irsafs_role_verification_attempts_total" and attempts[0][2] >= 4, attempts
