"""The sandbox is the real thing: TLS, RBAC, service-account tokens, controllers."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.cli import app
from k8sctl.errors import SandboxError, UsageError
from k8sctl_sandbox import binaries, cluster, crds_and_identity, manifests, processes

from ..unit.test_interrupts import processes_mentioning
from .conftest import CLUSTERS, UNPATCHED, admin_client


class Leftovers:
    """What a test starts, stopped even when it fails: `up` processes (SIGTERM: they clean up), then sandboxes."""

    def __init__(self):
        self.dirs: list[Path] = []
        self.procs: list[subprocess.Popen] = []

    def sandbox(self, d: Path) -> Path:
        self.dirs.append(d)
        return d

    def process(self, p: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
        for d in self.dirs:
            if (d / "run").exists():
                cluster.down(d)


@pytest.fixture
def leftovers():
    tracked = Leftovers()
    yield tracked
    tracked.stop()


def token_client(c: cluster.ClusterInfo, token: str) -> kube.KubeClient:
    """A client for cluster `c` that authenticates with a bearer token only."""
    admin = kc.read_file(Path(c.kubeconfig))
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    doc = kc.build_kubeconfig(cluster_name="c", server=c.server, ca_pem=base64.b64decode(ca),
                              user_name="u", token=token, context_name="t")
    return kube.KubeClient(doc, "t")


def test_admin_kubeconfig_uses_verified_tls(sandbox, admins):
    version = admins[0].request("GET", "/version")
    assert version["gitVersion"] == "v1.37.2"
    assert admins[0].whoami() == "admin"
    # Each cluster has its own CA: cluster 1's CA must not verify cluster 0's server.
    doc = kc.read_file(Path(sandbox.clusters[0].kubeconfig))
    other = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = other["clusters"][0]["cluster"]["certificate-authority-data"]
    wrong_ca = kube.KubeClient(doc, sandbox.clusters[0].context)
    with pytest.raises(kube.Unreachable, match="certificate verify failed"):
        wrong_ca.request("GET", "/version")


def test_kubeconfig_files_and_contexts(sandbox):
    merged = kc.read_file(Path(sandbox.kubeconfig))
    assert kc.context_names(merged) == [f"kind-k8ssandra-{i}" for i in range(CLUSTERS)]
    for c in sandbox.clusters:
        path = Path(c.kubeconfig)
        assert path.name == f"{c.name}.yaml" and path.parent.name == "kubeconfigs"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert kc.context_names(kc.read_file(path)) == [c.context]
        assert kc.select_context(kc.read_file(Path(c.in_cluster_kubeconfig)), None).server == c.server


def test_rbac_denies_then_allows(sandbox, admins, namespace_factory):
    ns = namespace_factory(1)
    admin = admins[1]
    admin.create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}, ns)
    token = admin.request("POST", kube.SERVICEACCOUNT.path(ns, "reader", "token"), {"spec": {}})["status"]["token"]
    sa = token_client(sandbox.clusters[1], token)
    with pytest.raises(kube.ApiError) as denied:
        sa.list(kube.POD, ns)
    assert denied.value.status == 403
    admin.create(kube.ROLE, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}, ns)
    admin.create(kube.ROLEBINDING, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}, ns)
    deadline = time.monotonic() + 30  # the authorizer's cache is a moment behind, longer when loaded
    while True:
        try:
            assert sa.list(kube.POD, ns) == []
            break
        except kube.ApiError as e:
            assert e.status == 403 and time.monotonic() < deadline
            time.sleep(0.1)


def test_token_secret_is_filled_and_authenticates(sandbox, admins, namespace_factory):
    ns = namespace_factory(2)
    admin = admins[2]
    admin.create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "legacy"}}, ns)
    admin.create(kube.SECRET, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                               "metadata": {"name": "legacy-token",
                                            "annotations": {"kubernetes.io/service-account.name": "legacy"}}}, ns)
    crds_and_identity.wait_token_filled(admin, ns, "legacy-token", timeout=30)
    secret = admin.get(kube.SECRET, "legacy-token", ns)
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert token_client(sandbox.clusters[2], token).whoami() == f"system:serviceaccount:{ns}:legacy"
    admin_doc = kc.read_file(Path(sandbox.clusters[2].kubeconfig))
    assert secret["data"]["ca.crt"] == admin_doc["clusters"][0]["cluster"]["certificate-authority-data"]


def test_token_request_authenticates(sandbox, admins):
    resp = admins[3].request("POST", kube.SERVICEACCOUNT.path("default", "default", "token"),
                             {"spec": {"expirationSeconds": 600}})
    assert resp["status"]["expirationTimestamp"]
    assert token_client(sandbox.clusters[3], resp["status"]["token"]).whoami() == "system:serviceaccount:default:default"


def test_kube_root_ca_matches_kubeconfig(sandbox, admins):
    for i in (0, 4):
        cm = admins[i].get(kube.CONFIGMAP, "kube-root-ca.crt", "default")
        doc = kc.read_file(Path(sandbox.clusters[i].kubeconfig))
        assert cm["data"]["ca.crt"].encode() == kc.ca_pem_of(doc["clusters"][0]["cluster"])


def test_k8ssandra_preparation(sandbox, admins):
    admin = admins[0]
    sa = admin.get(kube.SERVICEACCOUNT, "k8ssandra-operator", "k8ssandra-operator")
    assert sa["secrets"] == [{"name": "k8ssandra-operator-token"}]
    assert admin.api_versions("config.k8ssandra.io") == ["v1beta1"]
    assert admin.api_versions("k8ssandra.io") == ["v1alpha1"]
    assert admin.api_versions("cassandra.datastax.com") == ["v1beta1"]
    assert admins[4].api_versions("config.k8ssandra.io") == []
    assert admins[5].api_versions("config.k8ssandra.io") == ["v1alpha1"]
    # The operator's Role is namespaced: nothing cluster-wide.
    secret = admin.get(kube.SECRET, "k8ssandra-operator-token", "k8ssandra-operator")
    op = token_client(sandbox.clusters[0], base64.b64decode(secret["data"]["token"]).decode())
    assert isinstance(op.list(cdc.RESOURCE, "k8ssandra-operator"), list)  # allowed: no 403
    with pytest.raises(kube.ApiError) as e:
        op.list(cdc.RESOURCE, "default")
    assert e.value.status == 403


def _sample_objects() -> list[dict]:
    here = Path(__file__).parent.parent / "fixtures"
    docs = [d for f in sorted(here.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return [d for d in docs if d.get("kind") in ("K8ssandraCluster", "ClientConfig", "CassandraDatacenter")]


# What kube-apiserver adds to a CRD's spec when it stores one (nothing else may differ).
CRD_SERVER_DEFAULTS = {"conversion": {"strategy": "None"}}


def test_sandbox_crds_equal_the_vendored_files(sandbox, admins):
    """What the sandbox's clusters serve is the vendored CRDs field for field: no hand edit creeps back."""
    for index, form in ((0, "production"), (UNPATCHED, "unpatched")):
        files = crds_and_identity.crd_files(form)
        live_names = {c["metadata"]["name"] for c in admins[index].list(kube.CRD)}
        assert live_names == {d["metadata"]["name"] for d in crds_and_identity.crd_documents(form)}
        for path, vendored in zip(files, crds_and_identity.crd_documents(form)):
            live = admins[index].get(kube.CRD, vendored["metadata"]["name"])
            assert live["spec"] == {**CRD_SERVER_DEFAULTS, **vendored["spec"]}, path
            assert live["metadata"].get("annotations") == vendored["metadata"].get("annotations"), path
            assert set(vendored) == {"apiVersion", "kind", "metadata", "spec"}, path
    schemas = {}
    for index in (0, UNPATCHED):
        crd = admins[index].get(kube.CRD, "cassandradatacenters.cassandra.datastax.com")
        schemas[index] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "config" not in schemas[0]["properties"]
    assert schemas[UNPATCHED]["properties"]["config"]["format"] == "byte"


def _datacenter(**spec) -> dict:
    dc = yaml.safe_load((Path(__file__).parent.parent / "fixtures" / "cassandradatacenter.yaml").read_text())
    dc["spec"].update(spec)
    return dc


def test_unpatched_crd_refuses_an_inline_config_object(sandbox, admins):
    """The production CRD accepts the object cass-operator reads in spec.config; the unpatched one refuses it."""
    inline = _datacenter(config={"cassandra-yaml": {"num_tokens": 16}})
    admins[0].create(cdc.RESOURCE, inline, "default", dry_run=True)
    with pytest.raises(kube.ApiError, match="spec.config in body must be of type byte") as refused:
        admins[UNPATCHED].create(cdc.RESOURCE, inline, "default", dry_run=True)
    assert refused.value.status == 422
    # configSecret, the way through, is accepted by both.
    for index in (0, UNPATCHED):
        admins[index].create(cdc.RESOURCE, _datacenter(configSecret="dc1-config"), "default", dry_run=True)
    # What `k8sctl reconcile` builds: accepted by the production CRD; on the unpatched one
    # refused for spec.config only.
    from k8sctl.datacenters import build_datacenters

    built = 0
    for name in ("k8ssandracluster-demo.yaml", "k8ssandracluster-overrides.yaml"):
        kc_doc = yaml.safe_load((Path(__file__).parent.parent / "fixtures" / name).read_text())
        kc_doc["metadata"]["namespace"] = "default"
        for dc in build_datacenters(kc_doc):
            assert isinstance(dc.object["spec"]["config"], dict)
            admins[0].create(cdc.RESOURCE, dc.object, "default", dry_run=True)
            with pytest.raises(kube.ApiError, match="spec.config in body must be of type byte"):
                admins[UNPATCHED].create(cdc.RESOURCE, dc.object, "default", dry_run=True)
            without_config = {**dc.object, "spec": {k: v for k, v in dc.object["spec"].items() if k != "config"}}
            admins[UNPATCHED].create(cdc.RESOURCE, without_config, "default", dry_run=True)
            built += 1
    assert built == 5


def test_production_crds_accept_the_upstream_samples(sandbox, admins):
    objects = _sample_objects()
    assert len(objects) >= 3
    for obj in objects:
        resource = clientconfig_api.resource("v1beta1") if obj["kind"] == "ClientConfig" else manifests.KINDS[obj["kind"]]
        admins[0].create(resource, obj, "default", dry_run=True)
    bad_size = {"apiVersion": "k8ssandra.io/v1alpha1", "kind": "K8ssandraCluster", "metadata": {"name": "bad"},
                "spec": {"cassandra": {"serverVersion": "4.0.1", "datacenters": [{"metadata": {"name": "dc1"}, "size": 0}]}}}
    with pytest.raises(kube.ApiError) as refused:
        admins[0].create(k8c.RESOURCE, bad_size, "default", dry_run=True)
    assert refused.value.status == 422 and "size" in str(refused.value)


@pytest.mark.parametrize("minor", list(binaries.KUBERNETES_RELEASES))
def test_each_kubernetes_version_runs_the_k8ssandra_preparation(tmp_path, minor):
    """Every supported minor, where its binaries are cached (CI builds only the default: a cold
    build is 7 minutes of 2 cores). Build one with `k8sctl sandbox binaries --kubernetes-version`."""
    release = binaries.KUBERNETES_RELEASES[minor]
    if release not in binaries.cached_releases():
        pytest.skip(f"Kubernetes {release} is not cached: build it with "
                    f"'k8sctl sandbox binaries --kubernetes-version {minor}' (about 7 minutes on 2 cores)")
    bins = binaries.ensure(allow_build=False, kubernetes_version=release)
    d = tmp_path / f"k8s-{minor}"
    state = cluster.up(d, 3, bins)
    try:
        for c, form in zip(state.clusters, ("production", "production", "unpatched")):
            crds_and_identity.install(c.kubeconfig, c.context, form)
        admin = admin_client(state.clusters[0])
        assert admin.request("GET", "/version")["gitVersion"] == release
        assert admin.api_versions("k8ssandra.io") == ["v1alpha1"]
        assert admin.whoami() == "admin"
        # The workflows themselves on this version: register both data planes, reconcile a
        # two-datacenter cluster (one per CassandraDatacenter CRD form), a second run writes nothing.
        runner = CliRunner()
        for c in state.clusters[1:]:
            r = runner.invoke(app, ["create-clientconfig", "--src-kubeconfig", c.kubeconfig, "--in-cluster-kubeconfig",
                                    c.in_cluster_kubeconfig, "--dest-kubeconfig", state.clusters[0].kubeconfig])
            assert r.exit_code == 0, r.output
        doc = yaml.safe_load((Path(__file__).parent.parent / "fixtures" / "k8ssandracluster-demo.yaml").read_text())
        doc["metadata"]["namespace"] = crds_and_identity.OPERATOR_NAMESPACE
        doc["spec"]["cassandra"]["datacenters"] = [{"metadata": {"name": f"dc{i}"}, "k8sContext": c.context, "size": 1}
                                                   for i, c in enumerate(state.clusters[1:], start=1)]
        admin.apply(k8c.RESOURCE, doc, force=True)
        argv = ["reconcile", "demo", "--kubeconfig", state.clusters[0].kubeconfig, "--no-gate", "-o", "json"]
        first = json.loads(runner.invoke(app, argv).stdout)
        assert [(d["action"], d["configSource"]) for d in first["datacenters"]] == [
            ("created", "inline"), ("created", "secret")]
        again = json.loads(runner.invoke(app, argv).stdout)
        assert [d["action"] for d in again["datacenters"]] == ["unchanged", "unchanged"]
        admin.close()
    finally:
        cluster.down(d)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_down_leaves_no_process_or_port(tmp_path, control_plane_binaries, leftovers):
    d = leftovers.sandbox(tmp_path / "sb")
    state = cluster.up(d, 1, control_plane_binaries)
    pids = list(processes.running(d / "run").values())
    ports = [state.clusters[0].port, state.clusters[0].kcm_port, int(state.etcd_url.rsplit(":", 1)[1])]
    deadline = time.monotonic() + 10  # the controller manager may open its port after readiness
    while not all(_port_open(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids) == 3 and all(_port_open(p) for p in ports)
    cluster.down(d)
    assert not any(processes.pid_alive(p) for p in pids)
    assert not any(_port_open(p) for p in ports)
    assert not d.exists()


def test_two_sandboxes_side_by_side(tmp_path, control_plane_binaries, sandbox):
    d = tmp_path / "second"
    state = cluster.up(d, 1, control_plane_binaries)
    try:
        assert state.clusters[0].port not in [c.port for c in sandbox.clusters]
        assert admin_client(state.clusters[0]).request("GET", "/version")["gitVersion"] == "v1.37.2"
    finally:
        cluster.down(d)


def test_down_never_stops_another_sandboxs_process(tmp_path, control_plane_binaries):
    """Issue 8 item 5: sandbox sb's API server died and its pid went to sandbox sb-2's API server
    (whose command line contains sb's folder). `down` of sb must leave it running."""
    d, d2 = tmp_path / "sb", tmp_path / "sb-2"
    cluster.up(d, 1, control_plane_binaries)
    try:
        other = cluster.up(d2, 1, control_plane_binaries)
        victim = processes.running(d2 / "run")["kube-apiserver-k8ssandra-0"]
        assert str(d.resolve()) in " ".join(processes.command_line(victim))
        pidfile = d / "run" / "kube-apiserver-k8ssandra-0.pid"
        record = processes.ProcessRecord.read(pidfile)
        processes.stop_all(d / "run", names=["kube-apiserver-k8ssandra-0"], grace=5)
        pidfile.write_text(processes.ProcessRecord(victim, record.start_time, record.argv).to_json())
        stopped = cluster.down(d)
        assert "kube-apiserver-k8ssandra-0" not in stopped and sorted(stopped) == [
            "etcd", "kube-controller-manager-k8ssandra-0"]
        assert processes.pid_alive(victim)
        assert admin_client(other.clusters[0]).request("GET", "/version")["gitVersion"] == "v1.37.2"
    finally:
        cluster.down(d2)
        if d.exists():
            cluster.down(d)


def with_fake_apiserver(tmp_path: Path, real, script: str):
    """The real etcd and controller manager with a kube-apiserver that runs `script` (sh)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kube-apiserver").write_text("#!/bin/sh\n" + script)
    (fake / "kube-apiserver").chmod(0o755)
    return type(real)(real.etcd, fake / "kube-apiserver", real.kube_controller_manager, {})


def test_crashing_binary_is_reported_and_nothing_is_left(tmp_path, control_plane_binaries):
    bins = with_fake_apiserver(tmp_path, control_plane_binaries, "echo 'boom: cannot start' >&2\nexit 3\n")
    d = tmp_path / "crash"
    with pytest.raises(SandboxError, match=r"kube-apiserver-k8ssandra-0 exited at start \(exit code 3\); read .*kube-apiserver-k8ssandra-0.log") as e:
        cluster.up(d, 1, bins)
    assert processes.running(d / "run") == {}
    assert not (d / "sandbox.json").exists()
    # The log it points at is kept.
    log = Path(str(e.value).rsplit("read ", 1)[1])
    assert log.is_file() and "boom: cannot start" in log.read_text()
    assert processes_mentioning(str(d.resolve())) == []


def test_bad_input(tmp_path, control_plane_binaries):
    with pytest.raises(UsageError, match="at least 1"):
        cluster.up(tmp_path / "x", 0, control_plane_binaries)
    with pytest.raises(UsageError, match="at most 16"):
        cluster.up(tmp_path / "x", 17, control_plane_binaries)
    for timeout in (float("nan"), float("inf"), 0.0):
        with pytest.raises(UsageError, match="--timeout must be a positive number of seconds"):
            cluster.up(tmp_path / "x", 1, control_plane_binaries, timeout=timeout)
    assert not (tmp_path / "x").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create sandbox folder"):
        cluster.up(ro / "file" / "sub", 1, control_plane_binaries)


def test_cli_up_status_down(tmp_path, control_plane_binaries, leftovers):
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(control_plane_binaries.kube_apiserver.parent)}
    k8sctl = [sys.executable, "-m", "k8sctl"]
    d = leftovers.sandbox(tmp_path / "cli")
    bad = subprocess.run(k8sctl + ["sandbox", "up", "--clusters", "0", "--dir", str(d)], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--clusters must be at least 1" in bad.stderr and "Traceback" not in bad.stderr
    up = subprocess.run(k8sctl + ["sandbox", "up", "--clusters", "1", "--dir", str(d), "-o", "json"], env=env,
                        capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert yaml.safe_load(up.stdout)["clusters"][0]["context"] == "kind-k8ssandra-0"
    st = subprocess.run(k8sctl + ["sandbox", "status", "--dir", str(d), "-o", "json"], env=env, capture_output=True, text=True)
    assert st.returncode == 0 and yaml.safe_load(st.stdout)["clusters"][0]["ready"] is True
    down = subprocess.run(k8sctl + ["sandbox", "down", "--dir", str(d)], env=env, capture_output=True, text=True)
    assert down.returncode == 0 and not d.exists()
    gone = subprocess.run(k8sctl + ["sandbox", "status", "--dir", str(d)], env=env, capture_output=True, text=True)
    assert gone.returncode == 2 and "no sandbox in" in gone.stderr


def _up_in_background(d: Path, control_plane_binaries, *args: str) -> subprocess.Popen:
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(control_plane_binaries.kube_apiserver.parent)}
    return subprocess.Popen([sys.executable, "-m", "k8sctl", "sandbox", "up", "--dir", str(d), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(d: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list((d / "run").glob(pattern)):
        assert time.monotonic() < deadline and proc.poll() is None, proc.poll()
        time.sleep(0.05)


def _assert_nothing_left(d: Path) -> None:
    assert processes_mentioning(str(d.resolve())) == []
    assert not (d / "sandbox.json").exists() and not (d / "run").exists()
    # The logs stay: a failed or interrupted run is what one wants to read about.
    assert (d / "logs" / "etcd.log").is_file()


def test_ctrl_c_during_up_leaves_nothing_running(tmp_path, control_plane_binaries, leftovers):
    d = tmp_path / "interrupted"
    proc = leftovers.process(_up_in_background(leftovers.sandbox(d), control_plane_binaries, "--clusters", "3"))
    _wait_for(d, "kube-apiserver-*.pid", proc)  # interrupt while API servers start
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "error: interrupted: stopped everything this run had started" in err
    assert "Traceback" not in err
    _assert_nothing_left(d)


def test_second_ctrl_c_does_not_stop_the_cleanup(tmp_path, control_plane_binaries, leftovers):
    d = tmp_path / "twice"
    proc = leftovers.process(_up_in_background(leftovers.sandbox(d), control_plane_binaries, "--clusters", "3"))
    _wait_for(d, "kube-controller-manager-*.pid", proc)
    notice = "stopping what this run started; wait a few seconds"
    lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    proc.send_signal(signal.SIGINT)
    # Again until the cleanup says it got one: a second Ctrl-C that comes before the cleanup has
    # started (signals are held while a process is spawned) is only the first one again.
    deadline = time.monotonic() + 20
    while not any(notice in line for line in lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert notice in err and "Traceback" not in err
    _assert_nothing_left(d)


def test_sigterm_during_up_leaves_nothing_running(tmp_path, control_plane_binaries, leftovers):
    d = tmp_path / "terminated"
    proc = leftovers.process(_up_in_background(leftovers.sandbox(d), control_plane_binaries, "--clusters", "2", "--k8ssandra"))
    _wait_for(d, "kube-controller-manager-*.pid", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert f"error: terminated by SIGTERM: stopped everything this run had started; its logs are in {d.resolve()}/logs" in err
    _assert_nothing_left(d)


def test_sigterm_while_installing_the_crds_leaves_nothing_running(tmp_path, control_plane_binaries, leftovers):
    """After the clusters are up, during --k8ssandra's CRD install (step 4 of `up`)."""
    d = tmp_path / "crds"
    proc = leftovers.process(_up_in_background(leftovers.sandbox(d), control_plane_binaries, "--clusters", "2", "--k8ssandra"))
    seen = []
    for line in proc.stderr:  # one line per step off a terminal
        seen.append(line)
        if "installing K8ssandra CRDs" in line:
            break
    assert any("installing K8ssandra CRDs" in x for x in seen), seen
    assert (d / "sandbox.json").exists()  # the clusters were up
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "error: terminated by SIGTERM: stopped everything this run had started" in err and "Traceback" not in err
    _assert_nothing_left(d)


def test_port_race_is_named(tmp_path, control_plane_binaries):
    bins = with_fake_apiserver(
        tmp_path, control_plane_binaries,
        "echo 'E1123 failed to listen: listen tcp 127.0.0.1:6443: bind: address already in use' >&2\nexit 1\n")
    d = tmp_path / "race"
    with pytest.raises(SandboxError, match=r"port was taken by another process \(a port race: run again\); read "):
        cluster.up(d, 1, bins)
    assert processes.running(d / "run") == {}


def test_sandbox_apply_checks_every_document_first(sandbox, admins, tmp_path):
    manifest_file = tmp_path / "m.yaml"
    manifest_file.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "apply-check"}, "data": {"a": "1"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nope"}},
    ]))
    with pytest.raises(UsageError, match="kind 'Deployment' is not one the sandbox applies"):
        manifests.apply_file(Path(sandbox.directory), "kind-k8ssandra-4", manifest_file, "default")
    assert admins[4].get_or_none(kube.CONFIGMAP, "apply-check", "default") is None  # nothing half-written
    manifest_file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: apply-check}\n---\n- kind: ConfigMap\n")
    with pytest.raises(UsageError, match="document 2 is a list, not a Kubernetes object"):
        manifests.apply_file(Path(sandbox.directory), "kind-k8ssandra-4", manifest_file, "default")
    assert admins[4].get_or_none(kube.CONFIGMAP, "apply-check", "default") is None
    manifest_file.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "apply-check"}}))
    assert manifests.apply_file(Path(sandbox.directory), "kind-k8ssandra-4", manifest_file, "default") == [
        "ConfigMap default/apply-check applied in kind-k8ssandra-4"]
    assert admins[4].get(kube.CONFIGMAP, "apply-check", "default")["metadata"]["name"] == "apply-check"
    with pytest.raises(UsageError, match="no context 'kind-none'"):
        manifests.apply_file(Path(sandbox.directory), "kind-none", manifest_file, "default")
    admins[4].delete(kube.CONFIGMAP, "apply-check", "default")  # the test starts from its absence


def test_cli_up_with_rtt_puts_every_api_server_behind_a_proxy(tmp_path, control_plane_binaries, leftovers):
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(control_plane_binaries.kube_apiserver.parent)}
    k8sctl = [sys.executable, "-m", "k8sctl"]
    d = leftovers.sandbox(tmp_path / "rtt")
    bad = subprocess.run(k8sctl + ["sandbox", "up", "--rtt", "100", "--dir", str(d)], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--rtt '100' is not a round-trip time" in bad.stderr
    up = subprocess.run(k8sctl + ["sandbox", "up", "--clusters", "2", "--rtt", "100ms", "--dir", str(d), "-o", "json"],
                        env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    state = cluster.SandboxState.load(d.resolve())
    pids: dict[str, int] = {}
    try:
        st = subprocess.run(k8sctl + ["sandbox", "status", "--dir", str(d), "-o", "json"], env=env,
                            capture_output=True, text=True)
        assert st.returncode == 0, st.stderr
        status = yaml.safe_load(st.stdout)
        assert status["rttMs"] == 100
        proxies = {p["name"]: p for p in status["toxiproxy"]["proxies"]}
        for c in state.clusters:
            p = proxies[c.context]
            # The kubeconfig goes to the proxy; the proxy to the API server; 50 ms each way.
            assert c.server == f"https://{p['listen']}" and p["upstream"] == f"127.0.0.1:{c.port}"
            assert sorted((t["stream"], t["attributes"]["latency"]) for t in p["toxics"]) == \
                [("downstream", 50), ("upstream", 50)]
            doc = kc.read_file(Path(c.kubeconfig))
            assert doc["clusters"][0]["cluster"]["server"] == c.server
            # TLS verified through the proxy with the cluster's own CA (the certificate covers 127.0.0.1).
            client = admin_client(c)
            try:
                assert client.whoami() == "admin"
            finally:
                client.close()
        pids = processes.running(d / "run")
        assert "toxiproxy" in pids
    finally:
        down = subprocess.run(k8sctl + ["sandbox", "down", "--dir", str(d)], env=env, capture_output=True, text=True)
    assert down.returncode == 0 and not d.exists()
    assert pids and not any(processes.pid_alive(p) for p in pids.values())
