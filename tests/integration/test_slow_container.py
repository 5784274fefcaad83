"""The irsafs image for real (issues 4 and 12): build deploy/Dockerfile with podman and run it,
as one container and as a pod's sidecar.

No registry is reachable here, so the base images come from debootstrap
(tests/container/make-base-image.sh: debian:bookworm and a faithful debian:bookworm-slim, kept
in podman's storage and reused while they exist). The build then needs only Debian's archive.
The test image is the same Dockerfile built with --build-arg EXTRA_PACKAGES=awscli (Debian's
AWS CLI), so that `aws configure list-profiles` runs inside; the shipped image stays lean.

One container: the Domino environment (DOMINO_IRSA_ENDPOINT, DOMINO_API_PROXY, DOMINO_RUN_ID,
POD_INFO_PATH, the CA's ca.crt where the Mutation mounts it) pointing at a stand-in of irsa-svc
on the host (--network host), and the image's entrypoint does the rest.

The pod: the sidecar (the image with no arguments, privileged, its volume rshared) and a
workload from plain Debian (no irsafs, no privilege, no /dev/fuse, Domino's uid, its volume
rslave) share a host directory that is a shared mount, and the host's network (a pod's shared
network namespace), in both layouts: the image's default (one volume) and the Mutation's
(deploy/k8s/domino-mutation.yaml: the chart's volume for the link, irsafs's own for the mount).

Podman flags that this machine needs: --runtime runc, --ulimit nofile=1024:1024 and an nproc
limit (podman's default nproc limit cannot be set here: "error setting rlimit type 6").

Skips (with the reason) only when podman cannot run a container at all. The timings of the
image builds and the image's size are printed at the end of the session.
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

from helpers import DEFAULT_RUN_ID, free_port, fuse_skip_reason, is_mounted, wait_until

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
IMAGE = "localhost/irsafs:test"
TEST_IMAGE = "localhost/irsafs-awscli:test"
ENGINE = ["podman", "--runtime", "runc"]
# Containers of a pod are removed by the test itself (it inspects their exit status first).
POD_RUN = [*ENGINE, "run", "--pull=never", "--network", "host",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
RUN = [*POD_RUN[:4], "--rm", *POD_RUN[4:]]
FUSE = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"]
EX_FAILED = 70  # the entrypoint's own failures
WORKLOAD_IMAGE = "localhost/debian:bookworm-slim"  # plain Debian: no irsafs in it
DOMINO_UID = "12574"

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
        parts = ", ".join(f"{k} {v:.1f}" + ("" if "MB" in k else "s") for k, v in TIMINGS.items())
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
    size = sh([*ENGINE, "image", "inspect", IMAGE, "--format", "{{.Size}}"]).stdout.strip()
    base = sh([*ENGINE, "image", "inspect", "debian:bookworm-slim", "--format", "{{.Size}}"]).stdout.strip()
    TIMINGS["image size (MB)"] = int(size) / 1e6
    TIMINGS["base debian:bookworm-slim stand-in (MB)"] = int(base) / 1e6
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
    }
    # The CA where the Mutation puts it (the secret's ca.crt): irsafs trusts that directory.
    opts = ["-v", f"{standin.ca_file}:/etc/ssl/certs/irsa/ca.crt:ro",
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
    assert "Mounted irsafs on" in res.stderr, explain(res)


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
    assert message in res.stderr, explain(res)
    assert "not starting the workload" in res.stderr, explain(res)
    assert "IRSAFS_MODE=fetch" in res.stderr, "points at the fallback" + explain(res)
    assert standin.irsa_count == 0


def test_sigterm_reaches_the_workload(images, domino_env, standin):
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
    assert "GOT-TERM" in out  # the workload is the container's main process


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


# ---------------------------------------------------------------------------------------------
# The pod: irsafs as the sidecar, the workload untouched (issue 12)
# ---------------------------------------------------------------------------------------------

SERVED_AFTER_RESTART = SERVED.replace("# served by", "# served again by")


class Pod:
    """The two layouts of a pod, on host directories that are shared mounts (what a Kubernetes
    node's kubelet directory is), with the paths the containers see them at."""

    def __init__(self, layout: str, root: pathlib.Path, port: int):
        self.layout = layout
        self.port = port
        self.dirs = []
        if layout == "default":
            # The image's default: one volume at the config's directory, the mount on .irsafs.
            vol = self.shared(root / "aws-config-file")
            self.sidecar_opts = ["-v", f"{vol}:/var/run/.aws:rshared"]
            self.workload_opts = ["-v", f"{vol}:/var/run/.aws:rslave"]
            self.mnt = vol / ".irsafs"
            self.probe = "/var/run/.aws/.irsafs/.status"
        else:
            # deploy/k8s/domino-mutation.yaml: the chart's volume holds the link, irsafs's own
            # volume the mount (on its mnt/), each seen by the sidecar under /irsafs/.
            aws = root / "aws-config-file"
            aws.mkdir()
            vol = self.shared(root / "irsafs")
            self.sidecar_opts = ["-v", f"{vol}:/irsafs/.irsafs:rshared", "-v", f"{aws}:/irsafs/.aws",
                                 "-e", "IRSAFS_LINK=/irsafs/.aws/config",
                                 "-e", "IRSAFS_MOUNTPOINT=/irsafs/.irsafs/mnt",
                                 "-e", f"IRSAFS_ARGS=--uid {DOMINO_UID} --gid {DOMINO_UID}"]
            self.workload_opts = ["-v", f"{aws}:/var/run/.aws", "-v", f"{vol}:/var/run/.irsafs:rslave"]
            self.mnt = vol / "mnt"
            self.probe = "/irsafs/.irsafs/mnt/.status"

    def shared(self, path: pathlib.Path) -> pathlib.Path:
        path.mkdir()
        sh(["mount", "--bind", str(path), str(path)])
        sh(["mount", "--make-shared", str(path)])
        self.dirs.append(path)
        return path

    def cleanup(self):
        for d in self.dirs:
            sh(["umount", "--recursive", "--lazy", str(d)], check=False)


@pytest.fixture
def containers():
    """Names of the containers a test starts; all removed at the end."""
    names: list = []
    yield names
    for name in names:
        sh([*ENGINE, "rm", "--force", "--time", "0", name], check=False, timeout=60)


def start_sidecar(pod, domino_env, containers, run_id_env) -> str:
    name = f"irsafs-sidecar-{uuid.uuid4().hex[:12]}"
    containers.append(name)
    opts, _ = domino_env
    sh([*POD_RUN, "--detach", "--name", name, "--privileged", *opts, *pod.sidecar_opts, *run_id_env,
        "-e", f"DOMINO_IRSA_PROXY=http://127.0.0.1:{pod.port}", IMAGE])
    # The startupProbe of the Mutation: .status answers through the mount.
    wait_until(lambda: sh([*ENGINE, "exec", name, "cat", pod.probe], check=False).returncode == 0,
               timeout=60, what=f"the sidecar's mount ({pod.probe})", interval=0.2)
    assert is_mounted(str(pod.mnt)), "the mount reaches the host (the pod's volume) by propagation"
    return name


def workload(pod, containers, *cmd, detach=False) -> subprocess.CompletedProcess:
    name = f"irsafs-workload-{uuid.uuid4().hex[:12]}"
    containers.append(name)
    argv = [*POD_RUN, "--name", name, "--user", f"{DOMINO_UID}:{DOMINO_UID}",
            "-e", "AWS_CONFIG_FILE=/var/run/.aws/config", *pod.workload_opts]
    if detach:
        argv.append("--detach")
    res = sh([*argv, WORKLOAD_IMAGE, *cmd], check=False, timeout=120)
    res.name = name  # type: ignore[attr-defined]
    return res


def in_workload(name, script, timeout=120) -> subprocess.CompletedProcess:
    return sh([*ENGINE, "exec", name, "bash", "-c", script], check=False, timeout=timeout)


@pytest.mark.parametrize("layout", ["default", "domino-mutation"])
def test_sidecar_serves_an_untouched_workload_and_survives_its_own_restart(
        images, domino_env, standin, containers, tmp_path, layout):
    needs_fuse()
    pod = Pod(layout, tmp_path, free_port())
    try:
        # The run id as the Mutation gives it (the pod's service account), or as plain env.
        run_id_env = (["-e", f"IRSAFS_SERVICE_ACCOUNT=run-{DEFAULT_RUN_ID}"] if layout == "domino-mutation"
                      else ["-e", f"DOMINO_RUN_ID={DEFAULT_RUN_ID}"])
        sidecar = start_sidecar(pod, domino_env, containers, run_id_env)
        assert standin.irsa_count == 0, "nothing is fetched before the first read"

        # (a) The workload reads the exact bytes; one request; a later workload gets the cache.
        w1 = workload(pod, containers, "sleep", "600", detach=True)
        assert w1.returncode == 0, explain(w1)
        res = in_workload(w1.name, 'id -u; grep -c "/dev/fuse" /proc/self/mountinfo; '
                                   'test -e /dev/fuse && echo HAS-FUSE; cat "$AWS_CONFIG_FILE"')
        assert res.returncode == 0, explain(res)
        uid, fuse_devices, served = res.stdout.split("\n", 2)
        assert (uid, fuse_devices) == (DOMINO_UID, "0") and not served.startswith("HAS-FUSE")
        assert served == SERVED, explain(res)
        assert standin.irsa_count == 1, standin.requests()
        assert standin.requests()[0]["json"]["run_id"] == DEFAULT_RUN_ID
        later = workload(pod, containers, "cat", "/var/run/.aws/config")
        assert later.returncode == 0 and later.stdout == SERVED, explain(later)
        assert standin.irsa_count == 1, "the second workload container read the cache"

        # (b) The old sidecar's port, from the workload (the pod's network).
        res = in_workload(w1.name, f"exec 3<>/dev/tcp/127.0.0.1/{pod.port}; "
                                   "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
        assert res.stdout.startswith("HTTP/1.0 200") or res.stdout.startswith("HTTP/1.1 200"), explain(res)
        assert res.stdout.rstrip().endswith("ok"), explain(res)

        # (c) kill -9 of the sidecar; the kubelet starts a new one; the running workload reads
        # again through the same path (the new mount propagated over the detached dead one).
        standin.set_config(SERVED_AFTER_RESTART)
        sh([*ENGINE, "kill", "--signal", "KILL", sidecar], timeout=60)
        sh([*ENGINE, "wait", sidecar], check=False, timeout=60)
        t0 = time.monotonic()
        start_sidecar(pod, domino_env, containers, run_id_env)
        res = in_workload(w1.name, 'for i in $(seq 600); do '
                                   'grep -q "served again" "$AWS_CONFIG_FILE" 2>/dev/null && '
                                   'exec cat "$AWS_CONFIG_FILE"; sleep 0.05; done; exit 9')
        TIMINGS[f"sidecar restart to the workload's read ({layout})"] = time.monotonic() - t0
        assert res.returncode == 0 and res.stdout == SERVED_AFTER_RESTART, explain(res)
        sidecar = containers[-1]
        assert "stale FUSE mount" in sh([*ENGINE, "logs", sidecar]).stderr

        # (d) Stopping the sidecar: exit 0, no mount left, a reader gets an error at once.
        sh([*ENGINE, "stop", "--time", "10", sidecar], timeout=60)
        code = sh([*ENGINE, "inspect", sidecar, "--format", "{{.State.ExitCode}}"]).stdout.strip()
        logs = sh([*ENGINE, "logs", sidecar])
        assert code == "0", logs.stderr[-3000:]
        assert "Unmounting" in logs.stderr
        assert not is_mounted(str(pod.mnt))
        res = in_workload(w1.name, 'grep -c " fuse" /proc/self/mountinfo; '
                                   'timeout 5 cat "$AWS_CONFIG_FILE"; echo "rc=$?"')
        assert res.stdout.startswith("0\n"), explain(res)
        assert "rc=1" in res.stdout and "No such file" in res.stderr, explain(res)
    finally:
        for name in containers:
            sh([*ENGINE, "rm", "--force", "--time", "0", name], check=False, timeout=60)
        pod.cleanup()
