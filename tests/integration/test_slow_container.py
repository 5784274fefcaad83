"""The irsafs image for real (issue 4, part 3): build deploy/Dockerfile with podman and run it.

No registry is reachable here, so the base images come from debootstrap
(tests/container/make-base-image.sh: debian:bookworm and debian:bookworm-slim, kept in podman's
storage and reused while they exist). The build then needs only Debian's archive. The test
image is the same Dockerfile built with --build-arg EXTRA_PACKAGES=awscli (Debian's AWS CLI),
so that `aws configure list-profiles` runs inside; the shipped image stays lean.

Each container gets only the Domino environment (DOMINO_IRSA_ENDPOINT, DOMINO_API_PROXY,
DOMINO_RUN_ID, POD_INFO_PATH, DOMINO_IRSA_SSL_CERT with the CA mounted as a volume) pointing at
a stand-in of irsa-svc on the host (--network host), and the image's entrypoint does the rest.

Podman flags that this machine needs: --runtime runc, --ulimit nofile=1024:1024 and an nproc
limit (podman's default nproc limit cannot be set here: "error setting rlimit type 6").

Skips (with the reason) only when podman cannot run a container at all. The timings of the
image builds are printed at the end of the session.
"""
from __future__ import annotations

import json
import os
import pathlib
import select
import shutil
import subprocess
import time
import uuid

import pytest

from helpers import DEFAULT_RUN_ID, fuse_skip_reason

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE = "localhost/irsafs:test"
TEST_IMAGE = "localhost/irsafs-awscli:test"
ENGINE = ["podman", "--runtime", "runc"]
RUN = [*ENGINE, "run", "--rm", "--pull=never", "--network", "host",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
FUSE = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"]
EX_FAILED = 70  # the entrypoint's own failures

SERVED = (
    "# served by the irsa-svc stand-in to the container test\n"
    "[profile src_acme-list-bucket-role]\n"
    "web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token\n"
    "role_arn = arn:aws:iam::111111111111:role/acme-list-bucket-role\n"
    "\n"
    "[profile acme-list-bucket-role]\n"
    "source_profile = src_acme-list-bucket-role\n"
    "role_arn = arn:aws:iam::222222222222:role/acme-list-bucket-role\n"
)
LABELS = ('app.kubernetes.io/name="run-6612"\n'
          'dominodatalab.com/irsa-workload-type="cluster-worker"\n')

TIMINGS: dict = {}


def sh(argv, timeout=900, check=True, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=timeout, **kwargs)
    if check and res.returncode != 0:
        pytest.fail(f"$ {' '.join(map(str, argv))}\nexit {res.returncode}\n"
                    f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}")
    return res


def timed(name, fn):
    t0 = time.monotonic()
    try:
        return fn()
    finally:
        TIMINGS[name] = time.monotonic() - t0


def apt_install(*packages) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        if attempt:
            sh(["apt-get", "update", "-q"], check=False, env=env)
        if sh(["apt-get", "install", "-y", "-q", *packages], check=False, env=env).returncode == 0:
            return True
    return False


@pytest.fixture(scope="session")
def timings(request):
    yield TIMINGS
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture and TIMINGS:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in TIMINGS.items())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ncontainer test timings: {parts}")


@pytest.fixture(scope="session")
def images(timings):
    """Builds (or reuses) the base images, the irsafs image and the test image."""
    if not shutil.which("podman") or not shutil.which("runc"):
        timed("install podman", lambda: apt_install("podman", "runc"))
    if not shutil.which("podman") or not shutil.which("runc"):
        pytest.skip("podman/runc are not installed and apt-get install podman runc failed: "
                    "cannot run containers here")
    base_missing = any(sh([*ENGINE, "image", "exists", f"debian:{tag}"], check=False).returncode
                       for tag in ("bookworm", "bookworm-slim"))
    if base_missing:
        if not shutil.which("debootstrap") and not apt_install("debootstrap"):
            pytest.fail("debootstrap is missing and cannot be installed (apt-get install debootstrap)")
        timed("base image (debootstrap)",
              lambda: sh(["sh", str(REPO / "tests/container/make-base-image.sh"), "podman"]))
    # Can podman run a container at all? (The only reason to skip.)
    probe = sh([*RUN, "localhost/debian:bookworm", "true"], check=False, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-800:]}")

    build = [*ENGINE, "build", "--pull=never", "--network", "host",
             "--ulimit", "nofile=1024:1024"]
    timed("irsafs image", lambda: sh(
        [*build, "--ignorefile", str(REPO / "deploy/Dockerfile.dockerignore"),
         "-f", str(REPO / "deploy/Dockerfile"), "-t", IMAGE, str(REPO)]))
    # The same Dockerfile with Debian's AWS CLI added: it shares the build stage, and its
    # package layer does not depend on the sources (cached across source changes).
    timed("test image (+awscli)", lambda: sh(
        [*build, "--build-arg", "EXTRA_PACKAGES=awscli",
         "--ignorefile", str(REPO / "deploy/Dockerfile.dockerignore"),
         "-f", str(REPO / "deploy/Dockerfile"), "-t", TEST_IMAGE, str(REPO)]))
    return IMAGE, TEST_IMAGE


@pytest.fixture
def domino_env(standin, tmp_path):
    """(podman options, env dict): the Domino environment, pointing at the stand-in, with the
    CA and the labels file mounted where the Domino mutation puts them."""
    standin.set_config(SERVED)
    labels = tmp_path / "labels"
    labels.write_text(LABELS)
    env = {
        "DOMINO_IRSA_ENDPOINT": standin.endpoint,
        "DOMINO_API_PROXY": standin.api_proxy,
        "DOMINO_RUN_ID": DEFAULT_RUN_ID,
        "POD_INFO_PATH": "/var/run/podinfo/labels",
        "DOMINO_IRSA_SSL_CERT": "/etc/ssl/certs/irsa/tls.crt",
    }
    opts = ["-v", f"{standin.ca_file}:/etc/ssl/certs/irsa/tls.crt:ro",
            "-v", f"{labels}:/var/run/podinfo/labels:ro"]
    for k, v in env.items():
        opts += ["-e", f"{k}={v}"]
    return opts, env


def needs_fuse():
    reason = fuse_skip_reason()
    if reason:
        pytest.skip(f"the host cannot give containers FUSE: {reason}")


def run(image, opts, *cmd, timeout=180) -> subprocess.CompletedProcess:
    name = f"irsafs-test-{uuid.uuid4().hex[:12]}"
    res = sh([*RUN, "--name", name, *opts, image, *cmd], check=False, timeout=timeout)
    res.name = name  # type: ignore[attr-defined]
    return res


def explain(res) -> str:
    return (f"\n$ {' '.join(map(str, res.args))}\nexit {res.returncode}\n"
            f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}")


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config_file", [None, "/home/user/.aws-irsa/aws-config"],
                         ids=["default-path", "custom-path"])
def test_entrypoint_serves_the_config_to_cat_and_aws_cli(images, domino_env, standin, config_file):
    needs_fuse()
    opts, _ = domino_env
    if config_file:
        opts = [*opts, "-e", f"AWS_CONFIG_FILE={config_file}"]
    script = ('printf "%s\\n" "$AWS_CONFIG_FILE"; echo "<<cat>>"; cat "$AWS_CONFIG_FILE"; '
              'echo "<<aws>>"; aws configure list-profiles; '
              'echo "<<role>>"; aws configure get role_arn --profile acme-list-bucket-role; '
              'echo "<<status>>"; cat "$(dirname "$AWS_CONFIG_FILE")/.status"; exit 7')
    res = run(images[1], [*opts, *FUSE], "sh", "-c", script)
    assert res.returncode == 7, "the workload's exit status is the container's" + explain(res)
    path, rest = res.stdout.split("\n<<cat>>\n", 1)
    served, rest = rest.split("<<aws>>\n", 1)
    profiles, rest = rest.split("<<role>>\n", 1)
    role, status = rest.split("<<status>>\n", 1)
    assert path == (config_file or "/var/run/.aws/config")
    assert served == SERVED, explain(res)
    assert sorted(profiles.split()) == ["acme-list-bucket-role", "src_acme-list-bucket-role"]
    assert role.strip() == "arn:aws:iam::222222222222:role/acme-list-bucket-role"
    status = json.loads(status)
    assert status["state"] == "ready" and status["bytes"] == len(SERVED.encode()), status

    # One fetch for cat, two aws processes and .status; the body irsa-svc got.
    assert standin.irsa_count == 1, standin.requests()
    assert standin.requests()[0]["json"] == {"run_id": DEFAULT_RUN_ID,
                                             "irsa_workload_type": "cluster-worker"}
    assert "Mounted irsafs on" in res.stderr and "Unmounting" in res.stderr, explain(res)


@pytest.mark.parametrize("privileges, message", [
    (["--device", "/dev/fuse"], "CAP_SYS_ADMIN is missing"),
    (["--cap-add", "SYS_ADMIN"], "/dev/fuse is missing"),
], ids=["no-SYS_ADMIN", "no-dev-fuse"])
def test_without_fuse_privileges_the_entrypoint_fails_loudly(images, domino_env, standin,
                                                             privileges, message):
    opts, _ = domino_env
    res = run(images[0], [*opts, *privileges], "sh", "-c", "echo WORKLOAD-RAN")
    assert res.returncode == EX_FAILED, explain(res)
    assert "WORKLOAD-RAN" not in res.stdout, "the workload must not start without its config"
    assert "Cannot mount irsafs" in res.stderr, explain(res)  # irsafs's own error
    assert message in res.stderr, explain(res)
    assert "not starting the workload" in res.stderr, explain(res)
    assert "IRSAFS_MODE=fetch" in res.stderr, "points at the fallback" + explain(res)
    assert standin.irsa_count == 0


def test_daemon_killed_inside_the_container_the_entrypoint_restores_the_mount(images, domino_env,
                                                                              standin):
    needs_fuse()
    opts, _ = domino_env
    # The workload kills the daemon, then waits (bounded) for a new daemon whose .status is
    # readable (the dead mount fails .status with ENOTCONN) and reads the file again.
    script = r'''
daemons() { for d in /proc/[0-9]*; do [ "$(cat "$d/comm" 2>/dev/null)" = irsafs ] && echo "${d#/proc/}"; done; }
dir=$(dirname "$AWS_CONFIG_FILE")
cat "$AWS_CONFIG_FILE" > /tmp/before
old=$(daemons)
echo "old=$old"
kill -9 $old
i=0
while :; do
    new=$(daemons)
    if [ -n "$new" ] && [ "$new" != "$old" ] && cat "$dir/.status" > /tmp/status 2>/dev/null; then
        break
    fi
    i=$((i + 1))
    if [ $i -gt 400 ]; then echo "TIMEOUT new=$new"; exit 9; fi
    sleep 0.05
done
echo "new=$new"
cat "$AWS_CONFIG_FILE" > /tmp/after
cmp /tmp/before /tmp/after && echo SAME-CONTENT
cat "$dir/.status"
'''
    res = run(images[0], [*opts, *FUSE], "sh", "-c", script)
    assert res.returncode == 0, explain(res)
    assert "SAME-CONTENT" in res.stdout, explain(res)
    old = [ln for ln in res.stdout.splitlines() if ln.startswith("old=")]
    new = [ln for ln in res.stdout.splitlines() if ln.startswith("new=")]
    assert old and new and old[0][4:] != new[0][4:] and old[0][4:], explain(res)
    status = json.loads(res.stdout.split("SAME-CONTENT\n", 1)[1])
    assert status["state"] == "ready", status
    # Loud on stderr, and the new daemon fetched again.
    assert "ERROR: the irsafs daemon exited (status 137)" in res.stderr, explain(res)
    assert "mount restored" in res.stderr, explain(res)
    assert standin.irsa_count == 2, standin.requests()
    assert res.stderr.count("Mounted irsafs on") == 2, explain(res)
    assert "Unmounting" in res.stderr, explain(res)


def test_daemon_killed_with_on_daemon_exit_fail_stops_the_workload(images, domino_env, standin):
    needs_fuse()
    opts, _ = domino_env
    script = ('for d in /proc/[0-9]*; do [ "$(cat "$d/comm" 2>/dev/null)" = irsafs ] && '
              'kill -9 "${d#/proc/}"; done; sleep 60; echo NOT-STOPPED')
    t0 = time.monotonic()
    res = run(images[0], [*opts, *FUSE, "-e", "IRSAFS_ON_DAEMON_EXIT=fail"], "sh", "-c", script)
    assert res.returncode == EX_FAILED, explain(res)
    assert "NOT-STOPPED" not in res.stdout
    assert time.monotonic() - t0 < 30, "the workload got SIGTERM at once"
    assert "IRSAFS_ON_DAEMON_EXIT=fail: stopping the workload" in res.stderr, explain(res)


def test_sigterm_reaches_the_workload_and_the_mount_is_removed(images, domino_env, standin):
    needs_fuse()
    opts, _ = domino_env
    name = f"irsafs-test-{uuid.uuid4().hex[:12]}"
    script = ('trap "echo GOT-TERM; exit 42" TERM; cat "$AWS_CONFIG_FILE" > /dev/null; '
              'echo READY; while :; do sleep 0.1; done')
    proc = subprocess.Popen([*RUN, "--name", name, *opts, *FUSE, images[0], "sh", "-c", script],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = ""
        while "READY" not in line:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, \
                f"the workload did not start: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if ready:
                line = proc.stdout.readline()
        sh([*ENGINE, "kill", "--signal", "TERM", name], timeout=30)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            sh([*ENGINE, "kill", name], check=False, timeout=30)
            proc.wait(30)
    assert proc.returncode == 42, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "GOT-TERM" in out
    assert "Unmounting" in err, err  # irsafs got SIGTERM from the entrypoint and unmounted


def test_fetch_mode_needs_no_fuse(images, domino_env, standin):
    opts, _ = domino_env
    res = run(images[0], [*opts, "-e", "IRSAFS_MODE=fetch"], "sh", "-c",
              'cat "$AWS_CONFIG_FILE"; grep -c " fuse" /proc/self/mountinfo || true')
    assert res.returncode == 0, explain(res)
    assert res.stdout == SERVED + "0\n", explain(res)
    assert "IRSAFS_MODE=fetch" in res.stderr, explain(res)
    assert standin.irsa_count == 1


def test_fetch_mode_fails_loudly_when_irsa_svc_is_down(images, domino_env, standin):
    opts, _ = domino_env
    standin.set_down(True)
    res = run(images[0], [*opts, "-e", "IRSAFS_MODE=fetch", "-e", "IRSAFS_ARGS=--deadline 2"],
              "sh", "-c", "echo WORKLOAD-RAN")
    assert res.returncode == EX_FAILED, explain(res)
    assert "WORKLOAD-RAN" not in res.stdout
    assert "irsafs fetch failed" in res.stderr, explain(res)


def test_sighup_to_the_entrypoint_refreshes_the_config(images, domino_env, standin):
    needs_fuse()
    opts, _ = domino_env
    script = r'''
dir=$(dirname "$AWS_CONFIG_FILE")
cat "$AWS_CONFIG_FILE" > /dev/null
kill -HUP 1
i=0
until grep -q '"fetches": 2' "$dir/.status"; do
    i=$((i + 1)); if [ $i -gt 200 ]; then cat "$dir/.status"; exit 9; fi; sleep 0.05
done
echo REFRESHED
'''
    res = run(images[0], [*opts, *FUSE], "sh", "-c", script)
    assert res.returncode == 0 and "REFRESHED" in res.stdout, explain(res)
    assert standin.irsa_count == 2, standin.requests()
    assert "Refresh requested" in res.stderr, explain(res)
