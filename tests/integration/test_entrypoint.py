"""deploy/irsafs-entrypoint.sh's decisions, with a stand-in `irsafs` on PATH that prints what it
was given (the container test runs the real image; this covers every branch in a second):
the sidecar's mount point and link, the run id from the service account, a Ray head serving its
workers and the workers' peer, and the single-container modes' refusals."""
from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
ENTRYPOINT = REPO / "deploy" / "irsafs-entrypoint.sh"

FAKE_IRSAFS = """#!/bin/sh
/usr/bin/python3 -c 'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith(("IRSAFS_PEER", "DOMINO_"))}}))' "$@"
"""


@pytest.fixture
def entrypoint(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "irsafs"
    fake.write_text(FAKE_IRSAFS)
    fake.chmod(0o755)

    def run(*args, **env):
        full = {"PATH": f"{bindir}:/usr/bin:/bin", "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config")}
        full.update(env)
        res = subprocess.run(["sh", str(ENTRYPOINT), *args], env=full, capture_output=True, text=True,
                             timeout=30)
        res.called = json.loads(res.stdout) if res.returncode == 0 and res.stdout.startswith("{") else None
        return res
    run.tmp = tmp_path
    return run


def test_sidecar_mounts_on_a_subdirectory_and_links_the_config(entrypoint):
    res = entrypoint(DOMINO_RUN_ID="r1")
    aws = entrypoint.tmp / "aws"
    assert res.called["argv"] == ["mount", "--foreground", "--file", "config", "--link", str(aws / "config"),
                                  str(aws / ".irsafs")], res
    assert (aws / ".irsafs").is_dir()
    assert res.called["env"]["DOMINO_IRSA_PROXY"] == "http://localhost:6003"
    assert "IRSAFS_PEER" not in res.called["env"]


def test_sidecar_with_the_mutations_paths_and_args(entrypoint):
    link, mnt = entrypoint.tmp / "chart" / "config", entrypoint.tmp / "own" / "mnt"
    link.parent.mkdir()
    res = entrypoint(DOMINO_RUN_ID="r1", IRSAFS_LINK=str(link), IRSAFS_MOUNTPOINT=str(mnt),
                     IRSAFS_ARGS="--uid 12574 --gid 12574")
    assert res.called["argv"] == ["mount", "--foreground", "--file", "config", "--link", str(link),
                                  "--uid", "12574", "--gid", "12574", str(mnt)], res


@pytest.mark.parametrize("account, run_id", [("run-6612abc", "6612abc"), ("ray-6612abc-ray", "6612abc"),
                                             ("spark-6612-x-spark", "6612-x"), ("dask-r9-dask", "r9")])
def test_run_id_from_the_service_account(entrypoint, account, run_id):
    res = entrypoint(IRSAFS_SERVICE_ACCOUNT=account)
    assert res.called["env"]["DOMINO_RUN_ID"] == run_id, res


def test_an_unknown_service_account_needs_domino_run_id(entrypoint):
    res = entrypoint(IRSAFS_SERVICE_ACCOUNT="default")
    assert res.returncode == 70 and res.called is None
    assert "cannot tell the run id from the service account 'default': set DOMINO_RUN_ID" in res.stderr


def test_run_id_given_wins_over_the_service_account(entrypoint):
    res = entrypoint(DOMINO_RUN_ID="given", IRSAFS_SERVICE_ACCOUNT="run-other")
    assert res.called["env"]["DOMINO_RUN_ID"] == "given"


def test_ray_head_serves_its_workers(entrypoint):
    res = entrypoint(DOMINO_RUN_ID="r", IRSAFS_APP="ray", IRSAFS_CLUSTER="ray-r",
                     IRSAFS_CLUSTER_ROLE="cluster-master")
    assert "--serve-peers" in res.called["argv"], res
    assert res.called["argv"][res.called["argv"].index("--serve-peers") + 1] == "0.0.0.0:6010"
    assert "IRSAFS_PEER" not in res.called["env"]


def test_ray_worker_takes_the_config_from_the_heads_service(entrypoint):
    res = entrypoint(DOMINO_RUN_ID="r", IRSAFS_APP="ray", IRSAFS_CLUSTER="ray-r",
                     IRSAFS_CLUSTER_ROLE="cluster-worker", IRSAFS_PEER_PORT="7000")
    assert res.called["env"]["IRSAFS_PEER"] == "http://ray-r-ray-head:7000"
    assert "--serve-peers" not in res.called["argv"]
    res = entrypoint(DOMINO_RUN_ID="r", IRSAFS_APP="ray", IRSAFS_CLUSTER="ray-r",
                     IRSAFS_CLUSTER_ROLE="cluster-worker", IRSAFS_PEER="http://elsewhere:1")
    assert res.called["env"]["IRSAFS_PEER"] == "http://elsewhere:1", "an explicit peer is kept"


@pytest.mark.parametrize("app, role", [("spark", "cluster-worker"), ("", ""), ("ray", "edge-workload")])
def test_no_peers_outside_ray_clusters(entrypoint, app, role):
    res = entrypoint(DOMINO_RUN_ID="r", IRSAFS_APP=app, IRSAFS_CLUSTER="c", IRSAFS_CLUSTER_ROLE=role)
    assert "--serve-peers" not in res.called["argv"] and "IRSAFS_PEER" not in res.called["env"]


def test_one_container_modes(entrypoint):
    res = entrypoint("true", IRSAFS_MODE="sometimes")
    assert res.returncode == 64 and "IRSAFS_MODE must be mount, fetch or off, not 'sometimes'" in res.stderr
    res = entrypoint("sh", "-c", "echo WORKLOAD-RAN", IRSAFS_MODE="off")
    assert res.returncode == 0 and res.stdout == "WORKLOAD-RAN\n", "off: the command alone"
