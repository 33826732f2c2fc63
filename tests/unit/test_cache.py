"""ClientCache's clients for a run, against real loopback sockets: the control plane's request
timeout, and a cluster that proved unreachable is not waited for again."""
from __future__ import annotations

import time

import pytest

from k8sctl import cache as cache_module
from k8sctl import kube
from k8sctl.cache import ClientCache, RunClient
from tests.sockets import closed_port, silent_server

from .test_kube import scripted  # noqa: F401 - the fixture


def _doc(server: str) -> dict:
    return {"clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "run-client-token-value"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}


@pytest.fixture
def silent():
    """A server that accepts connections (the kernel's backlog does) and never answers: every
    request ends in a read timeout, as with an API server that completed TLS and hangs."""
    with silent_server() as server:
        yield server.url("http")


def test_after_a_timeout_every_request_fails_at_once_with_the_same_cause(silent):
    stats = kube.RequestStats()
    client = RunClient(_doc(silent), "c", timeout=(0.3, 0.3), stats=stats)
    t0 = time.monotonic()
    with pytest.raises(kube.Unreachable) as first:
        client.list(kube.SECRET, "ns", label_selector="a=b")
    assert time.monotonic() - t0 >= 0.3  # the request timeout, not kube.DEFAULT_TIMEOUT's 30 s
    assert client.unreachable is not None
    t0 = time.monotonic()
    later = []
    for call in (lambda: client.get(kube.SECRET, "s", "ns"), lambda: client.list(kube.CONFIGMAP, "ns"),
                 lambda: client.apply(kube.SECRET, {"metadata": {"name": "s", "namespace": "ns"}}),
                 lambda: client.create(kube.SECRET, {"metadata": {"name": "s"}}, "ns")):
        with pytest.raises(kube.Unreachable) as e:
            call()
        later.append(e.value)
    assert time.monotonic() - t0 < 0.2  # not one timeout each
    assert stats.requests == 1  # the failed one; the others were never sent
    for e in (first.value, *later):
        assert e.cause == first.value.cause and "timed out" in e.cause
        assert "context 'c'" in str(e) and str(e).endswith("; nothing was written to this cluster"), str(e)
    client.preconnect(3)  # a no-op now, at once
    client.close()


def test_a_write_that_timed_out_may_have_landed_the_message_claims_nothing(silent):
    client = RunClient(_doc(silent), "c", timeout=(0.3, 0.3), stats=kube.RequestStats())
    for call in (lambda: client.create(kube.SECRET, {"metadata": {"name": "s"}}, "ns"),
                 lambda: client.get(kube.SECRET, "s", "ns")):
        with pytest.raises(kube.Unreachable) as e:
            call()
        assert "timed out" in e.value.cause and "nothing was written" not in str(e.value)
    client.close()


def test_a_dry_run_is_not_a_write(silent):
    client = RunClient(_doc(silent), "c", timeout=(0.3, 0.3), stats=kube.RequestStats())
    with pytest.raises(kube.Unreachable) as e:
        client.create(kube.SECRET, {"metadata": {"name": "s"}}, "ns", dry_run=True)
    assert str(e.value).endswith("; nothing was written to this cluster")
    client.close()


def test_a_reset_of_a_request_never_retried_is_not_proof(scripted):  # noqa: F811
    server = scripted("reset", 200)
    client = RunClient(_doc(server.url), "c", stats=kube.RequestStats())
    with pytest.raises(kube.Unreachable, match="connection reset"):
        client.request("POST", "/api", {"a": 1})
    assert client.unreachable is None
    assert client.request("GET", "/api") == {"kind": "Status", "message": "scripted"}
    client.close()


def test_refused_is_proof_at_once():
    stats = kube.RequestStats()
    client = RunClient(_doc(f"http://127.0.0.1:{closed_port()}"), "c", stats=stats)
    for _ in range(3):
        with pytest.raises(kube.Unreachable, match="connection refused"):
            client.get(kube.SECRET, "s", "ns")
    assert stats.requests == 1
    client.close()


def test_clients_get_the_control_planes_timeout_and_deadline(monkeypatch):
    local = kube.KubeClient(_doc("https://127.0.0.1:1"), "c", timeout=(1.0, 1.0), deadline=123.0)
    monkeypatch.setattr(cache_module.api, "read_stored_kubeconfig", lambda client, cc, ns: _doc("https://127.0.0.1:2"))
    cc = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"contextName": "c"}}
    cache = ClientCache(local, [cc], "ns")
    remote = cache.remote("c")
    assert isinstance(remote, RunClient) and remote.context == "c"
    assert remote.timeout == (1.0, 1.0) and remote.deadline == 123.0
    cache.close()
    local.close()
