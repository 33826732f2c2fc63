"""Faults on a real network: a sandbox of 4 clusters whose API servers sit behind toxiproxy
(`up --proxy`), cluster 0 the control plane, 1..3 data planes. Faults are added and removed
per cluster through toxiproxy's API (tests/integration/faults.py); the assertions read the
clusters past the proxies (`direct_admin`), so a fault never hides what was written.

The test that stops a cluster's API server during reconcile (`sandbox stop-cluster`) is
test_reconcile.py::test_unreachable_cluster_names_its_context_and_others_succeed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from k8sctl import clientconfigs, kube
from k8sctl import kubeconfig as kc
from k8sctl import reconcile as rec
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cache import ClientCache
from k8sctl.errors import ClusterError
from k8sctl_sandbox import cluster, crds_and_identity, toxiproxy
from tests import leakguard

from .conftest import guarded
from .faults import Faults
from .test_reconcile import demo_cluster

NS = crds_and_identity.OPERATOR_NAMESPACE
CC = clientconfig_api.resource("v1beta1")


@pytest.fixture(scope="module")
def net(tmp_path_factory, control_plane_binaries):
    directory = tmp_path_factory.mktemp("net-sandbox")
    state = cluster.up(directory, 4, control_plane_binaries, prefix="net", proxy_binary=toxiproxy.ensure(), rtt_ms=0)
    try:
        crds_and_identity.install_all(state)
        with guarded(state):
            yield state
    finally:
        cluster.down(directory)


def direct_admin(c: cluster.ClusterInfo) -> kube.KubeClient:
    """An admin client past the proxy: what a test reads is never changed by a fault."""
    doc = kc.read_file(Path(c.kubeconfig))
    doc["clusters"][0]["cluster"]["server"] = c.direct_server
    return kube.KubeClient(doc, c.context)


@pytest.fixture(scope="module")
def admins(net):
    clients = [direct_admin(c) for c in net.clusters]
    yield clients
    for c in clients:
        c.close()


def options(state, src: int, dest: int = 0, **kw) -> clientconfigs.Completed:
    c = state.clusters[src]
    opts = clientconfigs.CreateOptions(src_kubeconfig=Path(c.kubeconfig),
                                       dest_kubeconfig=[Path(state.clusters[dest].kubeconfig)],
                                       in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig), **kw)
    done = clientconfigs.complete(opts, {})
    clientconfigs.validate(done)
    return done


def unregister(admins, name: str) -> None:
    for resource, obj in ((CC, name), (kube.SECRET, f"{name}-config")):
        try:
            admins[0].delete(resource, obj, NS)
        except kube.NotFound:
            pass


class ResetOnce:
    """Counts connection failures per proxied server and removes that cluster's reset toxic at the
    first one: the first request to each cluster (and any sent at the same time) is reset, the
    ones after it are not."""

    def __init__(self, state, faults: Faults, monkeypatch):
        self.by_server = {c.server: c.context for c in state.clusters}
        self.faults = faults
        self.resets: dict[str, int] = {}
        self.sends: dict[str, int] = {}
        self._lock = threading.Lock()
        real = kube._InlineTransport.send
        hook = self

        def send(transport, method, url, headers, body, timeout):
            context = hook.by_server.get(transport.host)
            with hook._lock:
                if context:
                    hook.sends[context] = hook.sends.get(context, 0) + 1
            try:
                return real(transport, method, url, headers, body, timeout)
            except Exception:
                with hook._lock:
                    if context and context not in hook.resets:
                        hook.faults.remove(context, "reset-upstream")
                    if context:
                        hook.resets[context] = hook.resets.get(context, 0) + 1
                raise

        monkeypatch.setattr(kube._InlineTransport, "send", send)

    def arm(self, contexts) -> None:
        for ctx in contexts:
            self.faults.reset_peer(ctx)


def test_a_reset_on_the_first_request_to_each_cluster_is_retried(net, admins, monkeypatch):
    c0, c1, c2 = (net.clusters[i].context for i in (0, 1, 2))
    try:
        with Faults(net) as faults:
            hook = ResetOnce(net, faults, monkeypatch)
            # create-clientconfig: destination and source both reset once.
            hook.arm([c0, c1])
            result = clientconfigs.run(options(net, 1))
            # At least once each: requests sent at once (the source's two first GETs) are all reset.
            print(f"create-clientconfig: connection resets per cluster {hook.resets}")
            assert set(hook.resets) == {c0, c1} and all(n >= 1 for n in hook.resets.values()), hook.resets
            assert [o["action"] for o in result.as_dict()["registrations"][0]["objects"]] == ["created", "created"]
            assert admins[0].get(CC, c1, NS)["spec"]["contextName"] == c1

            clientconfigs.run(options(net, 2))  # no fault: the second data plane
            doc = demo_cluster("reset", sizes=(1, 1), contexts=(c1, c2))
            admins[0].apply(k8c.RESOURCE, doc, force=True)
            # reconcile: the control plane and both data planes reset once.
            hook.resets.clear()
            hook.arm([c0, c1, c2])
            result = _reconcile(net, "reset", gate=False)
            print(f"reconcile: connection resets per cluster {hook.resets}")
            assert set(hook.resets) == {c0, c1, c2}, hook.resets
            assert [(r.name, r.action) for r in result.datacenters] == [("reset-dc1", "created"),
                                                                        ("reset-dc2", "created")]
            assert admins[2].get(cdc.RESOURCE, "reset-dc2", NS)["spec"]["clusterName"]
    finally:
        for i, name in ((1, "reset-dc1"), (2, "reset-dc2")):
            try:
                admins[i].delete(cdc.RESOURCE, name, NS)
            except kube.NotFound:
                pass
        try:
            admins[0].delete(k8c.RESOURCE, "reset", NS)
        except kube.NotFound:
            pass
        unregister(admins, c1)
        unregister(admins, c2)


def _reconcile(state, name: str, **kw) -> rec.ReconcileResult:
    local = kube.KubeClient(kc.read_file(Path(state.clusters[0].kubeconfig)), state.clusters[0].context)
    cache = ClientCache.from_clientconfigs(local, NS)
    try:
        return rec.run(rec.ReconcileOptions(name=name, namespace=NS, **kw), cache)
    finally:
        cache.close()
        local.close()


def test_a_destination_that_stops_answering_fails_within_the_request_timeout_and_writes_nothing(net, admins):
    c0, c1 = net.clusters[0], net.clusters[1]
    argv = [sys.executable, "-m", "k8sctl", "create-clientconfig", "--src-kubeconfig", c1.kubeconfig,
            "--dest-kubeconfig", c0.kubeconfig, "--in-cluster-kubeconfig", c1.in_cluster_kubeconfig,
            "--request-timeout", "2s", "-o", "json"]
    with Faults(net) as faults:
        faults.timeout(c0.context)  # every byte to the control plane is dropped; connections stay open
        t0 = time.monotonic()
        # Without --request-timeout each request would wait 30 s: the run must end long before.
        r = subprocess.run(argv, capture_output=True, text=True, timeout=25)
        elapsed = time.monotonic() - t0
    leakguard.check(r.stdout + r.stderr)
    print(f"failed after {elapsed:.1f}s: {r.stderr.strip()}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert c0.context in lines[0] and "timed out" in lines[0], lines[0]
    assert f"nothing was written to the destination {c0.context}" in lines[0], lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert admins[0].get_or_none(CC, c1.context, NS) is None
    assert admins[0].get_or_none(kube.SECRET, f"{c1.context}-config", NS) is None


def test_two_seconds_of_latency_on_one_cluster_slow_only_that_cluster(net, admins):
    contexts = [net.clusters[i].context for i in (1, 2, 3)]
    try:
        for i in (1, 2, 3):
            clientconfigs.run(options(net, i))
        admins[0].apply(k8c.RESOURCE, demo_cluster("slow", sizes=(1, 1, 1), contexts=contexts), force=True)
        assert [r.action for r in _reconcile(net, "slow", gate=False).datacenters] == ["created"] * 3
        with Faults(net) as faults:
            faults.latency(contexts[2], 2000)  # on every answer of cluster 3
            t0 = time.monotonic()
            result = _reconcile(net, "slow", gate=False)
            elapsed = time.monotonic() - t0
        timings = result.as_dict()["secondsByContext"]
        print(f"no-op reconcile with 2 s more on {contexts[2]}: {elapsed:.2f}s in all; per cluster {timings}")
        assert [r.action for r in result.datacenters] == ["unchanged"] * 3
        assert timings[contexts[2]] >= 2.0
        # The others are not slowed: each is done before the added latency has passed once.
        assert timings[contexts[0]] < 2.0 and timings[contexts[1]] < 2.0, timings
    finally:
        for i, ctx in zip((1, 2, 3), contexts):
            try:
                admins[i].delete(cdc.RESOURCE, f"slow-dc{i}", NS)
            except kube.NotFound:
                pass
            unregister(admins, ctx)
        try:
            admins[0].delete(k8c.RESOURCE, "slow", NS)
        except kube.NotFound:
            pass


def test_destination_gone_between_the_secret_and_the_clientconfig_a_rerun_finishes(net, admins):
    c0, c1 = net.clusters[0], net.clusters[1]
    name = c1.context
    try:
        with Faults(net) as faults:
            def progress(message: str) -> None:
                if message.startswith("applying ClientConfig"):
                    # The Secret is written; the control plane leaves the network now.
                    faults.disconnect(c0.context)

            with pytest.raises(ClusterError) as failure:
                clientconfigs.run(options(net, 1), progress=progress)
        message = str(failure.value)
        print(message)
        assert c0.context in message
        assert (f"Secret {NS}/{name}-config was written but ClientConfig {NS}/{name} was not" in message
                and "run the same command again to finish (no cleanup needed)" in message), message
        # Exactly what the message says is left: the Secret, no ClientConfig.
        assert admins[0].get_or_none(kube.SECRET, f"{name}-config", NS) is not None
        assert admins[0].get_or_none(CC, name, NS) is None
        # The same command again, the network back: it finishes the job.
        again = clientconfigs.run(options(net, 1)).as_dict()["registrations"][0]
        assert [o["action"] for o in again["objects"]] == ["unchanged", "created"], again["objects"]
        assert admins[0].get(CC, name, NS)["spec"]["kubeConfigSecret"]["name"] == f"{name}-config"
        third = clientconfigs.run(options(net, 1)).as_dict()
        assert third["changed"] is False
    finally:
        unregister(admins, name)


def test_a_silent_cluster_costs_one_request_timeout_and_the_others_are_reconciled(net, admins):
    """`reconcile --request-timeout 1s` with one data plane that accepts connections and never
    answers (toxiproxy's timeout toxic: no byte gets through, the connection stays open). Every
    request is bounded by the flag, not by the defaults (5 s to connect, 30 s to answer), and once
    the cluster has not answered, the rest of the run does not ask it again: its four datacenters
    cost one timeout, not one each."""
    c0 = net.clusters[0]
    contexts = [net.clusters[i].context for i in (1, 2, 3)]
    silent = contexts[1]
    name = "silent"
    placement = (contexts[0], silent, silent, silent, silent, contexts[2])
    argv = [sys.executable, "-m", "k8sctl", "-vv", "reconcile", name, "--kubeconfig", c0.kubeconfig, "--no-gate",
            "--request-timeout", "1s", "-o", "json"]
    try:
        for i in (1, 2, 3):
            clientconfigs.run(options(net, i))
        admins[0].apply(k8c.RESOURCE, demo_cluster(name, sizes=(1,) * len(placement), contexts=placement),
                        force=True)
        with Faults(net) as faults:
            faults.timeout(silent)
            t0 = time.monotonic()
            r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            elapsed = time.monotonic() - t0
        leakguard.check(r.stdout + r.stderr)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        report = json.loads(r.stdout)
        rows = {d["name"]: d for d in report["datacenters"]}
        # -vv: a line per request sent (at most its three LISTs, sent at once).
        asked = [line for line in r.stderr.splitlines() if f"(context {silent}" in line]
        timings = report["secondsByContext"]
        print(f"reconcile with {silent} silent: {elapsed:.1f}s in all, per cluster {timings}; "
              f"requests to {silent}: {len(asked)}\n" + "\n".join(asked))
        assert [d["action"] for d in report["datacenters"]] == ["created", "error", "error", "error", "error",
                                                                 "created"], [d.get("error") for d in rows.values()]
        for i in (2, 3, 4, 5):
            error = rows[f"{name}-dc{i}"]["error"]
            assert silent in error and "timed out" in error and "nothing was written to this cluster" in error, error
        assert admins[1].get(cdc.RESOURCE, f"{name}-dc1", NS)["spec"]["clusterName"]
        assert admins[3].get(cdc.RESOURCE, f"{name}-dc6", NS)["spec"]["clusterName"]
        for i in (2, 3, 4, 5):
            assert admins[2].get_or_none(cdc.RESOURCE, f"{name}-dc{i}", NS) is None
        # Not once per datacenter: none when the connections opened ahead all timed out (what
        # happens here), else the LISTs by label that the first datacenter needs, and no more.
        assert len(asked) <= 3, asked
        # Bounded by the flag, not by the defaults: the silent cluster's own work is one 1 s timeout
        # (a default connect timeout alone is 5 s); the whole run, a connect timeout while its
        # connections are opened ahead, that one, and the other clusters' work (with the defaults
        # it was 5 s per request: 35 s).
        assert timings[silent] < 4.0, timings
        assert elapsed < 15.0, elapsed
    finally:
        for i, dc in ((1, 1), (3, 6)):
            try:
                admins[i].delete(cdc.RESOURCE, f"{name}-dc{dc}", NS)
            except kube.NotFound:
                pass
        try:
            admins[0].delete(k8c.RESOURCE, name, NS)
        except kube.NotFound:
            pass
        for ctx in contexts:
            unregister(admins, ctx)
