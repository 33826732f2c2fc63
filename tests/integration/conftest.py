"""One sandbox of real API servers for the whole test run.

Clusters (contexts kind-k8ssandra-<i>):
  0..3  prepared as k8ssandra-operator installs them (CRDs, namespace, SA, token Secret, Role),
        with cass-operator's production CassandraDatacenter CRD
  4     bare: no K8ssandra CRDs, no operator (for "operator not installed" errors)
  5     the operator's identity but a ClientConfig CRD serving only v1alpha1 (old docs)
  6     prepared like 0..3 but with cass-operator's unpatched CassandraDatacenter CRD
        (its raw config/crd/bases file: spec.config a byte string, as some installs have it)
Tests isolate themselves by namespace or by object name.

`crd_sandbox` is a second, smaller sandbox whose CassandraDatacenter CRDs are the real
ones (production and unpatched): swapping a CRD in the shared one would change what
every other test sees.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from k8sctl import kube, waiting
from k8sctl import kubeconfig as kc
from k8sctl.cli import app
from k8sctl_sandbox import binaries, cluster, crds_and_identity, operator
from tests import leakguard

# Tests that build and run the real k8ssandra-operator skip, saying why, without its source.
NEEDS_OPERATOR_SOURCE = pytest.mark.skipif(
    not operator.DEFAULT_SOURCE.is_dir(),
    reason=f"needs the k8ssandra-operator source: {operator.DEFAULT_SOURCE} absent "
           f"(pass it to `sandbox up --operator-source`; see ../shared/upstream/README.md)")
PREPARED = [0, 1, 2, 3]

BARE = 4
V1ALPHA1 = 5
UNPATCHED = 6
CLUSTERS = 7


def wait_for(what: str, fn, timeout: float = 90.0):
    """fn()'s first truthy value, polled; fails the test when none comes within `timeout` seconds."""
    return waiting.until(lambda: fn() or None, timeout=timeout, interval=0.2,
                         message=f"{what} not seen within {timeout:.0f}s")


def invoke(*argv: str):
    """k8sctl `argv` in this process (typer's CliRunner)."""
    return CliRunner().invoke(app, list(argv))


@contextlib.contextmanager
def operator_sandbox(tmp_path_factory, clusters: int, name: str) -> Iterator[cluster.SandboxState]:
    """`sandbox up --operator` with `clusters` clusters (0 the control plane), down afterwards.
    Skips where the operator cannot have its private mount namespace. For a module-scoped
    fixture: one sandbox with the real operator per machine (its webhook port is fixed)."""
    why = operator.unavailable_reason()
    if why:
        pytest.skip(f"no private mount namespace for the operator here: {why}")
    directory = tmp_path_factory.mktemp(name)
    result = invoke("sandbox", "up", "--clusters", str(clusters), "--operator", "--dir", str(directory), "-o", "json")
    try:
        assert result.exit_code == 0, result.output
        yield cluster.SandboxState.load(directory.resolve())
    finally:
        down = invoke("sandbox", "down", "--dir", str(directory))
        assert down.exit_code == 0, down.output


@pytest.fixture(scope="session")
def control_plane_binaries() -> binaries.Binaries:
    return binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, control_plane_binaries) -> cluster.SandboxState:
    directory = tmp_path_factory.mktemp("sandbox")
    state = cluster.up(directory, CLUSTERS, control_plane_binaries)
    try:
        crd_forms = {**{i: "production" for i in PREPARED}, UNPATCHED: "unpatched"}
        with ThreadPoolExecutor(max_workers=len(crd_forms) + 1) as pool:
            done = [pool.submit(crds_and_identity.install, state.clusters[i].kubeconfig, state.clusters[i].context, form)
                    for i, form in crd_forms.items()]
            done.append(pool.submit(_prepare_v1alpha1, state.clusters[V1ALPHA1]))
            for f in done:
                f.result()
        yield state
    finally:
        cluster.down(directory)


@pytest.fixture(autouse=True, scope="session")
def _every_sandbox_guarded():
    """Every sandbox a test starts (fixtures, tests, `sandbox up` through CliRunner) has its
    credentials registered with the leak guard from `up` to `down`."""
    original_up, original_down = cluster.up, cluster.down
    guards: dict[str, guarded] = {}

    def up(directory, *args, **kwargs):
        state = original_up(directory, *args, **kwargs)
        guards[str(Path(state.directory).resolve())] = guarded(state).__enter__()
        return state

    def down(directory, *args, **kwargs):
        guard = guards.pop(str(Path(directory).resolve()), None)
        if guard is not None:
            guard.__exit__(None, None, None)
        return original_down(directory, *args, **kwargs)

    cluster.up, cluster.down = up, down  # type: ignore[assignment]
    yield
    cluster.up, cluster.down = original_up, original_down  # type: ignore[assignment]
    for guard in guards.values():
        guard.__exit__(None, None, None)


def _prepare_v1alpha1(c: cluster.ClusterInfo) -> None:
    client = admin_client(c)
    try:
        crds = crds_and_identity.crd_documents()
        old = [_as_v1alpha1(d) for d in crds if d["spec"]["group"] == "config.k8ssandra.io"]
        crds_and_identity.install_crds(client, old)
        crds_and_identity.install_operator_identity(client)
        crds_and_identity.wait_token_filled(client, crds_and_identity.OPERATOR_NAMESPACE, crds_and_identity.TOKEN_SECRET)
    finally:
        client.close()


class guarded:
    """Registers a sandbox's credentials with the leak guard while it runs: each cluster's admin
    key, and (read live before every check) every token Secret and stored kubeconfig in it."""

    def __init__(self, state: cluster.SandboxState):
        # Their own request count: the guard's reads must not show in tests that count requests.
        # Short limits: a test may have made a cluster slow or silent on purpose.
        self.clients = [kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context, stats=kube.RequestStats(),
                                        timeout=(2.0, 5.0)) for c in state.clusters]
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
            client.deadline = time.monotonic() + 5.0
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


@pytest.fixture(scope="module")
def crd_sandbox(tmp_path_factory, control_plane_binaries):
    """3 clusters: 0 the control plane, 1 with the production CassandraDatacenter CRD, 2 with the unpatched one.
    Per module (only test_reconcile uses it): its API servers stop before the next module's start.

    Cluster 1 is registered in cluster 0 under the contexts prod-1..3, cluster 2 under
    unpatched-1..3 (one ClientConfig each), so the three-datacenter demo can go to three
    contexts of either form.
    """
    from k8sctl import clientconfigs

    directory = tmp_path_factory.mktemp("crd-sandbox")
    state = cluster.up(directory, 3, control_plane_binaries, prefix="crd")
    try:
        # The vendored CRDs, each cluster with its CassandraDatacenter form, applied once.
        forms = ("production", "production", "unpatched")
        with ThreadPoolExecutor(max_workers=len(forms)) as pool:
            for f in [pool.submit(crds_and_identity.install, c.kubeconfig, c.context, form)
                      for c, form in zip(state.clusters, forms)]:
                f.result()
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
        yield state
    finally:
        cluster.down(directory)


@pytest.fixture(scope="module")
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
