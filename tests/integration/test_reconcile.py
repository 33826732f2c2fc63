"""reconcile against real API servers: ClientConfigs in cluster 0, datacenters in clusters 1..3."""
from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import clientconfigs, kube
from k8sctl.cli import app
from k8sctl.datacenters import HASH_ANNOTATION, build_datacenters
from k8sctl.sandbox import cluster, k8ssandra
from k8sctl.sandbox.tools import ready_status

from .conftest import admin_client

NS = k8ssandra.OPERATOR_NAMESPACE
FIXTURES = Path(__file__).parent.parent / "fixtures"


def register(state: cluster.SandboxState, indexes: list[int], dest: int = 0) -> None:
    """What create-clientconfig does, for data planes `indexes` into cluster `dest`."""
    for i in indexes:
        c = state.clusters[i]
        opts = clientconfigs.CreateOptions(
            src_kubeconfig=Path(c.kubeconfig), dest_kubeconfig=[Path(state.clusters[dest].kubeconfig)],
            in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig))
        done = clientconfigs.complete(opts, {})
        clientconfigs.validate(done)
        clientconfigs.run(done)


@pytest.fixture(scope="module")
def registered(sandbox):
    register(sandbox, [1, 2, 3])
    return sandbox


def demo_cluster(prefix: str, sizes=(3, 3, 3), contexts=("kind-k8ssandra-1", "kind-k8ssandra-2", "kind-k8ssandra-3")) -> dict:
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"] = {"name": prefix, "namespace": NS}
    doc["spec"]["cassandra"]["datacenters"] = [
        {"metadata": {"name": f"{prefix}-dc{i + 1}"}, "k8sContext": ctx, "size": size}
        for i, (ctx, size) in enumerate(zip(contexts, sizes))]
    return doc


def apply_cluster(admins, doc: dict) -> None:
    admins[0].apply(kube.K8SSANDRA_CLUSTER, doc, force=True)


def mark_ready(admins, index: int, name: str) -> None:
    dc = admins[index].get(kube.CASSANDRA_DATACENTER, name, NS)
    admins[index].request("PATCH", kube.CASSANDRA_DATACENTER.path(NS, name, "status"), {"status": ready_status(dc)},
                          content_type="application/merge-patch+json")


def reconcile(sandbox, *args: str, control: int = 0):
    return CliRunner().invoke(app, ["reconcile", *args, "--kubeconfig", sandbox.clusters[control].kubeconfig, "-o", "json"])


def actions(result) -> list[str]:
    assert result.exit_code in (0, 1), result.output
    return [d["action"] for d in json.loads(result.stdout)["datacenters"]]


@pytest.fixture
def prefix():
    return f"r{uuid.uuid4().hex[:6]}"


def test_demo_end_to_end_with_gating_and_noop(registered, admins, prefix):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix)) == ["created", "waiting", "waiting"]
    assert admins[2].get_or_none(kube.CASSANDRA_DATACENTER, f"{prefix}-dc2", NS) is None  # dc2 waits for dc1
    assert actions(reconcile(registered, prefix)) == ["unchanged", "waiting", "waiting"]
    mark_ready(admins, 1, f"{prefix}-dc1")
    assert actions(reconcile(registered, prefix)) == ["unchanged", "created", "waiting"]
    mark_ready(admins, 2, f"{prefix}-dc2")
    assert actions(reconcile(registered, prefix)) == ["unchanged", "unchanged", "created"]
    mark_ready(admins, 3, f"{prefix}-dc3")
    kube.STATS.reset()
    r = reconcile(registered, prefix)
    assert actions(r) == ["unchanged"] * 3
    assert [d["ready"] for d in json.loads(r.stdout)["datacenters"]] == [True] * 3
    # No write at all; reads: the K8ssandraCluster, the ClientConfig list, their Secrets, one GET per datacenter.
    assert kube.STATS.writes == 0
    assert kube.STATS.by_method == {"GET": 1 + 1 + 3 + 3}


def test_every_field_lands_in_the_remote_object(registered, admins, prefix):
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-overrides.yaml").read_text())
    doc["metadata"] = {"name": prefix, "namespace": NS}
    for dc in doc["spec"]["cassandra"]["datacenters"]:
        dc["metadata"]["name"] = f"{prefix}-{dc['metadata']['name']}"
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created", "created"]
    stored_kc = admins[0].get(kube.K8SSANDRA_CLUSTER, prefix, NS)
    for desired, index in zip(build_datacenters(stored_kc), (1, 2)):
        remote = admins[index].get(kube.CASSANDRA_DATACENTER, desired.name, NS)
        assert remote["spec"] == desired.object["spec"]
        assert remote["metadata"]["labels"] == desired.object["metadata"]["labels"]
        assert remote["metadata"]["annotations"] == desired.object["metadata"]["annotations"]
        assert any(m["manager"] == "k8sctl" for m in remote["metadata"]["managedFields"])


def test_wait_creates_each_after_the_previous_is_ready(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix))
    stop = threading.Event()
    order = []

    def cass_operator_stand_in():  # marks each datacenter Ready a moment after it appears
        pending = [(1, f"{prefix}-dc1"), (2, f"{prefix}-dc2"), (3, f"{prefix}-dc3")]
        while pending and not stop.is_set():
            i, name = pending[0]
            if admins[i].get_or_none(kube.CASSANDRA_DATACENTER, name, NS) is not None:
                order.append(name)
                for j, later in pending[1:]:  # the gate: later ones do not exist yet
                    assert admins[j].get_or_none(kube.CASSANDRA_DATACENTER, later, NS) is None
                mark_ready(admins, i, name)
                pending.pop(0)
            time.sleep(0.05)

    t = threading.Thread(target=cass_operator_stand_in)
    t.start()
    try:
        r = reconcile(registered, prefix, "--wait", "--timeout", "30")
    finally:
        stop.set()
        t.join()
    assert actions(r) == ["created"] * 3 and r.exit_code == 0
    assert order == [f"{prefix}-dc1", f"{prefix}-dc2", f"{prefix}-dc3"]
    assert [d["ready"] for d in json.loads(r.stdout)["datacenters"]] == [True] * 3


def test_wait_times_out(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix))
    r = reconcile(registered, prefix, "--wait", "--timeout", "1")
    assert r.exit_code == 1 and actions(r) == ["error", "waiting", "waiting"]
    assert "not Ready after 1s" in r.stdout


def test_size_change_updates_only_that_datacenter(registered, admins, prefix):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created"] * 3
    before = [admins[i].get(kube.CASSANDRA_DATACENTER, f"{prefix}-dc{i}", NS)["metadata"]["resourceVersion"] for i in (1, 2, 3)]
    doc["spec"]["cassandra"]["datacenters"][1]["size"] = 5
    apply_cluster(admins, doc)
    kube.STATS.reset()
    assert actions(reconcile(registered, prefix)) == ["unchanged", "updated", "unchanged"]
    assert kube.STATS.writes == 1
    after = [admins[i].get(kube.CASSANDRA_DATACENTER, f"{prefix}-dc{i}", NS) for i in (1, 2, 3)]
    assert [a["metadata"]["resourceVersion"] == b for a, b in zip(after, before)] == [True, False, True]
    assert after[1]["spec"]["size"] == 5


def test_dry_run_writes_nothing_and_shows_a_diff(registered, admins, prefix):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    kube.STATS.reset()
    r = reconcile(registered, prefix, "--dry-run")
    assert actions(r) == ["would be created", "waiting", "waiting"] and kube.STATS.writes == 0
    assert f"+  clusterName: {prefix}" in json.loads(r.stdout)["datacenters"][0]["diff"]
    assert admins[1].get_or_none(kube.CASSANDRA_DATACENTER, f"{prefix}-dc1", NS) is None
    text = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", registered.clusters[0].kubeconfig, "--dry-run"])
    assert "kind: CassandraDatacenter" in text.stdout and f"--- diff for {prefix}-dc1" in text.stdout


def test_unknown_context_fails_before_writing(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix, contexts=("kind-k8ssandra-1", "kind-nowhere", "kind-k8ssandra-3")))
    r = reconcile(registered, prefix, "--no-gate")
    assert r.exit_code == 1
    assert "No known client for context-name kind-nowhere" in r.output and "kind-k8ssandra-1" in r.output
    assert admins[1].get_or_none(kube.CASSANDRA_DATACENTER, f"{prefix}-dc1", NS) is None


def test_empty_context_is_the_control_plane(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix, sizes=(1, 1), contexts=("", "kind-k8ssandra-1")))
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created", "created"]
    assert admins[0].get(kube.CASSANDRA_DATACENTER, f"{prefix}-dc1", NS)["spec"]["size"] == 1


def test_update_status_and_force_conflicts(registered, admins, prefix):
    doc = demo_cluster(prefix, sizes=(1,), contexts=("kind-k8ssandra-1",))
    apply_cluster(admins, doc)
    # Someone else (another field manager) created the datacenter with another size.
    desired = build_datacenters(admins[0].get(kube.K8SSANDRA_CLUSTER, prefix, NS))[0].object
    other = copy.deepcopy(desired)
    other["spec"]["size"] = 7
    del other["metadata"]["annotations"][HASH_ANNOTATION]  # not written by k8sctl: no k8sctl hash
    admins[1].apply(kube.CASSANDRA_DATACENTER, other, field_manager="someone-else")
    r = reconcile(registered, prefix)
    assert r.exit_code == 1 and "--force-conflicts" in r.stdout and actions(r) == ["error"]
    r = reconcile(registered, prefix, "--force-conflicts", "--update-status")
    assert actions(r) == ["updated"]
    assert admins[1].get(kube.CASSANDRA_DATACENTER, f"{prefix}-dc1", NS)["spec"]["size"] == 1
    status = admins[0].get(kube.K8SSANDRA_CLUSTER, prefix, NS)["status"]["datacenters"]
    assert status == {f"{prefix}-dc1": {"contextName": "kind-k8ssandra-1", "cassandra": {}}}


def test_broken_clientconfig_secret_is_reported(registered, admins, prefix):
    admins[0].apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{prefix}-config", "namespace": NS},
                                  "data": {"kubeconfig": base64.b64encode(b"not: [valid").decode()}})
    admins[0].apply(kube.clientconfig_resource("v1beta1"), clientconfigs.clientconfig_manifest(
        prefix, NS, "v1beta1", "kind-broken", f"{prefix}-config"))
    try:
        apply_cluster(admins, demo_cluster(prefix, sizes=(1, 1), contexts=("kind-k8ssandra-1", "kind-broken")))
        r = reconcile(registered, prefix, "--no-gate")
        assert r.exit_code == 1, r.output
        assert f"ClientConfig {prefix} is broken" in r.output and "No known client for context-name kind-broken" in r.output
        assert admins[1].get_or_none(kube.CASSANDRA_DATACENTER, f"{prefix}-dc1", NS) is None
        # A broken ClientConfig nobody uses does not affect a run: its Secret is not even read.
        apply_cluster(admins, demo_cluster(prefix + "x", sizes=(1,), contexts=("kind-k8ssandra-1",)))
        r = reconcile(registered, prefix + "x")
        assert r.exit_code == 0 and actions(r) == ["created"]
        assert json.loads(r.stdout)["brokenClientConfigs"] == []
    finally:
        admins[0].delete(kube.clientconfig_resource("v1beta1"), prefix, NS)
        admins[0].delete(kube.SECRET, f"{prefix}-config", NS)


def test_missing_cluster_is_a_usage_error(registered):
    r = CliRunner().invoke(app, ["reconcile", "nope", "--kubeconfig", registered.clusters[0].kubeconfig])
    assert r.exit_code == 2 and "K8ssandraCluster k8ssandra-operator/nope not found" in r.output


def test_unreachable_cluster_names_its_context_and_others_succeed(tmp_path, control_plane_binaries):
    state = cluster.up(tmp_path / "sb", 3, control_plane_binaries)
    try:
        for c in state.clusters:
            k8ssandra.prepare(c.kubeconfig, c.context)
        register(state, [1, 2])
        admin0 = admin_client(state.clusters[0])
        admin0.apply(kube.K8SSANDRA_CLUSTER, demo_cluster("unreach", sizes=(1, 1), contexts=("kind-k8ssandra-1", "kind-k8ssandra-2")), force=True)
        cluster.stop_cluster(tmp_path / "sb", "kind-k8ssandra-2")
        r = reconcile(state, "unreach", "--no-gate")
        assert r.exit_code == 1
        rows = json.loads(r.stdout)["datacenters"]
        assert [d["action"] for d in rows] == ["created", "error"], [d.get("error") for d in rows]
        assert "kind-k8ssandra-2" in rows[1]["error"] and "connection refused" in rows[1]["error"]
    finally:
        cluster.down(tmp_path / "sb")
