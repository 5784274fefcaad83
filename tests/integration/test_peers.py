"""Peers (issue 14): one irsa-svc call per Ray cluster. A head `irsafs mount --serve-peers`
answers `GET /v1/config`; workers (`irsafs mount --peer`, `irsafs fetch --peer`) take the config
from it, authenticated by their projected service-account token, checked by the head against its
issuer's keys (OIDC discovery over HTTPS from a local issuer, tests/standin/oidc_issuer.py).

Everything runs for real: FUSE mounts, the HTTPS irsa-svc stand-in (counting its requests), the
HTTPS OIDC issuer with test RSA and EC keys, tokens minted here with python3-jwt. Worker mounts
point at an unreachable irsa-svc: what they serve can only come from the head. Time bounds are
generous hang guards (2 shared cores), not performance assertions.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import signal
import subprocess
import time

import pytest

from helpers import (UNREACHABLE_ARGS, clean_env, fetch_args, free_port, fuse_skip_reason, read_bytes, realistic_config,
                     start_readers, wait_until)
from oidc_issuer import OidcIssuer

_reason = fuse_skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

CONFIG = realistic_config(12, "peers").encode()
OTHER_SUB = "system:serviceaccount:domino-compute:someone-else"


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def issuer(pki):
    s = OidcIssuer(pki=pki).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def tokens(tmp_path, issuer):
    """Token files: the head's own and a worker's (the same service account, as in a Ray
    cluster), and a directory for forged ones."""
    d = tmp_path / "tokens"
    d.mkdir()
    head, worker = str(d / "head"), str(d / "worker")
    issuer.write_token(head, issuer.mint())
    issuer.write_token(worker, issuer.mint(alg="ES256"))
    return {"dir": d, "head": head, "worker": worker}


def start_head(mounter, standin, issuer, tokens, *extra, **kwargs):
    """A head mount serving peers on a free port, its keys loaded by discovery. m.url is the
    URL workers are given."""
    for _ in range(3):
        port = free_port()
        m = mounter(standin, "--serve-peers", f"127.0.0.1:{port}", "--peer-token-file", tokens["head"],
                    "--peer-ca-file", issuer.ca_file, *extra, check=False, **kwargs)
        if m.alive() or "Address already in use" not in m.log():
            break
    assert m.alive(), f"the head did not start:\n{m.log()}"
    m.port = port
    m.url = f"http://127.0.0.1:{port}"
    m.wait_log(rf"Peer endpoint on http://127\.0\.0\.1:{port} \(/v1/config\)")
    m.wait_log(r"Peer authentication: loaded .* of issuer " + re.escape(issuer.issuer))
    return m


def start_worker(mounter, head, token_file, *extra, deadline=60):
    """A worker mount taking the config from `head`; its own irsa-svc is unreachable."""
    return mounter(None, "--peer", head.url, "--peer-token-file", token_file, *extra, deadline=deadline)


def fetch_cmd(irsafs_bin, url, token_file, deadline=60):
    return [irsafs_bin, "fetch", *UNREACHABLE_ARGS, "--peer", url, "--peer-token-file", token_file,
            "--deadline", str(deadline)]


def get_config(port, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/v1/config", headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------

def test_one_irsa_svc_request_for_a_head_20_worker_mounts_and_200_fetches(
        mounter, standin, issuer, tokens, irsafs_bin, home):
    standin.set_config(CONFIG)
    # irsa-svc is slow: everything below arrives while the head's one fetch runs.
    standin.set_default({"delay": 2.0})
    head = start_head(mounter, standin, issuer, tokens)
    workers = [start_worker(mounter, head, tokens["worker"], deadline=120) for _ in range(20)]
    assert standin.irsa_count == 0  # all lazy so far

    procs = [subprocess.Popen(fetch_cmd(irsafs_bin, head.url, tokens["worker"], deadline=120),
                              env=clean_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(200)]
    readers = [start_readers(w.file, 2) for w in workers]
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err.decode()
            assert out == CONFIG
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for threads, results in readers:
        for t in threads:
            t.join(120)
        assert results == [CONFIG, CONFIG]

    assert standin.irsa_count == 1
    st = head.status()
    assert st["upstream_requests"] == 1
    assert st["peers"]["answers"]["200"] == 220, st["peers"]
    assert st["peers"]["answers"]["401"] == 0
    for w in workers:
        ws = w.status()
        assert ws["source"] == "peer" and ws["sha256"] == sha256(CONFIG)
        assert ws["upstream_requests"] == 0 and ws["token_requests"] == 0
        assert ws["peer_requests"] >= 1


def test_a_refresh_on_the_head_reaches_workers_at_their_next_refresh(mounter, standin, issuer, tokens):
    v1, v2 = realistic_config(2, "v1").encode(), realistic_config(3, "v2").encode()
    standin.set_config(v1)
    head = start_head(mounter, standin, issuer, tokens)
    worker = start_worker(mounter, head, tokens["worker"], "--refresh-interval", "1")
    assert read_bytes(worker.file) == v1
    # The worker's refreshes are conditional: 304, no new version.
    head.wait_status(lambda s: s["peers"]["answers"]["304"] >= 2, 30, "conditional refreshes")
    assert worker.status()["version"] == 1

    standin.set_config(v2)
    head.send_signal(signal.SIGHUP)
    head.wait_status(lambda s: s["sha256"] == sha256(v2), 30, "the head's refresh")
    ws = worker.wait_status(lambda s: s["sha256"] == sha256(v2), 30, "the worker's next refresh")
    assert ws["version"] == 2 and ws["source"] == "peer"
    assert read_bytes(worker.file) == v2
    assert standin.irsa_count == 2  # the head's two fetches; the worker called none


def test_a_head_whose_fetch_fails_gives_workers_the_reason(mounter, standin, issuer, tokens, run_fetch):
    standin.set_default({"status": 403, "body": "run run-0123 has no role mapping\n"})
    head = start_head(mounter, standin, issuer, tokens)
    res = run_fetch("--peer", head.url, "--peer-token-file", tokens["worker"], *UNREACHABLE_ARGS,
                    "--deadline", "8", timeout=60)
    assert res.rc == 1, res.explain()
    assert f"peer {head.url}/v1/config: HTTP 503: the serving peer cannot fetch the config: " in res.stderr
    assert "HTTP 403: run run-0123 has no role mapping" in res.stderr, res.explain()
    assert res.elapsed < 8 + 5, res.explain()
    # The head told the worker when to come back (its hold-off), and counted the 503s.
    status, headers, body = get_config(head.port, {"Authorization": "Bearer " + open(tokens["worker"]).read()})
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert b"run run-0123 has no role mapping" in body
    assert head.status()["peers"]["answers"]["503"] >= 2


def test_a_head_that_is_down_gives_a_clear_error_within_the_deadline(run_fetch, tokens):
    url = f"http://127.0.0.1:{free_port()}"
    res = run_fetch("--peer", url, "--peer-token-file", tokens["worker"], *UNREACHABLE_ARGS, "--deadline", "5",
                    timeout=60)
    assert res.rc == 1, res.explain()
    assert f"Cannot fetch the AWS config: peer {url}/v1/config: " in res.stderr
    assert "Connection refused" in res.stderr
    assert "deadline of 5" in res.stderr
    assert res.elapsed < 5 + 3, res.explain()


def test_fallback_to_irsa_svc_is_one_fetch_after_the_peer_failed(run_fetch, standin, tokens):
    url = f"http://127.0.0.1:{free_port()}"
    res = run_fetch("--peer", url, "--peer-fallback", "irsa-svc", "--peer-token-file", tokens["worker"],
                    *fetch_args(standin, deadline=3), timeout=60)
    assert res.rc == 0, res.explain()
    assert res.stdout == standin.config_bytes
    assert "falling back to irsa-svc (--peer-fallback irsa-svc)" in res.stderr
    assert standin.irsa_count == 1
    # Without it (the default), no irsa-svc call at all.
    res = run_fetch("--peer", url, "--peer-token-file", tokens["worker"], *fetch_args(standin, deadline=3), timeout=60)
    assert res.rc == 1 and "falling back" not in res.stderr, res.explain()
    assert standin.irsa_count == 1


def test_a_worker_mount_reports_an_unreachable_head(mounter, tokens):
    class Down:
        url = f"http://127.0.0.1:{free_port()}"
    worker = start_worker(mounter, Down, tokens["worker"], deadline=4)
    with pytest.raises(OSError):
        read_bytes(worker.file, 30)
    st = worker.status()
    assert st["state"] == "error" and f"peer {Down.url}/v1/config" in st["last_error"]
    assert st["upstream_requests"] == 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_every_forged_or_wrong_token_is_refused_with_its_status_and_log_line(
        mounter, standin, issuer, tokens, run_fetch):
    standin.set_config(CONFIG)
    head = start_head(mounter, standin, issuer, tokens)
    unpublished = issuer.add_key("RSA", publish=False)
    good = issuer.mint()
    head_part, payload, sig = good.split(".")
    cases = [
        ("bad signature", issuer.forge_bad_signature(), 401, "signature"),
        ("bad EC signature", issuer.forge_bad_signature(alg="ES256"), 401, "signature"),
        ("alg none", issuer.forge_alg_none(), 401, "algorithm"),
        ("HS256 keyed with the public key", issuer.forge_hs256_with_public_key(), 401, "algorithm"),
        ("unknown kid", issuer.mint(kid=unpublished), 401, "unknown kid"),
        ("expired", issuer.mint(exp_in=-120), 401, "exp"),
        ("not yet valid", issuer.mint(nbf_in=180), 401, "nbf"),
        ("wrong aud", issuer.mint(aud="sts.amazonaws.com"), 401, "aud"),
        ("wrong iss", issuer.mint(iss="https://oidc.example.com/id/OTHER"), 401, "iss"),
        ("another sub", issuer.mint(sub=OTHER_SUB), 403, "sub"),
        ("not three parts", f"{head_part}.{payload}", 401, "malformed"),
        ("bad base64", f"{head_part}.{payload[:-3]}!!!.{sig}", 401, "malformed"),
        ("bad JSON", f"{_b64(b'{not json')}.{payload}.{sig}", 401, "malformed"),
        ("huge", "a" * 9000 + "." + payload + "." + sig, 401, "size"),
    ]
    seen = {}
    failures = []
    for name, token, status, check in cases:
        path = str(tokens["dir"] / "forged")
        issuer.write_token(path, token)
        res = run_fetch("--peer", head.url, "--peer-token-file", path, *UNREACHABLE_ARGS, "--deadline", "20",
                        timeout=60)
        seen[(status, check)] = seen.get((status, check), 0) + 1
        try:
            assert res.rc == 1, res.explain()
            assert f"HTTP {status}: {check}" in res.stderr, res.explain()
            assert res.stdout == b""
            # One log line per refusal, naming the check.
            head.wait_log(rf"Peer request refused \({status}\): {re.escape(check)}\b", 20,
                          count=seen[(status, check)])
            assert sig not in res.stderr and token[-40:] not in res.stderr
        except (AssertionError, TimeoutError) as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)

    # No token at all, and a scheme other than Bearer.
    for headers in ({}, {"Authorization": "Basic " + _b64(b"u:p")}):
        status, h, body = get_config(head.port, headers)
        assert status == 401 and h.get("www-authenticate", "").startswith("Bearer"), body
        assert CONFIG not in body

    # Nothing refused reached irsa-svc or got the config; the head never logged a token.
    assert standin.irsa_count == 0
    st = head.status()
    assert st["peers"]["answers"]["200"] == 0
    assert st["peers"]["answers"]["403"] == 1
    log = head.log()
    for _, token, _, _ in cases:
        for part in token.split("."):
            if len(part) > 20:
                assert part not in log
    # And the real token still works, once.
    status, h, body = get_config(head.port, {"Authorization": "Bearer " + good})
    assert (status, body) == (200, CONFIG) and h["etag"] == f'"{sha256(CONFIG)}"'
    status, h, body = get_config(head.port, {"Authorization": "Bearer " + good, "If-None-Match": h["etag"]})
    assert (status, body) == (304, b"")
    assert standin.irsa_count == 1


def test_bad_peer_options_are_usage_errors(run_fetch, tokens):
    for args, why in [(["--peer", "ray-head:6010"], "must start with http:// or https://"),
                      (["--peer", "http://h:1", "--peer-fallback", "sometimes"], "--peer-fallback")]:
        res = run_fetch(*args, "--peer-token-file", tokens["worker"], *UNREACHABLE_ARGS)
        assert res.rc == 2, res.explain()
        assert why in res.stderr, res.explain()
    res = run_fetch("--peer-token-file", tokens["worker"], *UNREACHABLE_ARGS, "--deadline", "3",
                    env={"IRSAFS_PEER": "ftp://h/"})
    assert res.rc == 2 and "IRSAFS_PEER" in res.stderr, res.explain()
