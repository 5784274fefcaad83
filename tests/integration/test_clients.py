"""Real AWS clients reading the served config through a real irsafs mount (issue 4, part 1).

Debian's AWS CLI v2 (/usr/bin/aws) and python3-boto3 (/usr/bin/python3), by absolute path, with
AWS_CONFIG_FILE pointing into the mount:

* they list the served profiles and read their settings;
* a chained profile resolves end to end against a fake STS on 127.0.0.1:
  AssumeRoleWithWebIdentity (the src_ profile's role, the token read from its
  web_identity_token_file), then AssumeRole (the target role, signed with the first
  credentials); the fake STS records what it received;
* irsa-svc down: what the user sees, after how long.

Pointing these client versions at a local STS: AWS_ENDPOINT_URL_STS and `[services]` are ignored
by them (DESIGN.md section 4), and `--endpoint-url` does not reach the STS client that the
credential providers create. What works for both: AWS_DATA_PATH with an
`sts/2011-06-15/endpoint-rule-set-1.json` whose only rule returns the fake's URL (botocore
and the CLI's own botocore search AWS_DATA_PATH before their bundled data).

Every client runs in a clean environment with a fresh HOME (the CLI caches assumed-role
credentials under ~/.aws/cli/cache), no shared credentials file, and the instance metadata
service disabled (no traffic to 169.254.169.254).
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from helpers import (DEBIAN_AWS, DEBIAN_PYTHON, client_env, fuse_skip_reason, profile_names,
                     read_bytes, realistic_config)
from sts_standin import FakeSTS, access_key_of

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

GRACE = 5.0  # seconds on top of a deadline: process start-up, interpreter imports, slow CI
ROLE = "acme-role-001"  # a chained profile in realistic_config(3)
SRC_ROLE_ARN = "arn:aws:iam::111111111112:role/acme-role-001"
ROLE_ARN = "arn:aws:iam::222222222223:role/acme-role-001"


def need_aws() -> None:
    if not os.access(DEBIAN_AWS, os.X_OK):
        pytest.fail(f"{DEBIAN_AWS} is missing: apt-get install awscli (the CI installs it)")


def need_boto3() -> None:
    res = subprocess.run([DEBIAN_PYTHON, "-c", "import boto3"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    if res.returncode != 0:
        pytest.fail(f"{DEBIAN_PYTHON} cannot import boto3: apt-get install python3-boto3")


# ---------------------------------------------------------------------------------------------
# A fake STS (tests/standin/sts_standin.py)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def sts(tmp_path):
    fake = FakeSTS().start()
    try:
        yield fake
    finally:
        fake.stop()


def data_path_for(fake: FakeSTS, directory) -> str:
    return fake.data_path(directory)


# ---------------------------------------------------------------------------------------------
# Running the clients
# ---------------------------------------------------------------------------------------------

def run_client(argv: list, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    res = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=timeout, text=True)
    res.elapsed = time.monotonic() - t0  # type: ignore[attr-defined]
    return res


def explain(res) -> str:
    return (f"\n$ {' '.join(map(str, res.args))}\nexit {res.returncode}\n"
            f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}")


def served_config(token_file) -> str:
    """realistic_config(3) with its web_identity_token_file pointing at our token file."""
    return realistic_config(3).replace(
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token", str(token_file))


@pytest.fixture
def served(standin, mounter, tmp_path):
    """A mount serving realistic_config(3); returns (mount, config text, token file, token)."""
    token = "eyJhbGciOiJSUzI1NiJ9.service-account-token." + os.urandom(8).hex()
    token_file = tmp_path / "sa-token"
    token_file.write_text(token)
    text = served_config(token_file)
    standin.set_config(text)
    # The token file is readable: --verify-roles auto would check the roles with the real STS
    # (test_verify.py tests that against the fake one).
    m = mounter(standin, "--verify-roles", "off")
    return m, text, token_file, token


# ---------------------------------------------------------------------------------------------
# Listing profiles and reading settings
# ---------------------------------------------------------------------------------------------

def test_aws_cli_lists_served_profiles_and_reads_settings(served, home, standin):
    need_aws()
    m, text, _, _ = served
    env = client_env(home, m.file)

    res = run_client([DEBIAN_AWS, "configure", "list-profiles"], env)
    assert res.returncode == 0, explain(res)
    assert sorted(res.stdout.split()) == profile_names(text), explain(res)

    res = run_client([DEBIAN_AWS, "configure", "get", "role_arn", "--profile", ROLE], env)
    assert res.returncode == 0 and res.stdout.strip() == ROLE_ARN, explain(res)
    res = run_client([DEBIAN_AWS, "configure", "get", "source_profile", "--profile", ROLE], env)
    assert res.returncode == 0 and res.stdout.strip() == f"src_{ROLE}", explain(res)
    res = run_client([DEBIAN_AWS, "configure", "get", "role_arn", "--profile", f"src_{ROLE}"], env)
    assert res.returncode == 0 and res.stdout.strip() == SRC_ROLE_ARN, explain(res)
    res = run_client([DEBIAN_AWS, "configure", "get", "region"], env)
    assert res.returncode == 0 and res.stdout.strip() == "us-west-2", explain(res)
    # Five client processes, one fetch: the mount serves every later read from its cache.
    assert standin.irsa_count == 1


def test_boto3_lists_served_profiles_and_scoped_config(served, home, standin):
    need_boto3()
    m, text, token_file, _ = served
    script = (
        "import boto3, json, sys\n"
        "profiles = boto3.session.Session().available_profiles\n"
        "scoped = boto3.session.Session(profile_name=sys.argv[1])._session.get_scoped_config()\n"
        "src = boto3.session.Session(profile_name='src_' + sys.argv[1])._session.get_scoped_config()\n"
        "print(json.dumps({'profiles': profiles, 'scoped': scoped, 'src': src}))\n")
    res = run_client([DEBIAN_PYTHON, "-c", script, ROLE], client_env(home, m.file))
    assert res.returncode == 0, explain(res)
    out = json.loads(res.stdout)
    assert sorted(out["profiles"]) == profile_names(text)
    assert out["scoped"] == {"source_profile": f"src_{ROLE}", "role_arn": ROLE_ARN}
    assert out["src"] == {"web_identity_token_file": str(token_file), "role_arn": SRC_ROLE_ARN}
    assert standin.irsa_count == 1


# ---------------------------------------------------------------------------------------------
# Credential resolution end to end
# ---------------------------------------------------------------------------------------------

def assert_chain(records: list, token: str) -> None:
    """AssumeRoleWithWebIdentity (src role, the token file's content, unsigned), then
    AssumeRole (target role, signed with the first credentials), then GetCallerIdentity signed
    with the second credentials."""
    actions = [r["action"] for r in records]
    assert actions == ["AssumeRoleWithWebIdentity", "AssumeRole", "GetCallerIdentity"], records

    web, assume, whoami = records
    assert web["params"]["RoleArn"] == SRC_ROLE_ARN
    assert web["params"]["WebIdentityToken"] == token
    assert web["params"].get("RoleSessionName"), web
    assert access_key_of(web) is None, "AssumeRoleWithWebIdentity is not signed"

    assert assume["params"]["RoleArn"] == ROLE_ARN
    assert access_key_of(assume) == "ASIAWEBIDENTITY1", assume["headers"].get("authorization")
    assert assume["headers"].get("x-amz-security-token") == "token-of-ASIAWEBIDENTITY1"

    assert access_key_of(whoami) == "ASIAASSUMED2", whoami["headers"].get("authorization")
    assert whoami["headers"].get("x-amz-security-token") == "token-of-ASIAASSUMED2"


def test_aws_cli_chained_profile_resolves_against_fake_sts(served, home, sts, tmp_path, standin):
    need_aws()
    m, _, _, token = served
    env = client_env(home, m.file, {"AWS_DATA_PATH": data_path_for(sts, tmp_path / "data")})
    res = run_client([DEBIAN_AWS, "sts", "get-caller-identity", "--profile", ROLE,
                      "--output", "json"], env)
    assert res.returncode == 0, explain(res) + f"\nfake STS got: {sts.requests()}"
    identity = json.loads(res.stdout)
    assert identity["Account"] == "222222222223"
    assert identity["Arn"].endswith("/ASIAASSUMED2")
    assert_chain(sts.requests(), token)
    # The CLI cached the assumed role under the fresh HOME (why each run needs its own HOME).
    assert list((home / ".aws" / "cli" / "cache").glob("*.json")), "no CLI credential cache"
    assert standin.irsa_count == 1


def test_boto3_chained_profile_resolves_against_fake_sts(served, home, sts, tmp_path, standin):
    need_boto3()
    m, _, _, token = served
    env = client_env(home, m.file, {"AWS_DATA_PATH": data_path_for(sts, tmp_path / "data")})
    script = (
        "import boto3, json, sys\n"
        "s = boto3.session.Session(profile_name=sys.argv[1])\n"
        "ident = s.client('sts').get_caller_identity()\n"
        "creds = s.get_credentials().get_frozen_credentials()\n"
        "print(json.dumps({'arn': ident['Arn'], 'key': creds.access_key}))\n")
    res = run_client([DEBIAN_PYTHON, "-c", script, ROLE], env)
    assert res.returncode == 0, explain(res) + f"\nfake STS got: {sts.requests()}"
    out = json.loads(res.stdout)
    assert out["key"] == "ASIAASSUMED2"
    assert out["arn"].endswith("/ASIAASSUMED2")
    assert_chain(sts.requests(), token)
    assert standin.irsa_count == 1


# ---------------------------------------------------------------------------------------------
# irsa-svc down: what the user sees, and after how long
# ---------------------------------------------------------------------------------------------

DOWN_DEADLINE = 2.0


@pytest.fixture
def down_mount(standin, mounter):
    """A mount with --deadline 2 whose irsa-svc refuses connections."""
    standin.set_down(True)
    return mounter(standin, deadline=DOWN_DEADLINE)


def test_irsa_svc_down_boto3_named_profile_raises_profile_not_found(down_mount, home):
    """The loud failure: a profile that only the served file defines is not found, after at
    most the deadline. (botocore swallows the EIO while reading the config.)"""
    need_boto3()
    script = (
        "import boto3, botocore.exceptions, json, sys, time\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    boto3.session.Session(profile_name=sys.argv[1]).client('sts')\n"
        "    out = {'error': None}\n"
        "except botocore.exceptions.ProfileNotFound as e:\n"
        "    out = {'error': type(e).__name__, 'message': str(e)}\n"
        "out['elapsed'] = time.monotonic() - t0\n"
        "print(json.dumps(out))\n")
    res = run_client([DEBIAN_PYTHON, "-c", script, ROLE], client_env(home, down_mount.file))
    assert res.returncode == 0, explain(res)
    out = json.loads(res.stdout)
    assert out["error"] == "ProfileNotFound", out
    assert out["message"] == f"The config profile ({ROLE}) could not be found"
    assert out["elapsed"] <= DOWN_DEADLINE + GRACE, out
    print(f"\nirsa-svc down, --deadline {DOWN_DEADLINE:g}: boto3 ProfileNotFound after "
          f"{out['elapsed']:.2f}s")
    assert "EIO" in down_mount.log() or "Cannot fetch" in down_mount.log(), down_mount.log()


def test_irsa_svc_down_aws_cli_named_profile_fails_default_is_silent(down_mount, home):
    need_aws()
    env = client_env(home, down_mount.file)
    res = run_client([DEBIAN_AWS, "sts", "get-caller-identity", "--profile", ROLE], env)
    assert res.returncode == 255, explain(res)
    assert f"The config profile ({ROLE}) could not be found" in res.stderr, explain(res)
    assert res.elapsed <= DOWN_DEADLINE + GRACE + 5, explain(res)  # the CLI starts slowly
    print(f"\nirsa-svc down, --deadline {DOWN_DEADLINE:g}: aws --profile fails (255) after "
          f"{res.elapsed:.2f}s (process start included)")

    # The silent case: listing profiles "succeeds" with nothing, as for an empty file.
    res = run_client([DEBIAN_AWS, "configure", "list-profiles"], env)
    assert res.returncode == 0 and res.stdout.strip() == "", explain(res)


def test_irsa_svc_down_boto3_default_session_is_silent(down_mount, home):
    """Without a named profile nothing fails: no profiles, no region from the file. This is
    why docs/deploy.md tells users to name their profile."""
    need_boto3()
    script = ("import boto3, json\n"
              "s = boto3.session.Session()\n"
              "print(json.dumps({'profiles': s.available_profiles, 'region': s.region_name}))\n")
    env = client_env(home, down_mount.file)
    env.pop("AWS_DEFAULT_REGION")
    res = run_client([DEBIAN_PYTHON, "-c", script], env)
    assert res.returncode == 0, explain(res)
    assert json.loads(res.stdout) == {"profiles": [], "region": None}


def test_irsa_svc_back_the_same_reader_gets_the_config(standin, mounter, home):
    """After irsa-svc comes back, a new client process reads the config (no remount)."""
    need_boto3()
    standin.set_down(True)
    m = mounter(standin, deadline=DOWN_DEADLINE)
    with pytest.raises(OSError):
        read_bytes(m.file, timeout=DOWN_DEADLINE + GRACE)
    standin.set_down(False)
    deadline = time.monotonic() + 30
    while True:
        res = run_client([DEBIAN_PYTHON, "-c",
                          "import boto3; print(sorted(boto3.session.Session().available_profiles))"],
                         client_env(home, m.file))
        if res.returncode == 0 and "acme-list-bucket-role" in res.stdout:
            break
        assert time.monotonic() < deadline, "config not served 30s after irsa-svc came back" + \
            explain(res) + "\nlog:\n" + m.log()
