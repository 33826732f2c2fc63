"""Reconcile fidelity against the real k8ssandra-operator (issue 12, item 2), in a sandbox of its
own: 4 clusters, kind-k8ssandra-0 the control plane running the operator (`sandbox up --operator`,
built from ../shared/upstream/k8ssandra-operator), all four registered with create-clientconfig
(the upstream fixtures put a datacenter in kind-k8ssandra-0 itself).

For each K8ssandraCluster the operator accepts, the operator creates the first datacenter and the
objects beside it in that datacenter's cluster; what `k8sctl reconcile --dry-run` builds for the
same K8ssandraCluster is compared with them leaf by leaf. Only the first datacenter: past it the
operator needs Cassandra pods (no cass-operator runs here; `mark-ready` stands in for it so the
operator's Ready gate opens, and it stops at `no pods in READY state`).

Not compared, with the reason in the README ("Reconcile fidelity"): the resource-hash annotation,
the operator's finalizer, server-set metadata, and empty maps and lists (Go zero values).
"""
from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8sctl import kube, reconcile
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cache import ClientCache
from k8sctl.datacenters import (
    METRICS_AGENT_VOLUME,
    replicated_superuser_secret,
    superuser_secret,
    superuser_secret_name,
)
from k8sctl_sandbox import cassandradatacenters, crds_and_identity, operator

from .conftest import NEEDS_OPERATOR_SOURCE, invoke, operator_sandbox, wait_for

NS = crds_and_identity.OPERATOR_NAMESPACE
FIXTURES = Path(__file__).parent.parent / "fixtures"
# The documented demo, the upstream samples the operator accepts (copied from ../shared/samples),
# and the project's own overrides fixture.
ACCEPTED = ["k8ssandracluster-demo.yaml", "k8ssandracluster-multi-kind.yaml", "k8ssandracluster-fixture-multi-dc.yaml",
            "k8ssandracluster-fixture-multi-dc-mixed.yaml", "k8ssandracluster-overrides.yaml"]
UNPATCHED_DC_CRD = crds_and_identity.CASSANDRADATACENTER_CRDS["unpatched"]

pytestmark = [pytest.mark.integration, NEEDS_OPERATOR_SOURCE]


@pytest.fixture(scope="module")
def op_sandbox(tmp_path_factory, control_plane_binaries):
    """4 clusters, each registered with the operator (cluster 0 too: the upstream fixtures put a
    datacenter in the control plane's own cluster)."""
    with operator_sandbox(tmp_path_factory, 4, "fidelity-sandbox") as state:
        directory, c0 = Path(state.directory), state.clusters[0]
        for c in state.clusters:  # each registration restarts the operator once
            before = operator.wait_ready(directory, timeout=60)
            r = invoke("create-clientconfig", "--src-kubeconfig", c.kubeconfig, "--dest-kubeconfig", c0.kubeconfig,
                       "--in-cluster-kubeconfig", c.in_cluster_kubeconfig, "--allow-self",
                       "--output-dir", str(directory / "clientconfigs"))
            assert r.exit_code == 0, r.output
            operator.wait_ready(directory, timeout=60, after_runs=before["runs"])
        yield state


@pytest.fixture(scope="module")
def clients(op_sandbox):
    out = {c.context: kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context) for c in op_sandbox.clusters}
    yield out
    for client in out.values():
        client.close()


# --- the comparison ------------------------------------------------------------

def leaves(obj: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON value by path. Empty maps and lists are left out: the operator writes
    Go zero values (`resources: {}`) that mean what their absence means."""
    if isinstance(obj, dict):
        return {p: v for k, sub in obj.items() for p, v in leaves(sub, f"{path}.{k}" if path else k).items()}
    if isinstance(obj, list):
        return {p: v for i, sub in enumerate(obj) for p, v in leaves(sub, f"{path}[{i}]").items()}
    return {} if obj is None else {path: obj}


def owned_view(obj: dict | None) -> dict:
    """What both write: labels, annotations, owners, and spec/type/data. The resource hash is left
    out for the datacenter only (the operator's is not computable there: README)."""
    if obj is None:
        return {}
    meta = obj.get("metadata") or {}
    view = {"metadata": {"labels": meta.get("labels"), "ownerReferences": meta.get("ownerReferences"),
                         "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                                         if k != cdc.HASH_ANNOTATION or obj.get("kind") != cdc.KIND}}}
    view |= {k: obj[k] for k in ("spec", "type", "data") if k in obj}
    return view


def differences(operator_obj: dict | None, k8sctl_obj: dict | None) -> tuple[int, list[str]]:
    """(fields compared, one line per field that differs). Secret values are never shown."""
    theirs, ours = leaves(owned_view(operator_obj)), leaves(owned_view(k8sctl_obj))
    secret = (operator_obj or k8sctl_obj or {}).get("kind") == "Secret"
    missing = object()

    def show(path: str, v: Any) -> str:
        if v is missing:
            return "(absent)"
        return "(a value)" if secret and path.startswith("data.") else repr(v)

    lines = []
    for path in sorted(theirs.keys() | ours.keys()):
        a, b = theirs.get(path, missing), ours.get(path, missing)
        if a != b or type(a) is not type(b):
            lines.append(f"{path}: operator {show(path, a)}, k8sctl {show(path, b)}")
    return len(theirs.keys() | ours.keys()), lines


# --- the two sides ---------------------------------------------------------------

def load(name: str) -> dict:
    doc = yaml.safe_load((FIXTURES / name).read_text())
    doc["metadata"]["namespace"] = NS
    return doc


def operator_side(op_sandbox, clients, doc: dict) -> dict:
    """The operator's first datacenter, once it is past the Ready gate, and the objects beside it."""
    first = doc["spec"]["cassandra"]["datacenters"][0]
    context = first.get("k8sContext") or op_sandbox.clusters[0].context
    remote, control = clients[context], clients[op_sandbox.clusters[0].context]
    name, dc_name = doc["metadata"]["name"], first["metadata"]["name"]
    # It waits for its superuser Secret's replication first (a requeue of up to about 10 s).
    dc = wait_for(f"the operator's {dc_name}", lambda: remote.get_or_none(cdc.RESOURCE, dc_name, NS))
    # cass-operator does not run here: mark-ready stands in for it, and the operator's gate opens.
    assert any(f"{dc_name} marked Ready" in line for line in cassandradatacenters.mark_ready(Path(op_sandbox.directory)))

    def ready_in_status():
        status = control.get(k8c.RESOURCE, name, NS).get("status") or {}
        conds = (((status.get("datacenters") or {}).get(dc_name) or {}).get("cassandra") or {}).get("conditions")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds or [])

    wait_for(f"the operator to record {dc_name} Ready", ready_in_status)
    dc = remote.get(cdc.RESOURCE, dc_name, NS)
    volume = next(v for v in dc["spec"]["storageConfig"]["additionalVolumes"] if v["name"] == METRICS_AGENT_VOLUME)
    return {
        "context": first.get("k8sContext") or "",
        "datacenter": dc,
        "metrics agent ConfigMap": remote.get(kube.CONFIGMAP, volume["volumeSource"]["configMap"]["name"], NS),
        "superuser Secret": remote.get(kube.SECRET, dc["spec"]["superuserSecretName"], NS),
        "control-plane superuser Secret": control.get(kube.SECRET, dc["spec"]["superuserSecretName"], NS),
    }


def k8sctl_side(op_sandbox, clients, name: str, theirs: dict) -> tuple[reconcile.DatacenterReport, reconcile.ReconcileResult, dict]:
    """What `k8sctl reconcile NAME --dry-run` builds for the same K8ssandraCluster (read from the
    control plane, as the operator left it), and k8sctl's superuser Secret for the operator's password."""
    control = clients[op_sandbox.clusters[0].context]
    cache = ClientCache.from_clientconfigs(control, NS)
    try:
        result = reconcile.run(reconcile.ReconcileOptions(name=name, namespace=NS, dry_run=True), cache)
    finally:
        cache.close()
    report = result.datacenters[0]
    cluster_doc = control.get(k8c.RESOURCE, name, NS)
    source = theirs["control-plane superuser Secret"]
    if theirs["superuser Secret"]["metadata"]["uid"] != source["metadata"]["uid"]:
        secret = replicated_superuser_secret(source, cluster_doc, report.namespace)
    else:  # the datacenter runs beside the K8ssandraCluster: the control plane's own, with the operator's password
        secret = superuser_secret(cluster_doc, base64.b64decode(source["data"]["password"]).decode())
    return report, result, secret


REPLICATED_SECRET = kube.Resource("replication.k8ssandra.io", "v1alpha1", "replicatedsecrets", "ReplicatedSecret")


def delete(op_sandbox, clients, doc: dict) -> None:
    """The operator removes its datacenters (its finalizer), the garbage collector the rest. Waits
    for the rest too: the next sample may reuse the name, and the operator keeps a superuser Secret
    that still exists when it starts, which the garbage collector then removes under it."""
    control = clients[op_sandbox.clusters[0].context]
    name = doc["metadata"]["name"]
    contexts = {dc.get("k8sContext") or op_sandbox.clusters[0].context for dc in doc["spec"]["cassandra"]["datacenters"]}
    superuser = superuser_secret_name(doc)
    try:
        control.delete(k8c.RESOURCE, name, NS)
    except kube.NotFound:  # its apply failed
        pass

    def all_gone() -> bool:
        return (control.get_or_none(k8c.RESOURCE, name, NS) is None
                and control.get_or_none(REPLICATED_SECRET, name, NS) is None
                and all(clients[c].get_or_none(cdc.RESOURCE, dc["metadata"]["name"], NS) is None
                        for dc in doc["spec"]["cassandra"]["datacenters"]
                        for c in [dc.get("k8sContext") or op_sandbox.clusters[0].context])
                and (superuser is None
                     or all(clients[c].get_or_none(kube.SECRET, superuser, NS) is None for c in contexts | {control.context})))

    wait_for(f"the K8ssandraCluster {name}, its datacenters and its superuser Secrets gone", all_gone)


@contextlib.contextmanager
def applied(op_sandbox, clients, doc: dict) -> Iterator[None]:
    """The K8ssandraCluster applied for the block, and deleted with what the operator made for it
    after the block, whatever the block raised: a leftover fails the tests after it."""
    try:
        clients[op_sandbox.clusters[0].context].apply(k8c.RESOURCE, doc, force=True)
        yield
    finally:
        delete(op_sandbox, clients, doc)


@pytest.mark.parametrize("sample", ACCEPTED)
def test_reconcile_builds_what_the_operator_writes(op_sandbox, clients, sample):
    doc = load(sample)
    with applied(op_sandbox, clients, doc):
        theirs = operator_side(op_sandbox, clients, doc)
        report, result, secret = k8sctl_side(op_sandbox, clients, doc["metadata"]["name"], theirs)
        ours = {"datacenter": report.desired, "metrics agent ConfigMap": report.agent_config,
                "superuser Secret": secret}
        compared, found = 0, []
        for what, obj in ours.items():
            n, lines = differences(theirs[what], obj)
            compared += n
            found += [f"{what} {line}" for line in lines]
        print(f"\nfidelity {sample}: {compared} fields compared, {len(found)} differences")
        for line in found:
            print(f"  {line}")
        assert found == []
        # Nothing the operator made is rewritten: its datacenter (its own hash), its ConfigMap and
        # its superuser Secret are unchanged for k8sctl.
        assert (report.action, report.agent_action) == ("unchanged", "unchanged")
        copies = {(c["context"], c["namespace"]): c["action"] for c in result.as_dict()["superuserSecret"]["copies"]}
        assert set(copies.values()) == {"unchanged"}, copies
        assert report.desired["metadata"]["annotations"][cdc.HASH_ANNOTATION] \
            != theirs["datacenter"]["metadata"]["annotations"][cdc.HASH_ANNOTATION]  # not computable here: README


def test_a_sample_both_refuse(op_sandbox, clients):
    """The documented 4.0.1 sample without MCAC: the operator records the error and creates no
    datacenter; k8sctl refuses it before writing anything, with the same reason."""
    doc = load("k8ssandracluster-docs-multi-cluster.yaml")
    control = clients[op_sandbox.clusters[0].context]
    with applied(op_sandbox, clients, doc):
        refusal = "new metrics endpoint is only available since Cassandra 3.11.13/4.0.4, so MCAC cannot be disabled"

        def operator_error():
            # Not its first error: a pass may also record a transient one (its cache behind a Secret it made).
            error = (control.get(k8c.RESOURCE, "demo", NS).get("status") or {}).get("error") or ""
            return error if refusal in error else None

        wait_for("the operator's error", operator_error)
        assert clients["kind-k8ssandra-1"].get_or_none(cdc.RESOURCE, "dc1", NS) is None
        r = invoke("reconcile", "demo", "--kubeconfig", op_sandbox.clusters[0].kubeconfig, "-n", NS, "--dry-run")
        assert r.exit_code == 2, r.output
        assert refusal in r.stderr


def test_unpatched_crd_the_operator_is_refused_and_k8sctl_auto_succeeds(op_sandbox, clients):
    """k8ssandra/k8ssandra#1693 on one sandbox: with cass-operator's raw CRD in the data plane, the
    real operator's datacenter is refused (`must be of type byte`), and `k8sctl reconcile
    --config-source auto` writes the same datacenter through spec.configSecret."""
    data_plane, log = clients["kind-k8ssandra-2"], Path(op_sandbox.directory) / "logs" / "operator.log"
    patched = [d for d in operator.crd_documents(operator.DEFAULT_SOURCE) if d["spec"]["group"] == "cassandra.datastax.com"]
    crds_and_identity.install_crds(data_plane, [yaml.safe_load(UNPATCHED_DC_CRD.read_text())])
    doc = {"apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster", "metadata": {"name": "unpatched", "namespace": NS},
           "spec": {"cassandra": {"serverVersion": "4.0.17", "datacenters": [{
               "metadata": {"name": "dc9"}, "k8sContext": "kind-k8ssandra-2", "size": 1,
               "storageConfig": {"cassandraDataVolumeClaimSpec": {
                   "storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                   "resources": {"requests": {"storage": "5Gi"}}}}}]}}}
    control = clients[op_sandbox.clusters[0].context]
    offset = log.stat().st_size
    control.apply(k8c.RESOURCE, doc, force=True)
    try:
        def refusal():
            text = log.read_bytes()[offset:].decode(errors="replace")
            return [line for line in text.splitlines() if "dc9" in line and "must be of type byte" in line]

        assert "spec.config" in wait_for("the operator's refusal on the unpatched CRD", refusal)[0]
        assert data_plane.get_or_none(cdc.RESOURCE, "dc9", NS) is None

        r = invoke("reconcile", "unpatched", "--kubeconfig", op_sandbox.clusters[0].kubeconfig, "-n", NS,
                   "--config-source", "auto", "-o", "json")
        assert r.exit_code == 0, r.output
        dc = data_plane.get(cdc.RESOURCE, "dc9", NS)
        assert "config" not in dc["spec"] and dc["spec"]["configSecret"] == cdc.config_secret_name("unpatched", "dc9")
        assert data_plane.get(kube.SECRET, dc["spec"]["configSecret"], NS)["data"][cdc.CONFIG_SECRET_KEY]
    finally:
        control.delete(k8c.RESOURCE, "unpatched", NS)
        try:  # k8sctl's datacenter has no finalizer: the operator may have removed it already
            data_plane.delete(cdc.RESOURCE, "dc9", NS)
        except kube.NotFound:
            pass
        wait_for("dc9 gone", lambda: data_plane.get_or_none(cdc.RESOURCE, "dc9", NS) is None)
        crds_and_identity.install_crds(data_plane, patched)
