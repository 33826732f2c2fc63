"""One sandbox of real API servers for the whole test run.

Clusters (contexts kind-k8ssandra-<i>):
  0..3  prepared as k8ssandra-operator installs them (CRDs, namespace, SA, token Secret, Role)
  4     bare: no K8ssandra CRDs, no operator (for "operator not installed" errors)
  5     the operator's identity but a ClientConfig CRD serving only v1alpha1 (old docs)
Tests isolate themselves by namespace or by object name.

`crd_sandbox` is a second, smaller sandbox whose CassandraDatacenter CRDs are the real
ones (production and unpatched): swapping a CRD in the shared one would change what
every other test sees.
"""
from __future__ import annotations

import base64
import copy
import os
import uuid
from pathlib import Path

import pytest
import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.sandbox import binaries, cluster, k8ssandra
from tests import leakguard

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PREPARED = [0, 1, 2, 3]
BARE = 4
V1ALPHA1 = 5


@pytest.fixture(scope="session")
def control_plane_binaries() -> binaries.Binaries:
    return binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, control_plane_binaries) -> cluster.SandboxState:
    directory = tmp_path_factory.mktemp("sandbox")
    state = cluster.up(directory, 6, control_plane_binaries)
    try:
        for i in PREPARED:
            c = state.clusters[i]
            k8ssandra.prepare(c.kubeconfig, c.context)
        c = state.clusters[V1ALPHA1]
        client = admin_client(c)
        crds = k8ssandra.crd_documents()
        old = [_as_v1alpha1(d) for d in crds if d["spec"]["group"] == "config.k8ssandra.io"]
        k8ssandra.install_crds(client, old)
        k8ssandra.install_operator_identity(client)
        k8ssandra.wait_token_filled(client, k8ssandra.OPERATOR_NAMESPACE, "k8ssandra-operator-token")
        client.close()
        with guarded(state):
            yield state
    finally:
        cluster.down(directory)


class guarded:
    """Registers a sandbox's credentials with the leak guard while it runs: each cluster's admin
    key, and (read live before every check) every token Secret and stored kubeconfig in it."""

    def __init__(self, state: cluster.SandboxState):
        # Their own request count: the guard's reads must not show in tests that count requests.
        self.clients = [kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context, stats=kube.RequestStats())
                        for c in state.clusters]
        for c in state.clusters:
            user = kc.read_file(Path(c.kubeconfig))["users"][0]["user"]
            leakguard.add(user.get("client-key-data"), base64.b64decode(user.get("client-key-data", "")))

    def __enter__(self):
        leakguard.add_refresher(self.credentials)
        return self

    def __exit__(self, *exc):
        leakguard.remove_refresher(self.credentials)
        for c in self.clients:
            c.close()

    def credentials(self):
        for client in self.clients:
            try:
                secrets = client.request("GET", "/api/v1/secrets").get("items", [])
            except kube.ClusterError:
                continue  # a test stopped this cluster
            for s in secrets:
                data = s.get("data") or {}
                if data.get("token"):
                    yield base64.b64decode(data["token"]).decode()
                if data.get("kubeconfig"):
                    yield from _kubeconfig_credentials(base64.b64decode(data["kubeconfig"]))


def _kubeconfig_credentials(raw: bytes):
    try:
        doc = yaml.safe_load(raw) or {}
        users = [u.get("user") or {} for u in doc.get("users") or []]
    except (yaml.YAMLError, AttributeError):
        return
    for user in users:
        if isinstance(user, dict):
            for key in ("token", "client-key-data"):
                if isinstance(user.get(key), str):
                    yield user[key]


@pytest.fixture(scope="session")
def crd_sandbox(tmp_path_factory, control_plane_binaries):
    """3 clusters: 0 the control plane, 1 with the production CassandraDatacenter CRD, 2 with the unpatched one.

    Cluster 1 is registered in cluster 0 under the contexts prod-1..3, cluster 2 under
    unpatched-1..3 (one ClientConfig each), so the three-datacenter demo can go to three
    contexts of either form.
    """
    from k8sctl import clientconfigs

    from .crds import install_cassandradatacenter_crd

    directory = tmp_path_factory.mktemp("crd-sandbox")
    state = cluster.up(directory, 3, control_plane_binaries, prefix="crd")
    try:
        for c in state.clusters:
            k8ssandra.prepare(c.kubeconfig, c.context)
        for c, form in zip(state.clusters, ("production", "production", "unpatched")):
            client = admin_client(c)
            try:
                install_cassandradatacenter_crd(client, form)
            finally:
                client.close()
        for index, alias in ((1, "prod"), (2, "unpatched")):
            c = state.clusters[index]
            for n in (1, 2, 3):
                opts = clientconfigs.CreateOptions(
                    src_kubeconfig=Path(c.kubeconfig), dest_kubeconfig=[Path(state.clusters[0].kubeconfig)],
                    in_cluster_kubeconfig=Path(c.in_cluster_kubeconfig), name=f"{alias}-{n}",
                    context_name=f"{alias}-{n}", output_dir=directory / "clientconfigs")
                done = clientconfigs.complete(opts, {})
                clientconfigs.validate(done)
                clientconfigs.run(done)
        with guarded(state):
            yield state
    finally:
        cluster.down(directory)


@pytest.fixture(scope="session")
def crd_admins(crd_sandbox):
    """Admin client of every cluster of crd_sandbox, by index."""
    clients = [admin_client(c) for c in crd_sandbox.clusters]
    yield clients
    for c in clients:
        c.close()


def _as_v1alpha1(crd: dict) -> dict:
    crd = copy.deepcopy(crd)
    for v in crd["spec"]["versions"]:
        v["name"] = "v1alpha1"
    return crd


def admin_client(c: cluster.ClusterInfo) -> kube.KubeClient:
    return kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)


@pytest.fixture(scope="session")
def admins(sandbox):
    """Admin client of every cluster, by index."""
    clients = [admin_client(c) for c in sandbox.clusters]
    yield clients
    for c in clients:
        c.close()


@pytest.fixture
def namespace_factory(admins):
    """Create uniquely named namespaces in given clusters; deleted afterwards."""
    made: list[tuple[kube.KubeClient, str]] = []

    def make(*indexes: int, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        for i in indexes:
            admins[i].create(kube.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            made.append((admins[i], name))
        return name

    yield make
    for client, name in made:
        try:
            client.delete(kube.NAMESPACE, name)
        except kube.ClusterError:
            pass
