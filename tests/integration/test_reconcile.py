"""reconcile against real API servers: ClientConfigs in cluster 0, datacenters in clusters 1..3."""
from __future__ import annotations

import base64
import copy
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import clientconfigs, kube
from k8sctl import reconcile as rec
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cache import ClientCache
from k8sctl.cli import app
from k8sctl.datacenters import HASH_ANNOTATION, build_datacenters
from k8sctl_sandbox import cluster, crds_and_identity
from tests import leakguard

from .conftest import admin_client

NS = crds_and_identity.OPERATOR_NAMESPACE
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
def registered(sandbox, admins):
    register(sandbox, [1, 2, 3])
    try:
        yield sandbox
    finally:  # other files expect the shared control plane without these registrations
        for i in (1, 2, 3):
            name = sandbox.clusters[i].context
            for resource, obj in ((clientconfig_api.resource("v1beta1"), name), (kube.SECRET, f"{name}-config")):
                try:
                    admins[0].delete(resource, obj, NS)
                except kube.NotFound:
                    pass


class WatchFailed(BaseException):
    """A watcher's check failed: not an Exception, so reconcile cannot report it as a datacenter's error."""


class Watch:
    """Runs `check` in a thread until the block ends or it returns True; its first failure fails the test at once.

    At once: reconcile calls `progress` before every write and on every poll while it
    waits, and `progress` raises the failure in the test's thread; on leaving the
    block it is raised again as the AssertionError it was.
    """

    def __init__(self, check, interval: float = 0.02):
        self.check, self.interval = check, interval
        self.failure: BaseException | None = None
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.check():  # done
                    return
            except BaseException as e:  # noqa: BLE001 - handed to the test's thread
                self.failure = e
                return
            self.checks += 1
            time.sleep(self.interval)

    def progress(self, _message: str = "") -> None:
        if self.failure is not None:
            raise WatchFailed(f"{type(self.failure).__name__}: {self.failure}")

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.failure is not None:
            raise AssertionError(f"watcher failed: {self.failure}") from self.failure


def run_reconcile(control: cluster.ClusterInfo, name: str, progress=lambda m: None, **options) -> rec.ReconcileResult:
    """reconcile through the domain API, in this thread (so a Watch can stop it)."""
    local = admin_client(control)
    cache = ClientCache.from_clientconfigs(local, NS)
    try:
        return rec.run(rec.ReconcileOptions(name=name, namespace=NS, poll_interval=0.05, **options), cache, progress)
    finally:
        cache.close()
        local.close()


def demo_cluster(prefix: str, sizes=(3, 3, 3), contexts=("kind-k8ssandra-1", "kind-k8ssandra-2", "kind-k8ssandra-3")) -> dict:
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-demo.yaml").read_text())
    doc["metadata"] = {"name": prefix, "namespace": NS}
    doc["spec"]["cassandra"]["datacenters"] = [
        {"metadata": {"name": f"{prefix}-dc{i + 1}"}, "k8sContext": ctx, "size": size}
        for i, (ctx, size) in enumerate(zip(contexts, sizes))]
    return doc


def apply_cluster(admins, doc: dict) -> None:
    admins[0].apply(k8c.RESOURCE, doc, force=True)


def mark_ready(admins, index: int, name: str) -> None:
    """Stands in for cass-operator (not running here): sets the Ready status it would."""
    dc = admins[index].get(cdc.RESOURCE, name, NS)
    admins[index].request("PATCH", cdc.RESOURCE.path(NS, name, "status"), {"status": cdc.ready_status(dc)},
                          content_type="application/merge-patch+json")


def reconcile(sandbox, *args: str, control: int = 0):
    return CliRunner().invoke(app, ["reconcile", *args, "--kubeconfig", sandbox.clusters[control].kubeconfig, "-o", "json"])


def actions(result) -> list[str]:
    assert result.exit_code in (0, 1), result.output
    return [d["action"] for d in json.loads(result.stdout)["datacenters"]]


@pytest.fixture
def requests_log(monkeypatch):
    """Every request any KubeClient sends: (method, path, dryRun). A probe is marked dryRun=All."""
    log: list[tuple[str, str, str | None]] = []
    real = kube.KubeClient.request

    def spy(self, method, path, body=None, *, query=None, **kw):
        log.append((method, path, (query or {}).get("dryRun")))
        return real(self, method, path, body, query=query, **kw)

    monkeypatch.setattr(kube.KubeClient, "request", spy)
    return log


def real_writes(log) -> list[tuple[str, str]]:
    return [(m, p) for m, p, dry in log if m != "GET" and dry is None]


def dry_runs(log) -> list[tuple[str, str]]:
    return [(m, p) for m, p, dry in log if dry == "All"]


@pytest.fixture
def prefix(request):
    """A unique name prefix; afterwards, what the test made with it is removed from the sandboxes it used."""
    p = f"r{uuid.uuid4().hex[:6]}"
    yield p
    for fixture in ("admins", "crd_admins"):
        if fixture in request.fixturenames:
            for client in request.getfixturevalue(fixture):
                remove_prefixed(client, p)


def remove_prefixed(client: kube.KubeClient, prefix: str) -> None:
    """Delete the K8ssandraClusters, CassandraDatacenters, Secrets (config, superuser) and ConfigMaps
    (metrics agent) whose names start with `prefix`."""
    for resource, selector in ((k8c.RESOURCE, None), (cdc.RESOURCE, None), (kube.SECRET, None),
                               (kube.CONFIGMAP, None)):
        try:
            items = client.list(resource, NS, label_selector=selector)
        except kube.ClusterError:
            continue  # this cluster has no such CRD, or a test stopped it
        for item in items:
            if item["metadata"]["name"].startswith(prefix):
                try:
                    client.delete(resource, item["metadata"]["name"], NS)
                except kube.NotFound:
                    pass


def test_demo_end_to_end_with_gating_and_noop(registered, admins, prefix):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix)) == ["created", "waiting", "waiting"]
    assert admins[2].get_or_none(cdc.RESOURCE, f"{prefix}-dc2", NS) is None  # dc2 waits for dc1
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
    # No write at all; reads: the K8ssandraCluster, the ClientConfig list, their Secrets, the superuser
    # Secret in the control plane, and per cluster three LISTs by the operator's labels
    # (datacenters, metrics agent ConfigMaps, Secrets).
    assert kube.STATS.writes == 0
    assert kube.STATS.by_method == {"GET": 1 + 1 + 3 + 1 + 3 * 3}


def test_a_noop_reads_the_same_whatever_the_number_of_datacenters(registered, admins, prefix, requests_log):
    """Issue 11: reads per cluster and namespace, not per datacenter (12 datacenters, 3 clusters)."""
    contexts = [f"kind-k8ssandra-{1 + i % 3}" for i in range(12)]
    doc = demo_cluster(prefix, sizes=(1,) * 12, contexts=tuple(contexts))
    apply_cluster(admins, doc)
    assert set(actions(reconcile(registered, prefix, "--no-gate"))) == {"created"}
    requests_log.clear()
    kube.STATS.reset()  # k8sctl's own requests (the leak guard's reads after each run have their own count)
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["unchanged"] * 12
    assert kube.STATS.by_method == {"GET": 1 + 1 + 3 + 1 + 3 * 3}
    gets = [path for method, path, _ in requests_log if method == "GET" and "/namespaces/" in path]
    assert sum("/cassandradatacenters" in p for p in gets) == 3 and sum("/configmaps" in p for p in gets) == 3


def test_every_field_lands_in_the_remote_object(registered, admins, prefix):
    doc = yaml.safe_load((FIXTURES / "k8ssandracluster-overrides.yaml").read_text())
    doc["metadata"] = {"name": prefix, "namespace": NS}
    for dc in doc["spec"]["cassandra"]["datacenters"]:
        dc["metadata"]["name"] = f"{prefix}-{dc['metadata']['name']}"
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created", "created"]
    stored_kc = admins[0].get(k8c.RESOURCE, prefix, NS)
    for desired, index in zip(build_datacenters(stored_kc), (1, 2)):
        remote = admins[index].get(cdc.RESOURCE, desired.name, NS)
        assert remote["spec"] == desired.object["spec"]
        assert remote["metadata"]["labels"] == desired.object["metadata"]["labels"]
        assert remote["metadata"]["annotations"] == desired.object["metadata"]["annotations"]
        assert any(m["manager"] == "k8sctl" for m in remote["metadata"]["managedFields"])


def test_wait_creates_each_after_the_previous_is_ready(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix))
    pending = [(1, f"{prefix}-dc1"), (2, f"{prefix}-dc2"), (3, f"{prefix}-dc3")]
    order = []

    def cass_operator_stand_in():  # marks each datacenter Ready once it appears; checks the gate
        if not pending:
            return True
        i, name = pending[0]
        if admins[i].get_or_none(cdc.RESOURCE, name, NS) is not None:
            order.append(name)
            for j, later in pending[1:]:  # the gate: later ones do not exist yet
                assert admins[j].get_or_none(cdc.RESOURCE, later, NS) is None, f"{later} exists before {name} is Ready"
            mark_ready(admins, i, name)
            pending.pop(0)

    with Watch(cass_operator_stand_in) as watch:
        result = run_reconcile(registered.clusters[0], prefix, watch.progress, wait=True, timeout=30)
    assert [r.action for r in result.datacenters] == ["created"] * 3 and not result.failed
    assert order == [f"{prefix}-dc1", f"{prefix}-dc2", f"{prefix}-dc3"]
    assert [r.ready for r in result.datacenters] == [True] * 3


def test_wait_interrupted_and_run_again_resumes_waiting(registered, admins, prefix, tmp_path):
    apply_cluster(admins, demo_cluster(prefix))
    # A real --wait, interrupted (SIGINT, as Ctrl-C) while it waits for dc1 to become Ready.
    # -X faulthandler: if it ever fails to exit after the SIGINT, SIGABRT makes it print every
    # thread's stack (seen once, under heavy load, and not reproduced since).
    cmd = [sys.executable, "-X", "faulthandler", "-m", "k8sctl", "reconcile", prefix, "--kubeconfig",
           registered.clusters[0].kubeconfig, "--wait", "--timeout", "60"]
    # SIGINT as on a terminal: a shell without job control starts background jobs (a CI script
    # run with `&`, say) with SIGINT ignored, and the child would inherit that.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "reconcile --wait never created dc1"
            time.sleep(0.05)
        time.sleep(0.3)  # it is now polling dc1
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            leakguard.check(out, err, where="output")
            raise AssertionError(f"reconcile --wait did not exit within 60 s of SIGINT; its threads:\n{err[-4000:]}") from None
        leakguard.check(out, err, where="output")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, f"exit {proc.returncode}; stderr: {err}; stdout: {out[-3000:]}"
    assert admins[2].get_or_none(cdc.RESOURCE, f"{prefix}-dc2", NS) is None
    # Run again: it waits for dc1 (created by the interrupted run), then goes on.
    pending = [(1, f"{prefix}-dc1"), (2, f"{prefix}-dc2"), (3, f"{prefix}-dc3")]

    def cass_operator_stand_in():
        if not pending:
            return True
        i, name = pending[0]
        if admins[i].get_or_none(cdc.RESOURCE, name, NS) is not None:
            mark_ready(admins, i, name)
            pending.pop(0)

    with Watch(cass_operator_stand_in) as watch:
        result = run_reconcile(registered.clusters[0], prefix, watch.progress, wait=True, timeout=30)
    assert [r.action for r in result.datacenters] == ["unchanged", "created", "created"], \
        [r.error for r in result.datacenters]
    assert [r.ready for r in result.datacenters] == [True] * 3 and not result.failed


def test_an_out_of_band_edit_is_restored(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix, sizes=(3,), contexts=("kind-k8ssandra-1",)))
    assert actions(reconcile(registered, prefix)) == ["created"]
    name = f"{prefix}-dc1"
    path = cdc.RESOURCE.path(NS, name)
    # What `kubectl edit` / `kubectl label` do: plain updates, under their own field managers.
    admins[1].request("PATCH", path, {"spec": {"size": 9}}, query={"fieldManager": "kubectl-edit"},
                      content_type="application/merge-patch+json")
    admins[1].request("PATCH", path, {"metadata": {"labels": {"app.kubernetes.io/part-of": None}}},
                      query={"fieldManager": "kubectl-label"}, content_type="application/merge-patch+json")
    r = reconcile(registered, prefix)
    assert actions(r) == ["updated"], r.output
    assert json.loads(r.stdout)["datacenters"][0]["drift"] == ["metadata.labels.app.kubernetes.io/part-of", "spec.size"]
    live = admins[1].get(cdc.RESOURCE, name, NS)
    assert live["spec"]["size"] == 3 and live["metadata"]["labels"]["app.kubernetes.io/part-of"] == "k8ssandra"
    kube.STATS.reset()
    assert actions(reconcile(registered, prefix)) == ["unchanged"] and kube.STATS.writes == 0
    # A field only another manager writes is not k8sctl's: no drift, nothing written.
    admins[1].request("PATCH", path, {"metadata": {"annotations": {"example.com/note": "x"}}},
                      query={"fieldManager": "kubectl-annotate"}, content_type="application/merge-patch+json")
    kube.STATS.reset()
    assert actions(reconcile(registered, prefix)) == ["unchanged"] and kube.STATS.writes == 0


def test_wait_times_out(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix))
    r = reconcile(registered, prefix, "--wait", "--timeout", "1")
    assert r.exit_code == 1 and actions(r) == ["error", "waiting", "waiting"]
    assert "not Ready after 1s" in r.stdout


def test_size_change_updates_only_that_datacenter(registered, admins, prefix, requests_log):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created"] * 3
    before = [admins[i].get(cdc.RESOURCE, f"{prefix}-dc{i}", NS)["metadata"]["resourceVersion"] for i in (1, 2, 3)]
    doc["spec"]["cassandra"]["datacenters"][1]["size"] = 5
    apply_cluster(admins, doc)
    requests_log.clear()
    assert actions(reconcile(registered, prefix)) == ["unchanged", "updated", "unchanged"]
    # One write, after one dry run of it (the schema check before writing).
    assert real_writes(requests_log) == [("PATCH", cdc.RESOURCE.path(NS, f"{prefix}-dc2"))]
    assert dry_runs(requests_log) == real_writes(requests_log)
    after = [admins[i].get(cdc.RESOURCE, f"{prefix}-dc{i}", NS) for i in (1, 2, 3)]
    assert [a["metadata"]["resourceVersion"] == b for a, b in zip(after, before)] == [True, False, True]
    assert after[1]["spec"]["size"] == 5


def test_dry_run_writes_nothing_and_shows_a_diff(registered, admins, prefix, requests_log):
    doc = demo_cluster(prefix)
    apply_cluster(admins, doc)
    requests_log.clear()
    r = reconcile(registered, prefix, "--dry-run")
    assert actions(r) == ["would be created", "waiting", "waiting"] and real_writes(requests_log) == []
    assert f"+  clusterName: {prefix}" in json.loads(r.stdout)["datacenters"][0]["diff"]
    assert admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is None
    text = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", registered.clusters[0].kubeconfig, "--dry-run"])
    assert "kind: CassandraDatacenter" in text.stdout and f"--- diff for {prefix}-dc1" in text.stdout


def test_unknown_context_fails_before_writing(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix, contexts=("kind-k8ssandra-1", "kind-nowhere", "kind-k8ssandra-3")))
    r = reconcile(registered, prefix, "--no-gate")
    assert r.exit_code == 1
    assert "No known client for context-name kind-nowhere" in r.output and "kind-k8ssandra-1" in r.output
    assert admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is None


def test_empty_context_is_the_control_plane(registered, admins, prefix):
    apply_cluster(admins, demo_cluster(prefix, sizes=(1, 1), contexts=("", "kind-k8ssandra-1")))
    assert actions(reconcile(registered, prefix, "--no-gate")) == ["created", "created"]
    assert admins[0].get(cdc.RESOURCE, f"{prefix}-dc1", NS)["spec"]["size"] == 1


def test_update_status_and_force_conflicts(registered, admins, prefix):
    doc = demo_cluster(prefix, sizes=(1,), contexts=("kind-k8ssandra-1",))
    apply_cluster(admins, doc)
    # Someone else (another field manager) created the datacenter with another size.
    desired = build_datacenters(admins[0].get(k8c.RESOURCE, prefix, NS))[0].object
    other = copy.deepcopy(desired)
    other["spec"]["size"] = 7
    del other["metadata"]["annotations"][HASH_ANNOTATION]  # not written by k8sctl: no k8sctl hash
    admins[1].apply(cdc.RESOURCE, other, field_manager="someone-else")
    r = reconcile(registered, prefix)
    assert r.exit_code == 1 and "--force-conflicts" in r.stdout and actions(r) == ["error"]
    r = reconcile(registered, prefix, "--force-conflicts", "--update-status")
    assert actions(r) == ["updated"]
    assert admins[1].get(cdc.RESOURCE, f"{prefix}-dc1", NS)["spec"]["size"] == 1
    status = admins[0].get(k8c.RESOURCE, prefix, NS)["status"]["datacenters"]
    assert status == {f"{prefix}-dc1": {"contextName": "kind-k8ssandra-1", "cassandra": {}}}


def test_broken_clientconfig_secret_is_reported(registered, admins, prefix):
    admins[0].apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{prefix}-config", "namespace": NS},
                                  "data": {"kubeconfig": base64.b64encode(b"not: [valid").decode()}})
    admins[0].apply(clientconfig_api.resource("v1beta1"), clientconfigs.clientconfig_manifest(
        prefix, NS, "v1beta1", "kind-broken", f"{prefix}-config"))
    try:
        apply_cluster(admins, demo_cluster(prefix, sizes=(1, 1), contexts=("kind-k8ssandra-1", "kind-broken")))
        r = reconcile(registered, prefix, "--no-gate")
        assert r.exit_code == 1, r.output
        assert f"ClientConfig {prefix} is broken" in r.output and "No known client for context-name kind-broken" in r.output
        assert admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is None
        # A broken ClientConfig nobody uses does not affect a run: its Secret is not even read.
        apply_cluster(admins, demo_cluster(prefix + "x", sizes=(1,), contexts=("kind-k8ssandra-1",)))
        r = reconcile(registered, prefix + "x")
        assert r.exit_code == 0 and actions(r) == ["created"]
        assert json.loads(r.stdout)["brokenClientConfigs"] == []
    finally:
        admins[0].delete(clientconfig_api.resource("v1beta1"), prefix, NS)
        admins[0].delete(kube.SECRET, f"{prefix}-config", NS)


def test_missing_cluster_is_a_usage_error(registered):
    r = CliRunner().invoke(app, ["reconcile", "nope", "--kubeconfig", registered.clusters[0].kubeconfig])
    assert r.exit_code == 2 and "K8ssandraCluster k8ssandra-operator/nope not found" in r.output


def test_unreachable_cluster_names_its_context_and_others_succeed(tmp_path, control_plane_binaries):
    state = cluster.up(tmp_path / "sb", 3, control_plane_binaries)
    try:
        crds_and_identity.install_all(state)
        register(state, [1, 2])
        admin0 = admin_client(state.clusters[0])
        admin0.apply(k8c.RESOURCE, demo_cluster("unreach", sizes=(1, 1), contexts=("kind-k8ssandra-1", "kind-k8ssandra-2")), force=True)
        cluster.stop_cluster(tmp_path / "sb", "kind-k8ssandra-2")
        r = reconcile(state, "unreach", "--no-gate")
        assert r.exit_code == 1
        rows = json.loads(r.stdout)["datacenters"]
        assert [d["action"] for d in rows] == ["created", "error"], [d.get("error") for d in rows]
        assert "kind-k8ssandra-2" in rows[1]["error"] and "connection refused" in rows[1]["error"]
    finally:
        cluster.down(tmp_path / "sb")


# --- the CassandraDatacenter CRDs users have: production and unpatched (crd_sandbox) ---------------

FORM_CLUSTER = {"prod": 1, "unpatched": 2}  # crd_sandbox cluster index of each CRD form


def crd_demo(prefix: str, contexts=("prod-1", "prod-2", "prod-3"), sizes=(3, 3, 3)) -> dict:
    return demo_cluster(prefix, sizes=sizes, contexts=contexts)


def where(context: str) -> int:
    return FORM_CLUSTER[context.split("-")[0]]


def secret_of(admins, context: str, cluster_name: str, dc: str) -> dict | None:
    return admins[where(context)].get_or_none(kube.SECRET, cdc.config_secret_name(cluster_name, dc), NS)


def test_production_crd_auto_goes_inline_and_a_second_run_writes_nothing(crd_sandbox, crd_admins, prefix, requests_log):
    apply_cluster(crd_admins, crd_demo(prefix))
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix, "--no-gate")
    assert actions(r) == ["created"] * 3, r.output
    doc = json.loads(r.stdout)
    assert [d["configSource"] for d in doc["datacenters"]] == ["inline"] * 3
    assert {ctx: c["source"] for ctx, c in doc["configSources"].items()} == {f"prod-{i}": "inline" for i in (1, 2, 3)}
    assert all("accepts an inline spec.config" in c["reason"] for c in doc["configSources"].values())
    # One probe per context (a dry run), then one real write per datacenter and per metrics agent
    # ConfigMap, and the superuser Secret: in the control plane, and once in cluster 1 (prod-1..3 are all it).
    assert len(dry_runs(requests_log)) == 3
    assert sorted(real_writes(requests_log)) == sorted(
        [("PATCH", cdc.RESOURCE.path(NS, f"{prefix}-dc{i}")) for i in (1, 2, 3)]
        + [("PATCH", kube.CONFIGMAP.path(NS, f"{prefix}-{prefix}-dc{i}-metrics-agent-config")) for i in (1, 2, 3)]
        + [("POST", kube.SECRET.path(NS))] * 2)
    stored_kc = crd_admins[0].get(k8c.RESOURCE, prefix, NS)
    for desired in build_datacenters(stored_kc):
        live = crd_admins[1].get(cdc.RESOURCE, desired.name, NS)
        assert live["spec"]["config"] == desired.object["spec"]["config"] and "configSecret" not in live["spec"]
        assert secret_of(crd_admins, "prod-1", prefix, desired.name) is None
    requests_log.clear()
    kube.STATS.reset()
    r = reconcile(crd_sandbox, prefix)
    assert actions(r) == ["unchanged"] * 3
    assert kube.STATS.writes == 0 and real_writes(requests_log) == [] and dry_runs(requests_log) == []
    doc = json.loads(r.stdout)
    assert all("uses an inline spec.config" in c["reason"] for c in doc["configSources"].values())


def test_unpatched_crd_auto_goes_through_config_secret(crd_sandbox, crd_admins, prefix, requests_log):
    contexts = ("unpatched-1", "unpatched-2", "unpatched-3")
    doc = crd_demo(prefix, contexts)
    apply_cluster(crd_admins, doc)
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix, "--no-gate")
    assert actions(r) == ["created"] * 3, r.output
    out = json.loads(r.stdout)
    assert [d["configSource"] for d in out["datacenters"]] == ["secret"] * 3
    assert all("refuses an inline spec.config" in c["reason"] for c in out["configSources"].values())
    assert [d["configSecret"]["action"] for d in out["datacenters"]] == ["created"] * 3
    # The probes wrote nothing: every request that was not a GET was a dry run, or one of the 3 config
    # Secrets + 3 datacenters + 3 metrics agent ConfigMaps + 2 superuser Secrets (control plane, cluster 2).
    writes = real_writes(requests_log)
    assert len(writes) == 11 and sum("/secrets" in p for _, p in writes) == 5
    assert {m for m, _ in dry_runs(requests_log)} == {"POST", "PATCH"} and len(dry_runs(requests_log)) == 9
    stored_kc = crd_admins[0].get(k8c.RESOURCE, prefix, NS)
    for desired in build_datacenters(stored_kc):
        live = crd_admins[2].get(cdc.RESOURCE, desired.name, NS)
        secret = secret_of(crd_admins, "unpatched-1", prefix, desired.name)
        assert "config" not in live["spec"] and live["spec"]["configSecret"] == secret["metadata"]["name"]
        assert json.loads(base64.b64decode(secret["data"]["config"])) == desired.object["spec"]["config"]
        assert secret["metadata"]["labels"][cdc.MANAGED_BY_LABEL] == "k8sctl"

    def versions() -> list[tuple[str, str]]:
        return [(crd_admins[2].get(cdc.RESOURCE, f"{prefix}-dc{i}", NS)["metadata"]["resourceVersion"],
                 secret_of(crd_admins, "unpatched-1", prefix, f"{prefix}-dc{i}")["metadata"]["resourceVersion"])
                for i in (1, 2, 3)]

    before = versions()
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix)
    assert actions(r) == ["unchanged"] * 3 and real_writes(requests_log) == [] and dry_runs(requests_log) == []
    assert versions() == before
    # num_tokens of dc2 only: its Secret, and nothing else, is written.
    doc["spec"]["cassandra"]["datacenters"][1]["config"] = {"cassandraYaml": {"num_tokens": 32}}
    apply_cluster(crd_admins, doc)
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix)
    assert actions(r) == ["unchanged", "updated", "unchanged"], r.output
    assert [d["configSecret"]["action"] for d in json.loads(r.stdout)["datacenters"]] == ["unchanged", "updated", "unchanged"]
    assert real_writes(requests_log) == [("PATCH", kube.SECRET.path(NS, cdc.config_secret_name(prefix, f"{prefix}-dc2")))]
    after = versions()
    assert [a == b for a, b in zip(after, before)] == [True, False, True]
    assert after[1][0] == before[1][0]  # the datacenter itself was not written
    dc2 = secret_of(crd_admins, "unpatched-2", prefix, f"{prefix}-dc2")
    assert json.loads(base64.b64decode(dc2["data"]["config"]))["cassandra-yaml"]["num_tokens"] == 32
    # A cluster-level change: every Secret.
    doc["spec"]["cassandra"]["config"] = {"cassandraYaml": {"concurrent_reads": 64}}
    apply_cluster(crd_admins, doc)
    before = versions()
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix)
    assert actions(r) == ["updated"] * 3
    assert len(real_writes(requests_log)) == 3 and all("/secrets/" in p for _, p in real_writes(requests_log))
    after = versions()
    assert [a[0] == b[0] and a[1] != b[1] for a, b in zip(after, before)] == [True] * 3
    # The Secret's content edited out of band (as `kubectl edit` does): the next run restores it.
    name = cdc.config_secret_name(prefix, f"{prefix}-dc3")
    good = crd_admins[2].get(kube.SECRET, name, NS)["data"]["config"]
    crd_admins[2].request("PATCH", kube.SECRET.path(NS, name), {"data": {"config": base64.b64encode(b"{}").decode()}},
                          query={"fieldManager": "kubectl-edit"}, content_type="application/merge-patch+json")
    r = reconcile(crd_sandbox, prefix)
    assert actions(r) == ["unchanged", "unchanged", "updated"], r.output
    assert crd_admins[2].get(kube.SECRET, name, NS)["data"]["config"] == good


def test_inline_on_the_unpatched_crd_fails_with_one_line_and_writes_nothing(crd_sandbox, crd_admins, prefix, requests_log):
    apply_cluster(crd_admins, crd_demo(prefix, ("prod-1", "unpatched-1"), sizes=(1, 1)))
    requests_log.clear()
    r = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", crd_sandbox.clusters[0].kubeconfig,
                                 "--no-gate", "--config-source", "inline"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"datacenter {prefix}-dc2 in context unpatched-1" in lines[0] and "field spec.config" in lines[0]
    assert "--config-source secret" in lines[0] and "nothing was written" in lines[0]
    assert "num_tokens" not in r.stderr  # the server's error quotes the refused config: not repeated
    assert real_writes(requests_log) == []  # not even dc1, in the cluster that would accept it
    assert crd_admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is None
    assert crd_admins[2].get_or_none(cdc.RESOURCE, f"{prefix}-dc2", NS) is None


def test_dry_run_names_the_secret_and_its_keys_and_probes_write_nothing(crd_sandbox, crd_admins, prefix, requests_log):
    apply_cluster(crd_admins, crd_demo(prefix, ("prod-1", "unpatched-1"), sizes=(1, 1)))
    requests_log.clear()
    r = reconcile(crd_sandbox, prefix, "--no-gate", "--dry-run")
    assert actions(r) == ["would be created"] * 2
    rows = json.loads(r.stdout)["datacenters"]
    assert [d["configSource"] for d in rows] == ["inline", "secret"]  # per cluster
    name = cdc.config_secret_name(prefix, f"{prefix}-dc2")
    assert rows[1]["configSecret"] == {"name": name, "keys": ["config"], "action": "would be created"}
    assert "num_tokens" not in rows[1]["diff"] and "config: (hidden)" in rows[1]["diff"]
    assert real_writes(requests_log) == [] and len(dry_runs(requests_log)) >= 2
    assert crd_admins[2].get_or_none(kube.SECRET, name, NS) is None
    stored_kc = crd_admins[0].get(k8c.RESOURCE, prefix, NS)
    content = cdc.for_source(build_datacenters(stored_kc)[1].object, cdc.SECRET, prefix)[1]["data"]["config"]
    text = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", crd_sandbox.clusters[0].kubeconfig,
                                    "--no-gate", "--dry-run"])
    assert f"name: {name}" in text.stdout and "config: '(hidden:" in text.stdout and content not in text.stdout
    shown = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", crd_sandbox.clusters[0].kubeconfig,
                                     "--no-gate", "--dry-run", "--show-secrets", "-o", "json"])
    assert json.loads(shown.stdout)["datacenters"][1]["configSecret"]["data"]["config"] == content
    assert real_writes(requests_log) == []


def test_switching_between_inline_and_secret_is_valid_at_every_step(crd_sandbox, crd_admins, prefix):
    apply_cluster(crd_admins, crd_demo(prefix, ("prod-1",), sizes=(1,)))
    control = crd_sandbox.clusters[0]
    result = run_reconcile(control, prefix, config_source="inline")
    assert [r.action for r in result.datacenters] == ["created"]
    expected = result.datacenters[0].inline["spec"]["config"]
    name, secret_name = f"{prefix}-dc1", cdc.config_secret_name(prefix, f"{prefix}-dc1")
    admin = crd_admins[1]

    def valid():  # what cass-operator would read is the desired config, at every moment
        dc = admin.get(cdc.RESOURCE, name, NS)
        spec = dc["spec"]
        if spec.get("configSecret"):
            secret = admin.get_or_none(kube.SECRET, spec["configSecret"], NS)
            if secret is None or cdc.secret_config(secret) != expected:
                # Two reads are not one snapshot: it is a fault only if the datacenter still names
                # that Secret now, unchanged since the first read.
                again = admin.get(cdc.RESOURCE, name, NS)
                if again["metadata"]["resourceVersion"] == dc["metadata"]["resourceVersion"]:
                    assert secret is not None, f"spec.configSecret names {spec['configSecret']}, which does not exist"
                    assert cdc.secret_config(secret) == expected, "the config Secret does not hold the desired config"
        else:
            assert spec.get("config") == expected, "spec.config is not the desired config"

    with Watch(valid) as watch:
        for source, secret_action in (("secret", "created"), ("inline", "deleted"), ("secret", "created")):
            result = run_reconcile(control, prefix, watch.progress, config_source=source)
            r = result.datacenters[0]
            assert (r.action, r.config_source, r.secret_action) == ("updated", source, secret_action), r.error
            live = admin.get(cdc.RESOURCE, name, NS)["spec"]
            assert ("configSecret" in live, "config" in live) == ((True, False) if source == "secret" else (False, True))
            assert (admin.get_or_none(kube.SECRET, secret_name, NS) is not None) == (source == "secret")
            watch.progress()
        # auto keeps what the live datacenter uses: no probe, no write.
        result = run_reconcile(control, prefix, watch.progress)
        assert [(r.action, r.config_source) for r in result.datacenters] == [("unchanged", "secret")]
    assert watch.checks > 3
    # A Secret of that name k8sctl does not manage is never removed.
    foreign = admin.get(kube.SECRET, secret_name, NS)
    admin.apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": secret_name, "namespace": NS, "labels": {cdc.MANAGED_BY_LABEL: "someone-else"}}},
        field_manager="someone-else", force=True)
    result = run_reconcile(control, prefix, config_source="inline")
    assert [(r.action, r.secret_action) for r in result.datacenters] == [("updated", None)]
    assert admin.get(kube.SECRET, secret_name, NS)["metadata"]["uid"] == foreign["metadata"]["uid"]


def test_a_datacenter_the_clusters_schema_refuses_is_named_and_nothing_is_written(crd_sandbox, crd_admins, prefix,
                                                                                  requests_log):
    # A label value the K8ssandraCluster accepts (a string) but no object's metadata may carry.
    doc = crd_demo(prefix, ("prod-1", "prod-2"), sizes=(1, 1))
    doc["spec"]["cassandra"]["datacenters"][1]["metadata"]["labels"] = {"team": "not a valid label value!"}
    apply_cluster(crd_admins, doc)
    requests_log.clear()
    r = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", crd_sandbox.clusters[0].kubeconfig,
                                 "--no-gate", "--config-source", "secret"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"datacenter {prefix}-dc2 in context prod-2" in lines[0] and "at field metadata.labels" in lines[0], lines[0]
    assert real_writes(requests_log) == []  # neither dc1 nor any Secret, though they are valid
    for i in (1, 2):
        assert crd_admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc{i}", NS) is None
        assert secret_of(crd_admins, "prod-1", prefix, f"{prefix}-dc{i}") is None
    # The other schema difference between the two CassandraDatacenter forms, container ports keyed by
    # (containerPort, protocol) in the unpatched one only, cannot reach a datacenter: the real K8ssandraCluster
    # CRD keys them too, so a K8ssandraCluster with duplicate ports is refused before reconcile sees it (the
    # spec.config difference is tested above, with --config-source inline).
    doc = crd_demo(prefix, ("prod-1", "unpatched-1"), sizes=(1, 1))
    doc["spec"]["cassandra"]["containers"] = [{"name": "cassandra", "ports": [
        {"containerPort": 9042, "name": "cql"}, {"containerPort": 9042, "name": "cql-again"}]}]
    with pytest.raises(kube.ApiError, match=r"containers\[0\]\.ports: duplicate entries for key"):
        apply_cluster(crd_admins, doc)


def test_a_context_named_like_an_ipv6_url_prints_as_itself(sandbox, admins, prefix, tmp_path):
    # k8sContext is any string; this one only looks like an address: it is cluster 1, on loopback.
    context = "https://[fd00::5]:6443"
    c = sandbox.clusters[1]
    opts = clientconfigs.CreateOptions(src_kubeconfig=Path(c.kubeconfig), dest_kubeconfig=[Path(sandbox.clusters[0].kubeconfig)],
                                       in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig), name=prefix,
                                       context_name=context, output_dir=tmp_path / "cc")
    done = clientconfigs.complete(opts, {})
    clientconfigs.validate(done)
    clientconfigs.run(done)
    try:
        apply_cluster(admins, demo_cluster(prefix, sizes=(1,), contexts=(context,)))
        r = CliRunner().invoke(app, ["reconcile", prefix, "--kubeconfig", sandbox.clusters[0].kubeconfig],
                               env={"COLUMNS": "250"})
        assert r.exit_code == 0, r.output
        assert f"│ {context} " in r.stdout and f"config source in {context}: inline" in r.stdout, r.stdout
        assert admins[1].get_or_none(cdc.RESOURCE, f"{prefix}-dc1", NS) is not None
    finally:
        admins[0].delete(clientconfig_api.resource("v1beta1"), prefix, NS)
        admins[0].delete(kube.SECRET, f"{prefix}-config", NS)


def test_auto_switches_to_the_secret_when_a_replaced_crd_refuses_inline(crd_sandbox, crd_admins, prefix):
    """Live datacenters say inline, but the CRD was replaced by the unpatched one since (a downgrade)."""
    from k8sctl_sandbox.crds_and_identity import install_cassandradatacenter_crd

    doc = crd_demo(prefix, ("prod-1",), sizes=(1,))
    apply_cluster(crd_admins, doc)
    control = crd_sandbox.clusters[0]
    assert [(r.action, r.config_source) for r in run_reconcile(control, prefix).datacenters] == [("created", "inline")]
    install_cassandradatacenter_crd(crd_admins[1], "unpatched")
    try:
        doc["spec"]["cassandra"]["datacenters"][0]["size"] = 2
        apply_cluster(crd_admins, doc)
        result = run_reconcile(control, prefix)
        r = result.datacenters[0]
        assert (r.action, r.config_source, r.secret_action) == ("updated", "secret", "created"), r.error
        assert "refuses an inline spec.config" in result.config_sources["prod-1"].reason
        live = crd_admins[1].get(cdc.RESOURCE, f"{prefix}-dc1", NS)["spec"]
        assert live["size"] == 2 and "config" not in live and live["configSecret"] == r.config_secret
        result = run_reconcile(control, prefix)
        assert [(r.action, r.config_source) for r in result.datacenters] == [("unchanged", "secret")]
    finally:
        install_cassandradatacenter_crd(crd_admins[1], "production")


def test_auto_keeps_each_datacenters_own_source_in_a_mixed_cluster(crd_sandbox, crd_admins, prefix):
    doc = crd_demo(prefix, ("prod-1", "prod-1"), sizes=(1, 1))
    apply_cluster(crd_admins, doc)
    control = crd_sandbox.clusters[0]
    result = run_reconcile(control, prefix, config_source="inline", gate=False)
    assert [r.action for r in result.datacenters] == ["created", "created"]
    # A switch to secret interrupted after dc1 (standing in for it: what that run would have
    # applied to dc1, with k8sctl's field manager).
    dc1, secret = cdc.for_source(result.datacenters[0].inline, cdc.SECRET, prefix)
    crd_admins[1].apply(kube.SECRET, secret)
    crd_admins[1].apply(cdc.RESOURCE, dc1)
    result = run_reconcile(control, prefix)
    assert [(r.action, r.config_source) for r in result.datacenters] == [("unchanged", "secret"),
                                                                         ("unchanged", "inline")]
