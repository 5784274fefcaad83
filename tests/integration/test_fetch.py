"""`irsafs fetch` end to end against the local stand-in of irsa-svc (issue 2).

Each test checks what an outside observer sees: the exit status, the bytes on stdout, the
requests that reached the stand-in, a stderr line naming the reason, and generous time bounds.
"""
from __future__ import annotations

import email.utils
import json
import os
import re
import stat
import threading
import time

import pytest

from helpers import DEFAULT_RUN_ID, fetch_args
from irsa_standin import EXAMPLE_CONFIG, IrsaStandin

GRACE = 5.0  # seconds allowed on top of a deadline (process start, slow CI machines)

# CRLF line ends, non-ASCII text, comments and no final newline: byte-exactness matters.
BODY = (
    "# served by the irsa-svc stand-in \u2713\r\n"
    "[profile src_\u00e9quipe-role]\r\n"
    "web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token\r\n"
    "role_arn = arn:aws:iam::111111111111:role/\u00e9quipe-role\r\n"
    "\r\n"
    "; second profile\r\n"
    "[profile \u00e9quipe-role]\r\n"
    "source_profile = src_\u00e9quipe-role\r\n"
    "role_arn = arn:aws:iam::222222222222:role/\u00e9quipe-r\u00f4le"
).encode("utf-8")

LABELS = (
    'app.kubernetes.io/name="run-6612"\n'
    'dominodatalab.com/irsa-workload-type="{type}"\n'
    'pod-template-hash="7c9f8d6b5"\n'
)


@pytest.fixture
def out_dir(tmp_path):
    """An empty directory for --output files (tmp_path also holds the HOME directory)."""
    d = tmp_path / "out"
    d.mkdir()
    return d


def failed(res) -> str:
    return res.explain()


def last_line(res) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_failed(res, *patterns: str) -> None:
    """Exit 1, nothing on stdout, and the LAST stderr line (the message saying why the fetch
    failed) matches every pattern (case-insensitive)."""
    assert res.rc == 1, failed(res)
    assert res.stdout == b"", failed(res)
    final = last_line(res)
    for p in patterns:
        assert re.search(p, final, re.IGNORECASE), \
            f"the final stderr line does not match /{p}/: {final!r}" + failed(res)


def post_gap(standin, i: int = 0) -> float:
    """Seconds between POST i and POST i+1 at the stand-in."""
    reqs = standin.requests()
    return reqs[i + 1]["monotonic"] - reqs[i]["monotonic"]


# ---------------------------------------------------------------------------------------------
# Success and the request irsafs sends
# ---------------------------------------------------------------------------------------------

def test_success_prints_the_body_byte_for_byte(standin, run_fetch):
    standin.set_config(BODY)
    res = run_fetch(*fetch_args(standin, run_id="run-42"), "--workload-type", "cluster-worker")
    assert res.rc == 0, failed(res)
    assert res.stdout == BODY, failed(res)

    [post] = standin.requests()
    [token_req] = standin.requests("token")
    assert post["method"] == "POST" and post["path"] == "/map_iam_roles_to_pod_sa"
    assert post["headers"]["authorization"] == "Bearer " + token_req["issued"]
    assert post["headers"]["content-type"].split(";")[0].strip() == "application/json"
    assert post["json"] == {"run_id": "run-42", "irsa_workload_type": "cluster-worker"}


def test_example_config_from_design_notes(standin, run_fetch):
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.requests()[0]["json"] == {"run_id": DEFAULT_RUN_ID}


@pytest.mark.parametrize("labels, expected", [
    (LABELS.format(type="cluster-master"), "cluster-master"),
    (LABELS.format(type="edge-workload"), "edge-workload"),
    ('app="x"\n', None),                    # label absent
    ("", None),                             # empty file
    (None, None),                           # POD_INFO_PATH names a missing file
], ids=["cluster-master", "edge-workload", "label-absent", "empty-file", "missing-file"])
def test_workload_type_from_pod_info(standin, run_fetch, tmp_path, labels, expected):
    path = tmp_path / "labels"
    if labels is not None:
        path.write_text(labels)
    res = run_fetch(*fetch_args(standin), env={"POD_INFO_PATH": path})
    assert res.rc == 0, failed(res)
    body = standin.requests()[0]["json"]
    if expected is None:
        assert body == {"run_id": DEFAULT_RUN_ID}, "irsa_workload_type must be left out"
    else:
        assert body == {"run_id": DEFAULT_RUN_ID, "irsa_workload_type": expected}


def test_no_workload_type_key_without_pod_info(standin, run_fetch):
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert "irsa_workload_type" not in standin.requests()[0]["json"]


def test_environment_fallbacks(standin, run_fetch, tmp_path):
    labels = tmp_path / "labels"
    labels.write_text(LABELS.format(type="cluster-worker"))
    res = run_fetch(env={
        "DOMINO_IRSA_ENDPOINT": standin.endpoint,
        "DOMINO_API_PROXY": standin.api_proxy,
        "DOMINO_RUN_ID": "env-run",
        "DOMINO_IRSA_SSL_CERT": standin.ca_file,
        "POD_INFO_PATH": labels,
    })
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.token_count == 1
    assert standin.requests()[0]["json"] == {"run_id": "env-run",
                                             "irsa_workload_type": "cluster-worker"}


def test_flags_beat_environment(standin, pki, run_fetch, tmp_path):
    labels = tmp_path / "labels"
    labels.write_text(LABELS.format(type="edge-workload"))
    decoy = IrsaStandin(pki=pki).start()  # what the environment points at: must stay unused
    try:
        res = run_fetch(
            *fetch_args(standin, run_id="flag-run"), "--workload-type", "cluster-master",
            env={
                "DOMINO_IRSA_ENDPOINT": decoy.endpoint,
                "DOMINO_API_PROXY": decoy.api_proxy,
                "DOMINO_RUN_ID": "env-run",
                "DOMINO_IRSA_SSL_CERT": standin.other_ca_file,
                "POD_INFO_PATH": labels,
            })
        assert res.rc == 0, failed(res)
        assert standin.requests()[0]["json"] == {"run_id": "flag-run",
                                                 "irsa_workload_type": "cluster-master"}
        assert decoy.irsa_count == 0 and decoy.token_count == 0
    finally:
        decoy.stop()


# ---------------------------------------------------------------------------------------------
# Usage errors: exit 2
# ---------------------------------------------------------------------------------------------

def test_missing_run_id_exits_2_naming_flag_and_variable(standin, run_fetch):
    res = run_fetch(*fetch_args(standin, run_id=None))
    assert res.rc == 2, failed(res)
    assert res.stdout == b""
    assert "--run-id" in res.stderr and "DOMINO_RUN_ID" in res.stderr, failed(res)
    assert standin.irsa_count == 0 and standin.token_count == 0


@pytest.mark.parametrize("extra", [
    ["--no-such-flag"],
    ["--log-level", "loud"],
    ["--log-format", "xml"],
    ["--timeout", "soon"],
    ["--deadline", "never"],
    ["unexpected-positional"],
], ids=lambda e: " ".join(e))
def test_bad_usage_exits_2(standin, run_fetch, extra):
    res = run_fetch(*fetch_args(standin), *extra)
    assert res.rc == 2, failed(res)
    assert res.stdout == b""
    assert res.stderr.strip(), "a usage error must say what is wrong"
    assert standin.irsa_count == 0 and standin.token_count == 0


# ---------------------------------------------------------------------------------------------
# --output
# ---------------------------------------------------------------------------------------------

def test_output_writes_file_with_mode_0644(standin, run_fetch, tmp_path):
    standin.set_config(BODY)
    out = tmp_path / "aws" / "config"
    out.parent.mkdir()
    res = run_fetch(*fetch_args(standin), "-o", out, umask=0o077)
    assert res.rc == 0, failed(res)
    assert res.stdout == b"", "with --output nothing goes to stdout"
    assert out.read_bytes() == BODY
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(os.listdir(out.parent)) == ["config"], "no temporary file left behind"


def test_output_long_flag(standin, run_fetch, tmp_path):
    out = tmp_path / "config"
    res = run_fetch(*fetch_args(standin), "--output", out)
    assert res.rc == 0, failed(res)
    assert out.read_bytes() == EXAMPLE_CONFIG.encode()


def test_output_replaces_existing_file_atomically(standin, run_fetch, out_dir):
    standin.set_config(BODY)
    out = out_dir / "config"
    out.write_bytes(b"[profile old]\nregion = eu-west-1\n")
    old_inode = out.stat().st_ino
    with open(out, "rb") as held:  # a reader that opened the old file
        res = run_fetch(*fetch_args(standin), "-o", out)
        assert res.rc == 0, failed(res)
        assert held.read() == b"[profile old]\nregion = eu-west-1\n", \
            "the old file was rewritten in place, not replaced"
    assert out.read_bytes() == BODY
    assert out.stat().st_ino != old_inode
    assert os.listdir(out_dir) == ["config"], "no temporary file left behind"


@pytest.mark.parametrize("behaviour", [
    {"status": 403, "body": "denied\n"},
    {"body": "<html><body>proxy error</body></html>\n"},
    {"truncate": True},
], ids=["403", "html-200", "truncated"])
def test_failed_fetch_leaves_existing_output_untouched(standin, run_fetch, out_dir, behaviour):
    standin.set_default(behaviour)
    out = out_dir / "config"
    out.write_bytes(b"[profile old]\n")
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=2), "-o", out)
    assert_failed(res)
    assert out.read_bytes() == b"[profile old]\n"
    assert os.listdir(out_dir) == ["config"], "no temporary file left behind"


def test_failed_fetch_creates_no_output(standin, run_fetch, out_dir):
    standin.set_default({"status": 404, "body": "no such run\n"})
    res = run_fetch(*fetch_args(standin), "-o", out_dir / "config")
    assert_failed(res)
    assert os.listdir(out_dir) == []


# ---------------------------------------------------------------------------------------------
# Retries and HTTP statuses
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_transient_status_is_retried(standin, run_fetch, status):
    standin.enqueue({"status": status, "body": f"transient trouble {status}\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.irsa_count == 2
    assert str(status) in res.stderr, "the failed attempt should be logged" + failed(res)
    assert standin.token_count == 2, "a fresh token for every attempt"
    first, second = standin.requests()
    assert first["token"] != second["token"]


def test_retry_after_seconds_is_honoured(standin, run_fetch):
    standin.enqueue({"status": 503, "retry_after": "1", "body": "busy\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert standin.irsa_count == 2
    assert post_gap(standin) >= 0.95, "Retry-After: 1 not honoured"
    assert res.elapsed >= 0.95


def test_retry_after_http_date_is_honoured(standin, run_fetch):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # 2-3 s from now
    standin.enqueue({"status": 429, "retry_after": when, "body": "slow down\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert standin.irsa_count == 2
    assert post_gap(standin) >= 1.5, f"Retry-After: {when} not honoured"


def test_retry_after_beyond_deadline_gives_up_within_deadline(standin, run_fetch):
    standin.set_default({"status": 503, "retry_after": "30", "body": "maintenance\n"})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, "503")
    assert res.elapsed < 3 + GRACE


def test_server_errors_until_deadline(standin, run_fetch):
    standin.set_default({"status": 500, "body": "internal error\n"})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, "500", "internal error")
    assert res.elapsed < 3 + GRACE
    assert standin.irsa_count >= 2, "5xx must be retried"


def test_connection_refused_for_the_whole_deadline(standin, run_fetch):
    standin.set_down(True)
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=1))
    assert_failed(res, r"connect|refused")
    assert res.elapsed < 3 + GRACE
    assert standin.token_count >= 2, "connection errors must be retried (fresh token each)"


def test_recovers_when_irsa_svc_comes_back(standin, run_fetch):
    standin.set_down(True)

    def bring_back():
        if standin.wait_for_requests(2, timeout=20, endpoint="token"):  # 2 attempts failed
            standin.set_down(False)
    t = threading.Thread(target=bring_back)
    t.start()
    res = run_fetch(*fetch_args(standin, deadline=30, timeout=2))
    t.join()
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.irsa_count == 1


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_other_4xx_fail_at_once(standin, run_fetch, status):
    standin.set_default({"status": status,
                         "body": "AccessDenied: no role mapping for this run\nsecond line\n"})
    res = run_fetch(*fetch_args(standin))
    assert_failed(res, str(status), "AccessDenied: no role mapping for this run")
    assert standin.irsa_count == 1
    assert res.elapsed < GRACE


def test_401_once_gets_a_fresh_token_and_one_more_try(standin, run_fetch):
    standin.enqueue({"status": 401, "body": "token expired\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.token_count == 2
    assert standin.irsa_count == 2
    first, second = standin.requests()
    assert first["token"] != second["token"], "the retry must use a fresh token"
    assert second["token"] == standin.issued_tokens[-1]


def test_401_always_fails_after_exactly_two_posts(standin, run_fetch):
    standin.set_default({"reject_token": True})
    res = run_fetch(*fetch_args(standin))
    assert_failed(res, "401")
    assert standin.irsa_count == 2
    assert standin.token_count == 2
    assert res.elapsed < GRACE


def test_invalid_token_is_rejected_by_the_standin_and_not_retried_forever(standin, run_fetch):
    # The token endpoint hands out something irsa-svc does not accept (expired token source).
    standin.set_token_default({"body": "not-a-valid-token\n"})
    res = run_fetch(*fetch_args(standin))
    assert_failed(res, "401")
    assert standin.irsa_count == 2


# ---------------------------------------------------------------------------------------------
# Validation of 200 bodies
# ---------------------------------------------------------------------------------------------

INVALID_BODIES = {
    "html": (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><h1>Bad Gateway</h1></body></html>\n", r"not an AWS config"),
    "json": (b'{"error": "InternalError", "message": "try again"}\n', r"not an AWS config"),
    "binary": (bytes(range(256)) * 4, r"not an AWS config"),
    "empty": (b"", r"not an AWS config.*empty|empty"),
    "nul": (b"[profile a]\nregion = eu\x00west-1\n", r"not an AWS config"),
    "no-section": (b"region = eu-west-1\n", r"not an AWS config"),
    "latin1": ("[profile caf\u00e9]\nregion = x\n".encode("latin-1"), r"not an AWS config"),
}


@pytest.mark.parametrize("name", list(INVALID_BODIES))
def test_invalid_200_body_is_retried_then_fails(standin, run_fetch, name):
    body, pattern = INVALID_BODIES[name]
    standin.set_default({"body": body})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, pattern)
    assert standin.irsa_count >= 2, "an invalid 200 is retryable"
    assert res.elapsed < 3 + GRACE


def test_invalid_body_then_valid_succeeds(standin, run_fetch):
    standin.enqueue({"body": "<html><body>captive portal</body></html>\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.irsa_count == 2


VALID_BODIES = {
    "colon-separator": "[profile a]\nregion: eu-west-1\n",
    "continuation": "[profile a]\ns3 =\n    max_concurrent_requests = 20\n    addressing_style = path\n",
    "comments": "; leading comment\n# another\n[default]\nregion = us-east-1\n\n  # indented comment\n",
    "no-final-newline": "[default]\nregion = us-east-1",
    "empty-value": "[default]\nregion =\n",
}


@pytest.mark.parametrize("name", list(VALID_BODIES))
def test_plausible_configs_are_accepted(standin, run_fetch, name):
    standin.set_config(VALID_BODIES[name])
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == VALID_BODIES[name].encode()
    assert standin.irsa_count == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_two_mib_body_is_rejected_as_too_large(standin, run_fetch, chunked):
    # A well-formed config, only too large: the size limit is what rejects it.
    standin.set_default({"big": 2 * 1024 * 1024, "fill": "config", "chunked": chunked})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, r"too large|larger than|exceeds")
    assert res.elapsed < 3 + GRACE


def test_64_mib_body_is_cut_off(standin, run_fetch):
    standin.set_default({"big": 64 * 1024 * 1024})
    res = run_fetch(*fetch_args(standin, deadline=4))
    assert_failed(res, r"too large|larger than|exceeds")
    assert res.elapsed < 4 + GRACE


def test_body_of_exactly_one_mib_is_accepted(standin, run_fetch):
    body = b"[profile big]\n" + b"".join(b"k%06d = v\n" % i for i in range(80000))
    body += b"#" * (1024 * 1024 - len(body) - 1) + b"\n"
    assert len(body) == 1024 * 1024
    standin.set_config(body)
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == body


# ---------------------------------------------------------------------------------------------
# Transport failures
# ---------------------------------------------------------------------------------------------

def test_stalled_body_fails_within_the_deadline(standin, run_fetch):
    standin.set_default({"stall_after": 10})
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=1))
    assert_failed(res, r"irsa-svc|time|stall|slow|speed")
    assert res.elapsed < 3 + GRACE
    assert standin.irsa_count >= 1


def test_stalled_body_once_then_success(standin, run_fetch):
    standin.enqueue({"stall_after": 10})
    res = run_fetch(*fetch_args(standin, deadline=30, timeout=2))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.irsa_count == 2


def test_slow_response_beyond_timeout_is_retried(standin, run_fetch):
    standin.enqueue({"delay": 10})
    res = run_fetch(*fetch_args(standin, deadline=30, timeout=1))
    assert res.rc == 0, failed(res)
    assert standin.irsa_count == 2
    assert res.elapsed < 10, "the per-attempt timeout must cut the slow attempt"
    assert re.search(r"time", res.stderr, re.IGNORECASE), failed(res)


def test_truncated_body_once_then_success(standin, run_fetch):
    standin.enqueue({"truncate": True})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.irsa_count == 2


def test_truncated_body_always_fails(standin, run_fetch):
    # The prefix served is itself a plausible config: only the length tells it is cut.
    standin.set_default({"truncate": True})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, "irsa-svc")
    assert standin.irsa_count >= 2
    assert res.elapsed < 3 + GRACE


def test_connection_closed_without_response_is_retried(standin, run_fetch):
    standin.enqueue({"close": True})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert standin.irsa_count == 2


def test_slow_tls_handshake_fails_within_the_deadline(standin, run_fetch):
    standin.tls_handshake_delay = 30
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=1))
    assert_failed(res, r"irsa-svc")
    assert res.elapsed < 3 + GRACE
    assert standin.irsa_count == 0


def test_slightly_slow_tls_handshake_succeeds(standin, run_fetch):
    standin.tls_handshake_delay = 0.5
    res = run_fetch(*fetch_args(standin, timeout=5))
    assert res.rc == 0, failed(res)
    assert standin.irsa_count == 1


# ---------------------------------------------------------------------------------------------
# TLS verification
# ---------------------------------------------------------------------------------------------

CERT_PROBLEM = r"certificate|issuer|SSL"


def test_no_ca_file_fails_on_the_certificate(standin, run_fetch):
    res = run_fetch(*fetch_args(standin, ca_file=None, deadline=3))
    assert_failed(res, CERT_PROBLEM)
    assert standin.irsa_count == 0
    assert res.elapsed < 3 + GRACE


def test_wrong_ca_fails_on_the_certificate(standin, run_fetch):
    res = run_fetch(*fetch_args(standin, ca_file=standin.other_ca_file, deadline=3))
    assert_failed(res, CERT_PROBLEM)
    assert standin.irsa_count == 0


def test_untrusted_server_certificate_fails(standin, run_fetch):
    standin.set_cert("untrusted")
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, CERT_PROBLEM)
    assert standin.irsa_count == 0


def test_domino_irsa_ssl_cert_environment_variable(standin, run_fetch):
    res = run_fetch(*fetch_args(standin, ca_file=None),
                    env={"DOMINO_IRSA_SSL_CERT": standin.ca_file})
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()


def test_ca_file_flag_beats_environment(standin, run_fetch):
    good = run_fetch(*fetch_args(standin), env={"DOMINO_IRSA_SSL_CERT": standin.other_ca_file})
    assert good.rc == 0, failed(good)
    bad = run_fetch(*fetch_args(standin, ca_file=standin.other_ca_file, deadline=2),
                    env={"DOMINO_IRSA_SSL_CERT": standin.ca_file})
    assert_failed(bad, CERT_PROBLEM)


def test_certificate_for_another_host_fails_naming_the_mismatch(standin, run_fetch):
    standin.set_cert("other-host")
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, r"host ?name|subject|match")
    assert standin.irsa_count == 0


@pytest.mark.parametrize("cert", ["untrusted", "other-host"])
def test_insecure_succeeds_and_warns(standin, run_fetch, cert):
    standin.set_cert(cert)
    res = run_fetch(*fetch_args(standin, ca_file=None), "--insecure")
    assert res.rc == 0, failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()
    warn = [line for line in res.stderr.splitlines() if re.search(r"insecure|verif", line, re.I)]
    assert warn, "--insecure must warn" + failed(res)
    assert any(re.search(r"warn", line, re.I) for line in warn), failed(res)


# ---------------------------------------------------------------------------------------------
# Token endpoint
# ---------------------------------------------------------------------------------------------

def test_token_endpoint_500_fails_naming_it(standin, run_fetch):
    standin.set_token_default({"status": 500, "body": "proxy broken\n"})
    res = run_fetch(*fetch_args(standin, deadline=3))
    assert_failed(res, r"token", "500")
    assert standin.irsa_count == 0
    assert res.elapsed < 3 + GRACE


def test_token_endpoint_down_fails_naming_it(standin, run_fetch):
    standin.set_token_down(True)
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=1))
    assert_failed(res, r"token", r"connect|refused")
    assert standin.irsa_count == 0
    assert res.elapsed < 3 + GRACE


def test_token_endpoint_slow_fails_within_the_deadline(standin, run_fetch):
    standin.set_token_default({"delay": 30})
    res = run_fetch(*fetch_args(standin, deadline=3, timeout=1))
    assert_failed(res, r"token")
    assert res.elapsed < 3 + GRACE


def test_token_endpoint_500_once_is_retried(standin, run_fetch):
    standin.enqueue_token({"status": 500})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert standin.token_count == 2 and standin.irsa_count == 1


def test_token_with_trailing_newline_is_trimmed(standin, run_fetch):
    # Some proxies end the token with a newline; it is not part of the token.
    standin.tokens.issue("tok-nl-0123456789abcdef")  # make irsa-svc accept it
    standin.enqueue_token({"body": "tok-nl-0123456789abcdef\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    assert standin.requests()[0]["headers"]["authorization"] == "Bearer tok-nl-0123456789abcdef"


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------

LEVELS = {"trace", "debug", "info", "warning", "warn", "error", "critical"}


def _json_lines(stderr: str) -> list:
    objs = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
        assert isinstance(obj, dict), line
        assert obj.get("level") in LEVELS, line
        assert isinstance(obj.get("message"), str) and obj["message"], line
        assert "time" in obj, line
        objs.append(obj)
    return objs


def test_json_log_format_success_with_retry(standin, run_fetch):
    standin.enqueue({"status": 500, "body": "hiccup\n"})
    res = run_fetch(*fetch_args(standin), "--log-format", "json", "--log-level", "debug")
    assert res.rc == 0, failed(res)
    objs = _json_lines(res.stderr)
    assert any("500" in o["message"] for o in objs), failed(res)
    assert res.stdout == EXAMPLE_CONFIG.encode()


def test_json_log_format_failure(standin, run_fetch):
    standin.set_default({"status": 403, "body": "denied \"quoted\" \\ here\n"})
    res = run_fetch(*fetch_args(standin), "--log-format", "json")
    assert_failed(res)
    objs = _json_lines(res.stderr)
    errors = [o for o in objs if o["level"] in ("error", "critical")]
    assert errors and any("403" in o["message"] for o in errors), failed(res)
    assert any('denied "quoted" \\ here' in o["message"] for o in objs), failed(res)


def test_text_log_failure_is_one_line_naming_the_reason(standin, run_fetch):
    standin.set_default({"status": 403, "body": "denied by policy\n"})
    res = run_fetch(*fetch_args(standin))
    assert_failed(res)
    lines = [line for line in res.stderr.splitlines() if "403" in line]
    assert lines and any("denied by policy" in line for line in lines), failed(res)


def _secrets_in(text: str, tokens: list) -> list:
    leaked = []
    for t in tokens:
        secret_part = t.rsplit("-", 1)[-1]
        if t in text or secret_part in text or secret_part[:12] in text:
            leaked.append(t)
    return leaked


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_token_never_logged_even_at_trace(standin, run_fetch, tmp_path, fmt):
    standin.enqueue({"status": 401, "body": "expired\n"},
                    {"status": 500, "body": "oops\n"},
                    {"body": "<html>portal</html>\n"})
    ok = run_fetch(*fetch_args(standin), "--log-level", "trace", "--log-format", fmt)
    assert ok.rc == 0, failed(ok)
    standin.set_default({"reject_token": True})
    bad = run_fetch(*fetch_args(standin), "--log-level", "trace", "--log-format", fmt,
                    "-o", tmp_path / "config")
    assert_failed(bad)
    tokens = standin.issued_tokens
    assert len(tokens) >= 6
    for res in (ok, bad):
        assert not _secrets_in(res.stderr, tokens), "token in the log" + failed(res)
    assert not _secrets_in(ok.stdout.decode(), tokens)


def test_config_content_not_logged_at_info(standin, run_fetch):
    standin.set_config(BODY)
    standin.enqueue({"status": 503, "body": "busy\n"})
    res = run_fetch(*fetch_args(standin))
    assert res.rc == 0, failed(res)
    for secret_line in ("arn:aws:iam::111111111111", "arn:aws:iam::222222222222",
                        "web_identity_token_file"):
        assert secret_line not in res.stderr, failed(res)


# ---------------------------------------------------------------------------------------------
# Many clients at once against a server that sheds load
# ---------------------------------------------------------------------------------------------

def test_concurrent_clients_against_a_shedding_server(standin, run_fetch):
    clients = 24
    standin.set_default({"capacity": 4, "service_time": 0.1, "shed_status": 503,
                         "retry_after": "1"})
    results = [None] * clients

    def one(i):
        results[i] = run_fetch(*fetch_args(standin, run_id=f"run-{i}", deadline=40), timeout=60)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in results:
        assert res.rc == 0, failed(res)
        assert res.stdout == EXAMPLE_CONFIG.encode()
    assert standin.recorder.count("served") == clients
    assert standin.recorder.count("max_inflight") <= 4
    # Paced by Retry-After, each client needs only a few attempts (not a retry storm).
    assert standin.irsa_count <= clients * 6, standin.recorder.counters()
