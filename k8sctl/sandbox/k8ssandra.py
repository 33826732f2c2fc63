"""`sandbox up --k8ssandra`: make each cluster look as if k8ssandra-operator were installed.

Installs the ClientConfig, K8ssandraCluster and CassandraDatacenter CRDs (the
project's structural copies in data/crds/), and in namespace `k8ssandra-operator`
the operator's service account, its token Secret, Role and RoleBinding. No
operator process runs: k8sctl itself plays the operator's client side.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.errors import SandboxError

DATA = Path(__file__).parent / "data"
OPERATOR_NAMESPACE = "k8ssandra-operator"


def crd_documents(crd_dir: Path = DATA / "crds") -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(crd_dir.glob("*.yaml"))]


def install_crds(client: kube.KubeClient, crds: list[dict], timeout: float = 30.0) -> None:
    """Apply CRDs and wait until each is Established (served)."""
    for crd in crds:
        client.apply(kube.CRD, crd, force=True)
    deadline = time.monotonic() + timeout
    for crd in crds:
        while True:
            conds = (client.get(kube.CRD, crd["metadata"]["name"]).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise SandboxError(f"CRD {crd['metadata']['name']} not established after {timeout:.0f}s")
            time.sleep(0.1)
        # Established is not yet servable: a list succeeds once its storage is initialized.
        names = crd["spec"]["names"]
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
        resource = kube.Resource(crd["spec"]["group"], version, names["plural"], names["kind"],
                                 crd["spec"]["scope"] == "Namespaced")
        client.request("GET", resource.path("default") if resource.namespaced else resource.path())


def install_operator_identity(client: kube.KubeClient, namespace: str = OPERATOR_NAMESPACE) -> None:
    client.apply(kube.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for doc in yaml.safe_load_all((DATA / "operator.yaml").read_text()):
        doc["metadata"]["namespace"] = namespace
        for s in doc.get("subjects", []):
            s["namespace"] = namespace
        client.apply(kube.BUILTIN[doc["kind"]], doc, force=True)


def wait_token_filled(client: kube.KubeClient, namespace: str, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (client.get(kube.SECRET, name, namespace).get("data") or {}).get("token"):
        if time.monotonic() > deadline:
            raise SandboxError(f"token Secret {namespace}/{name} not filled after {timeout:.0f}s: is the controller manager running?")
        time.sleep(0.1)


def prepare(kubeconfig_path: str, context: str) -> None:
    doc = kc.read_file(Path(kubeconfig_path))
    client = kube.KubeClient(doc, context)
    try:
        install_crds(client, crd_documents())
        install_operator_identity(client)
        wait_token_filled(client, OPERATOR_NAMESPACE, "k8ssandra-operator-token")
    finally:
        client.close()


def prepare_all(state, progress: Callable[[str], None] = lambda s: None) -> None:
    """Prepare every cluster of a sandbox, in parallel (they are independent)."""
    progress(f"installing K8ssandra CRDs and operator identity in {len(state.clusters)} cluster(s)")
    with ThreadPoolExecutor(max_workers=min(8, len(state.clusters))) as pool:
        list(pool.map(lambda c: prepare(c.kubeconfig, c.context), state.clusters))
    state.k8ssandra = True
    state.save()
