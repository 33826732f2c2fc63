"""The IO layer's pure parts: URLs, error wording, up-front kubeconfig checks."""
from __future__ import annotations

import pytest

from k8sctl import kube
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.errors import UsageError


def test_resource_paths():
    assert kube.SECRET.path("ns", "a b") == "/api/v1/namespaces/ns/secrets/a%20b"
    assert kube.CRD.path(name="x") == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"
    assert kube.SERVICEACCOUNT.path("ns", "sa", "token") == "/api/v1/namespaces/ns/serviceaccounts/sa/token"
    assert clientconfig_api.resource("v1alpha1").path("ns") == "/apis/config.k8ssandra.io/v1alpha1/namespaces/ns/clientconfigs"
    with pytest.raises(ValueError, match="namespaced"):
        kube.SECRET.path()


@pytest.mark.parametrize("raw, cause", [
    ("SSLError\nMaxRetryError(... [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed ...)", "TLS certificate verify failed"),
    ("NewConnectionError('<...>: Failed to establish a new connection: [Errno 111] Connection refused')", "connection refused"),
    ("ConnectTimeoutError(..., 'Connection to x timed out. (connect timeout=5)')", "connection timed out"),
    ("ReadTimeoutError(\"HTTPSConnectionPool(host='x', port=1): Read timed out. (read timeout=1.0)\")",
     "no answer in time"),
    ("SSLError(SSLCertVerificationError(1, \"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname "
     "mismatch, certificate is not valid for 'x'. (_ssl.c:1006)\"))", "TLS certificate verify failed: the server's "
     "certificate is not valid for the host name"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch, certificate is not valid for "
     "'127.0.0.2'.", "TLS certificate verify failed: the server's certificate is not valid for the IP address"),
])
def test_failure_causes_are_named(raw, cause):
    assert kube._describe(raw).startswith(cause)


def test_missing_exec_plugin_is_a_usage_error():
    config = {"contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
              "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                          "command": "no-such-plugin-xyz"}}}]}
    with pytest.raises(UsageError, match="exec plugin 'no-such-plugin-xyz'"):
        kube.KubeClient(config, "c")


def test_request_stats_count_writes():
    stats = kube.RequestStats()
    for m in ("GET", "PATCH", "POST", "GET"):
        stats.record(m)
    assert (stats.requests, stats.writes, stats.by_method) == (4, 2, {"GET": 2, "PATCH": 1, "POST": 1})


def test_first_client_import_from_many_threads():
    """Regression: parallel first use raised _DeadlockError (seen in `sandbox up --k8ssandra`)."""
    import subprocess
    import sys

    code = ("import threading\nfrom k8sctl import kube\nerrors = []\n"
            "def go():\n    try:\n        kube._import_client()\n    except Exception as e:\n        errors.append(repr(e))\n"
            "ts = [threading.Thread(target=go) for _ in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
            "print('ERRORS', errors)")
    for _ in range(5):  # a fresh interpreter each time: the race is on the first import
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert "ERRORS []" in out


class _Scripted:
    """A loopback HTTP server answering from a script: each entry is a status code, or "reset" to
    drop the connection without an answer. Unit-level: retries are pure client behaviour."""

    def __init__(self, script):
        import http.server
        import socket
        import threading

        self.script, self.seen = list(script), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                outer.seen.append(self.command)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                step = outer.script.pop(0) if outer.script else 200
                if step == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                body = b'{"kind": "Status", "message": "scripted"}'
                self.send_response(step)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if step in (429, 503):
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self, **kw) -> kube.KubeClient:
        doc = {"clusters": [{"name": "c", "cluster": {"server": self.url}}],
               "users": [{"name": "u", "user": {"token": "scripted-token-value"}}],
               "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
        return kube.KubeClient(doc, "c", stats=kube.RequestStats(), **kw)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def scripted():
    servers = []

    def make(*script):
        servers.append(_Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_idempotent_requests_survive_a_reset_and_5xx(scripted):
    server = scripted("reset", 503, 502, 200)
    client = server.client()
    assert client.request("GET", "/api") == {"kind": "Status", "message": "scripted"}
    assert server.seen == ["GET"] * 4
    server = scripted(500, 200)  # a plain 500 is an answer, not a passing fault
    with pytest.raises(kube.ApiError, match="500"):
        server.client().request("GET", "/api")
    assert server.seen == ["GET"]
    server = scripted("reset", 200)
    client = server.client()
    client.apply(kube.SECRET, {"metadata": {"name": "s", "namespace": "n"}})
    assert server.seen == ["PATCH", "PATCH"]


def test_non_idempotent_requests_are_not_retried(scripted):
    server = scripted(503)
    with pytest.raises(kube.ApiError, match="503"):
        server.client().request("POST", "/api", {"a": 1})
    server = scripted("reset")
    with pytest.raises(kube.Unreachable, match="connection reset"):
        server.client().request("POST", "/api", {"a": 1})
    assert server.seen == ["POST"]


def test_retries_stop_at_the_deadline(scripted):
    import time

    server = scripted(*([503] * 1000))
    with pytest.raises(kube.ApiError, match="503"):
        server.client(deadline=time.monotonic() + 0.5).request("GET", "/api")
    # Backoff 0.1, 0.2, 0.4 s fits 0.5 s at most three times; the 10 s budget alone would allow nine.
    assert 1 < len(server.seen) <= 4


def test_preconnected_never_fails_and_closes_once():
    """An optimisation only: a CA that cannot be loaded, or a server nobody listens on, are met
    again by the request that needs the connection, not here."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    for ca in (b"not a certificate", b""):
        ahead = kube.Preconnected(f"https://127.0.0.1:{port}", ca, 2, timeout=(0.5, 0.5))
        ahead.close()
        ahead.close()
    assert not any(key[0] == f"https://127.0.0.1:{port}" for key in kube._POOLS._pools)


def test_tls_key_separates_what_a_handshake_proves_and_keeps_no_key_material():
    ca, cert, key = b"-----CA-----\n", b"-----CERT-----", b"-----PRIVATE KEY-----"
    plain = kube._tls_key("https://a:6443", ca, None, None, None, False)
    assert plain == kube._tls_key("https://a:6443", ca.strip(), None, None, None, False)  # same CA
    assert plain != kube._tls_key("https://a:6443", ca, cert, key, None, False)  # a client certificate
    assert plain != kube._tls_key("https://a:6443", ca, None, None, None, True)  # verification off
    assert plain != kube._tls_key("https://a:6443", ca, None, None, "other", False)  # another server name
    assert plain != kube._tls_key("https://b:6443", ca, None, None, None, False)
    assert not any(part.decode() in repr(kube._tls_key("https://a:6443", ca, cert, key, None, False)) for part in (cert, key))


def test_preconnected_says_when_every_connection_timed_out_and_only_then():
    """A server that accepts and never answers: the connections opened ahead time out once, and
    say so (create-clientconfig takes it as its verification's answer rather than waiting again).
    Nobody listening: refused at once, left to the request."""
    from tests.sockets import closed_port, silent_server

    with silent_server() as hole:
        ahead = kube.Preconnected(hole.url(), b"", 2, timeout=(0.3, 0.3))
        assert ahead.timed_out == "connection timed out"
        ahead.close()
        assert hole.attempts() == 2
    port = closed_port()
    ahead = kube.Preconnected(f"https://127.0.0.1:{port}", b"", 2, timeout=(0.3, 0.3))
    assert ahead.timed_out is None
    ahead.close()


def test_outcome_unknown_only_where_the_answer_was_lost_or_the_server_failed():
    lost = [kube.Unreachable("x", kube.READ_TIMEOUT_CAUSE), kube.Unreachable("x", kube.RESET_CAUSE),
            kube.ApiError("x", 500), kube.ApiError("x", 503)]
    known = [kube.Unreachable("x", "connection refused"), kube.Unreachable("x", "connection timed out"),
             kube.Unreachable("x", "TLS certificate verify failed: the kubeconfig's CA does not match the server"),
             kube.ApiError("x", 409), kube.ApiError("x", 422), kube.NotFound("x", 404), UsageError("x")]
    assert [kube.outcome_unknown(e) for e in lost] == [True] * len(lost)
    assert [kube.outcome_unknown(e) for e in known] == [False] * len(known)
