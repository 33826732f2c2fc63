"""The real k8ssandra-operator in a sandbox of its own (2 clusters: control plane 0, data plane 1),
built from ../shared/upstream/k8ssandra-operator by `sandbox up --operator`.

No cass-operator runs in the sandbox: where the operator waits for a CassandraDatacenter to be
Ready, `mark-ready` stands in for it (these tests say where).
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl_sandbox import cassandradatacenters, crds_and_identity, operator

from .conftest import NEEDS_OPERATOR_SOURCE, invoke, operator_sandbox, wait_for

NS = crds_and_identity.OPERATOR_NAMESPACE
UNPATCHED_DC_CRD = crds_and_identity.CASSANDRADATACENTER_CRDS["unpatched"]

pytestmark = [pytest.mark.integration, NEEDS_OPERATOR_SOURCE]


@pytest.fixture(scope="module")
def op_sandbox(tmp_path_factory, control_plane_binaries):
    with operator_sandbox(tmp_path_factory, 2, "operator-sandbox") as state:
        yield state


def admin(c) -> kube.KubeClient:
    return kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)


@pytest.fixture(scope="module")
def control(op_sandbox):
    client = admin(op_sandbox.clusters[0])
    yield client
    client.close()


@pytest.fixture(scope="module")
def data_plane(op_sandbox):
    client = admin(op_sandbox.clusters[1])
    yield client
    client.close()


def status(op_sandbox) -> dict:
    r = invoke("sandbox", "status", "--dir", op_sandbox.directory, "-o", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["operator"]


def settle(op_sandbox, seconds: float = 5.0) -> dict:
    """The operator's status after it had `seconds` to react (it reacts to ClientConfig
    events within about a second); not a timing assertion, a window to observe restarts."""
    time.sleep(seconds)
    return operator.wait_ready(Path(op_sandbox.directory), timeout=60)


def register(op_sandbox, tmp_path, *extra: str):
    c0, c1 = op_sandbox.clusters
    r = invoke("create-clientconfig", "--src-kubeconfig", c1.kubeconfig, "--dest-kubeconfig", c0.kubeconfig,
               "--in-cluster-kubeconfig", c1.in_cluster_kubeconfig, "--output-dir", str(tmp_path), "-o", "json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def registered(op_sandbox, tmp_path) -> None:
    """The data plane registered and the operator serving with it: when the registration restarts
    the operator (the first time, or after another test changed it), its next run."""
    before = operator.wait_ready(Path(op_sandbox.directory), timeout=60)
    doc = register(op_sandbox, tmp_path)
    if doc["restartsOperator"]:
        operator.wait_ready(Path(op_sandbox.directory), timeout=60, after_runs=before["runs"])
    settle(op_sandbox)


def k8ssandracluster(name: str, dc: str, context: str) -> dict:
    return {
        "apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"cassandra": {
            "serverVersion": "4.0.17",
            "datacenters": [{
                "metadata": {"name": dc}, "k8sContext": context, "size": 1,
                "storageConfig": {"cassandraDataVolumeClaimSpec": {
                    "storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "5Gi"}}}},
            }],
        }},
    }


def test_operator_runs_as_its_service_account_in_a_private_mount_namespace(op_sandbox):
    s = status(op_sandbox)
    assert s["state"] == "running" and s["restarts"] == 0 and s["pid"]
    pid = s["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    kubeconfig = Path(op_sandbox.directory) / "operator" / "kubeconfig"
    assert f"--kubeconfig={kubeconfig}" in argv
    doc = kc.read_file(kubeconfig)
    assert list(doc["users"][0]["user"]) == ["token"]  # a token, no admin certificate
    sa = kube.KubeClient(doc, doc["current-context"])
    assert sa.whoami() == f"system:serviceaccount:{NS}:k8ssandra-operator"
    sa.close()
    env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in e)
    assert env["WATCH_NAMESPACE"] == NS and env["K8SSANDRA_CONTROL_PLANE"] == "true"
    assert env["TMPDIR"] == str(Path(op_sandbox.directory) / "operator" / "tmp")
    # Its own mount namespace holds the service-account namespace file; the host's does not change.
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    # /var/run is usually a symlink to /run: resolve it here, or it resolves in this namespace.
    run = Path("/var/run").resolve().relative_to("/")
    assert (Path(f"/proc/{pid}/root") / run / "secrets/kubernetes.io/serviceaccount/namespace").read_text() == NS
    assert "k8sctl-operator-run" in Path(f"/proc/{pid}/mountinfo").read_text()
    assert "k8sctl-operator-run" not in Path("/proc/self/mountinfo").read_text()
    for flag in ("--metrics-bind-address=127.0.0.1:", "--health-probe-bind-address=127.0.0.1:"):
        assert any(a.startswith(flag) for a in argv)


def test_second_sandbox_with_the_operator_is_refused(op_sandbox, tmp_path):
    r = invoke("sandbox", "up", "--clusters", "1", "--operator", "--dir", str(tmp_path / "second"))
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: the operator's webhook port 9443 (fixed in its main.go) is taken by the operator of the sandbox in "
        f"{op_sandbox.directory}: one sandbox per machine can run the operator; stop that one first"]
    assert not (tmp_path / "second" / "sandbox.json").exists()


def test_logs_command_prints_the_operators_log(op_sandbox):
    r = invoke("sandbox", "logs", "operator", "--dir", op_sandbox.directory)
    assert r.exit_code == 0
    assert operator.is_serving(r.stdout)
    r = invoke("sandbox", "logs", "nope", "--dir", op_sandbox.directory)
    assert r.exit_code == 2 and "no log 'nope'" in r.stderr and "operator" in r.stderr


def test_registration_restarts_it_once_and_an_unchanged_rerun_not_at_all(op_sandbox, control, tmp_path):
    before = operator.wait_ready(Path(op_sandbox.directory), timeout=60)
    doc = register(op_sandbox, tmp_path / "first")
    assert [o["action"] for o in doc["registrations"][0]["objects"]] == ["created", "created"]
    operator.wait_ready(Path(op_sandbox.directory), timeout=60, after_runs=before["runs"])
    after = settle(op_sandbox)
    assert after["restarts"] == before["restarts"] + 1
    assert "shutting down the operator" in after["lastExit"]["reason"]
    # The new run loaded it: the operator writes its hashes on the ClientConfigs it reads at start.
    name = doc["registrations"][0]["name"]
    cc = control.get(clientconfig_api.resource("v1beta1"), name, NS)
    assert {"k8ssandra.io/resource-hash", "k8ssandra.io/secret-hash"} <= set(cc["metadata"]["annotations"])

    rerun = register(op_sandbox, tmp_path / "again")
    assert [o["action"] for o in rerun["registrations"][0]["objects"]] == ["unchanged", "unchanged"]
    assert control.get(clientconfig_api.resource("v1beta1"), name, NS)["metadata"]["resourceVersion"] \
        == cc["metadata"]["resourceVersion"]
    final = settle(op_sandbox)
    assert final["restarts"] == after["restarts"] and final["pid"] == after["pid"]


def test_rotation_restarts_it_exactly_once(op_sandbox, control, tmp_path):
    register(op_sandbox, tmp_path / "first")  # unchanged when the test above ran first
    before = settle(op_sandbox)
    name = op_sandbox.clusters[1].context

    def hashes() -> dict:
        return control.get(clientconfig_api.resource("v1beta1"), name, NS)["metadata"]["annotations"]

    old = hashes()
    # A new token: new Secret data. --wait-operator returns once the real operator has reloaded it.
    rotated = register(op_sandbox, tmp_path, "--token-source", "request", "--wait-operator=90s")
    # The ClientConfig changes only in its recorded token source (an annotation): no restart of its own.
    assert [o["action"] for o in rotated["registrations"][0]["objects"]] == ["updated", "updated"]
    assert rotated["registrations"][0]["operator"] == "loaded"
    assert hashes()["k8ssandra.io/secret-hash"] != old["k8ssandra.io/secret-hash"]  # its reload, already seen
    operator.wait_ready(Path(op_sandbox.directory), timeout=60, after_runs=before["runs"])
    after = settle(op_sandbox)
    assert after["restarts"] == before["restarts"] + 1
    assert "or secret has been modified, shutting down the operator" in after["lastExit"]["reason"]
    # Its reload shows on the cluster: at start it writes the new Secret's hash on the ClientConfig.
    new = hashes()
    assert new["k8ssandra.io/secret-hash"] != old["k8ssandra.io/secret-hash"]
    assert new["k8ssandra.io/resource-hash"] == old["k8ssandra.io/resource-hash"]


def test_k8ssandracluster_gives_a_datacenter_in_the_data_plane(op_sandbox, control, data_plane, tmp_path):
    registered(op_sandbox, tmp_path)
    context = op_sandbox.clusters[1].context
    control.apply(k8c.RESOURCE, k8ssandracluster("op-demo", "dc1", context), force=True)
    dc = wait_for("CassandraDatacenter dc1 in the data plane",
                  lambda: data_plane.get_or_none(cdc.RESOURCE, "dc1", NS))
    assert dc["spec"]["clusterName"] == "op-demo"
    assert dc["metadata"]["labels"]["k8ssandra.io/cluster-name"] == "op-demo"
    assert "k8ssandra.io/resource-hash" in dc["metadata"]["annotations"]
    # cass-operator does not run here: mark-ready stands in for it, and the operator goes on.
    marked = cassandradatacenters.mark_ready(Path(op_sandbox.directory))
    assert any("dc1 marked Ready" in line for line in marked)

    def dc_ready_in_status():
        kc_status = control.get(k8c.RESOURCE, "op-demo", NS).get("status") or {}
        conds = (((kc_status.get("datacenters") or {}).get("dc1") or {}).get("cassandra") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for("the operator to record dc1 Ready in the K8ssandraCluster's status", dc_ready_in_status)
    # Past the gate it wants Cassandra pods (to set replication): none run here, so it stops there.
    wait_for("the operator's next step", lambda: "no pods in READY state found in datacenter dc1"
             in (control.get(k8c.RESOURCE, "op-demo", NS).get("status") or {}).get("error", ""))


def test_no_token_in_logs_or_arguments(op_sandbox, control, data_plane):
    tokens = [base64.b64decode(c.get(kube.SECRET, "k8ssandra-operator-token", NS)["data"]["token"]).decode()
              for c in (control, data_plane)]
    logs = Path(op_sandbox.directory) / "logs"
    texts = [(logs / f"{n}.log").read_text(errors="replace") for n in ("operator", "operator-supervisor")]
    s = status(op_sandbox)
    texts.append(Path(f"/proc/{s['pid']}/cmdline").read_bytes().decode(errors="replace"))
    assert len(texts[0]) > 10000  # the operator has been talking (debug level, as its Deployment runs it)
    for t in tokens:
        assert all(t not in text for text in texts)


def test_webhook_refuses_an_unknown_context(op_sandbox, control):
    with pytest.raises(kube.ApiError, match="vk8ssandracluster.kb.io"):
        control.apply(k8c.RESOURCE, k8ssandracluster("op-bad", "dc9", "kind-nowhere"), force=True)
    assert control.get_or_none(k8c.RESOURCE, "op-bad", NS) is None


def test_unpatched_datacenter_crd_refuses_the_operators_datacenter(op_sandbox, control, data_plane, tmp_path):
    """cass-operator's raw CRD (spec.config a byte string, k8ssandra/k8ssandra#1693): the real
    operator's CassandraDatacenter is refused. (`k8sctl reconcile --config-source auto`
    succeeding on the same sandbox: test_fidelity.py.)"""
    registered(op_sandbox, tmp_path)
    patched = operator.crd_documents(operator.DEFAULT_SOURCE)
    unpatched = yaml.safe_load(UNPATCHED_DC_CRD.read_text())
    crds_and_identity.install_crds(data_plane, [unpatched])
    try:
        log = Path(op_sandbox.directory) / "logs" / "operator.log"
        offset = log.stat().st_size
        control.apply(k8c.RESOURCE, k8ssandracluster("op-unpatched", "dc2", op_sandbox.clusters[1].context),
                      force=True)

        def refusal():
            text = log.read_bytes()[offset:].decode(errors="replace")
            return [line for line in text.splitlines() if "dc2" in line and "must be of type byte" in line]

        lines = wait_for("the operator's refusal on the unpatched CRD", refusal)
        assert "CassandraDatacenter" in lines[0] and "spec.config" in lines[0]
        assert data_plane.get_or_none(cdc.RESOURCE, "dc2", NS) is None
    finally:
        control.delete(k8c.RESOURCE, "op-unpatched", NS)
        crds_and_identity.install_crds(data_plane, [d for d in patched if d["spec"]["group"] == "cassandra.datastax.com"])


def test_a_broken_clientconfig_makes_it_crash_loop_until_removed(op_sandbox, control):
    """What create-clientconfig's verification prevents: a ClientConfig whose Secret is missing
    stops the operator at start-up, again and again (the supervisor backs off, as for a pod)."""
    before = operator.wait_ready(Path(op_sandbox.directory), timeout=60)
    cc = {"apiVersion": "config.k8ssandra.io/v1beta1", "kind": "ClientConfig",
          "metadata": {"name": "broken", "namespace": NS},
          "spec": {"contextName": "kind-broken", "kubeConfigSecret": {"name": "no-such-secret"}}}
    verify = ["clientconfig", "verify", "--kubeconfig", op_sandbox.clusters[0].kubeconfig, "-o", "json"]
    control.apply(clientconfig_api.resource("v1beta1"), cc, force=True)
    try:
        # `clientconfig verify` agrees with the operator: it fails on the ClientConfig that stops it.
        r = invoke(*verify)
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert doc["failed"] == ["broken"], r.stdout

        def crashing():
            s = operator.read_status(Path(op_sandbox.directory))
            return s if s["restarts"] >= before["restarts"] + 2 and (s["lastExit"] or {}).get("code") == 1 else None

        s = wait_for("the operator failing at start-up", crashing, timeout=60)
        assert "unable to create manager cluster connections" in s["lastExit"]["reason"]
        sup_log = Path(op_sandbox.directory) / "logs" / "operator-supervisor.log"

        def backed_off():  # the supervisor writes its status before this line: waited for, not read at once
            return [line for line in sup_log.read_text().splitlines()
                    if "exited (code 1)" in line and "unable to create manager cluster connections" in line
                    and re.search(r"restart #\d+ in \d+s$", line)]

        wait_for("the supervisor's back-off line", backed_off, timeout=30)
    finally:
        control.delete(clientconfig_api.resource("v1beta1"), "broken", NS)
    operator.wait_ready(Path(op_sandbox.directory), timeout=90)
    # And passes once the operator can start again.
    r = invoke(*verify)
    assert r.exit_code == 0, r.output


def test_without_a_private_mount_namespace_up_says_so_and_runs_without_it(control_plane_binaries, tmp_path, monkeypatch):
    """The machine condition (no root, no user namespaces) is stood in for by its probe's answer."""
    monkeypatch.setattr(operator, "unavailable_reason", lambda: "unshare --mount failed (Operation not permitted)")
    d = tmp_path / "sb"
    r = invoke("sandbox", "up", "--clusters", "1", "--operator", "--dir", str(d), "-o", "json")
    try:
        assert r.exit_code == 0, r.output
        warning, *steps = r.stderr.strip().splitlines()
        assert warning == "warning: running without the operator: unshare --mount failed (Operation not permitted)"
        assert steps and all(re.match(r"\[ *\d+(m\d\ds|s)\] ", line) for line in steps), steps  # up's steps, one line each
        up = json.loads(r.stdout)
        assert up["operator"] is None and up["k8ssandra"] is True
        assert not (d / "run" / "operator-supervisor.pid").exists() and not (d / "operator").exists()
    finally:
        invoke("sandbox", "down", "--dir", str(d))
