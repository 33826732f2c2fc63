"""The IO layer's pure parts: URLs, error wording, up-front kubeconfig checks."""
from __future__ import annotations

import pytest

from k8sctl import kube
from k8sctl.errors import UsageError


def test_resource_paths():
    assert kube.SECRET.path("ns", "a b") == "/api/v1/namespaces/ns/secrets/a%20b"
    assert kube.CRD.path(name="x") == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"
    assert kube.SERVICEACCOUNT.path("ns", "sa", "token") == "/api/v1/namespaces/ns/serviceaccounts/sa/token"
    assert kube.clientconfig_resource("v1alpha1").path("ns") == "/apis/config.k8ssandra.io/v1alpha1/namespaces/ns/clientconfigs"
    with pytest.raises(ValueError, match="namespaced"):
        kube.SECRET.path()


@pytest.mark.parametrize("raw, cause", [
    ("SSLError\nMaxRetryError(... [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed ...)", "TLS certificate verify failed"),
    ("NewConnectionError('<...>: Failed to establish a new connection: [Errno 111] Connection refused')", "connection refused"),
    ("ConnectTimeoutError(..., 'Connection to x timed out. (connect timeout=5)')", "connection timed out"),
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
