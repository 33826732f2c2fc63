"""`sandbox up --k8ssandra`: what a k8ssandra-operator install leaves in a cluster, without the operator.

Installs the CRDs as their projects build them (data/crds/, see PROVENANCE.md there):
k8ssandra-operator's, and cass-operator's in the form chosen with
`--cassandradatacenter-crd`; and in namespace `k8ssandra-operator` the operator's
identity: its service account, token Secret, Role and RoleBinding. No operator process
runs (k8sctl plays the operator's client side); `sandbox/operator.py` runs the real one.
"""
from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from k8sctl import kube, waiting
from k8sctl import kubeconfig as kc
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.errors import SandboxError, UsageError

DATA = Path(__file__).parent / "data"
CRD_DIR = DATA / "crds"
OPERATOR_NAMESPACE = "k8ssandra-operator"
TOKEN_SECRET = "k8ssandra-operator-token"  # data/operator.yaml: the service account lists it
CASSANDRADATACENTER_CRD_FILE = "cassandra.datastax.com_cassandradatacenters.yaml"
# The CassandraDatacenter CRD forms users have (data/crds/PROVENANCE.md):
CASSANDRADATACENTER_CRDS = {
    # cass-operator's kustomization output: spec.config dropped from the schema, an object accepted.
    "production": CRD_DIR / "cass-operator" / CASSANDRADATACENTER_CRD_FILE,
    # its raw config/crd/bases file: spec.config a byte string, an object refused.
    "unpatched": CRD_DIR / "cass-operator-unpatched" / CASSANDRADATACENTER_CRD_FILE,
}
DEFAULT_CASSANDRADATACENTER_CRD = "production"
_PARSE_LOCK = threading.Lock()  # one parse per file even when a background thread started it


def crd_files(cassandradatacenter_crd: str = DEFAULT_CASSANDRADATACENTER_CRD) -> list[Path]:
    """The CRD files a k8ssandra-operator install has, with the chosen CassandraDatacenter form."""
    try:
        cassdc = CASSANDRADATACENTER_CRDS[cassandradatacenter_crd]
    except KeyError:
        raise UsageError(f"--cassandradatacenter-crd {cassandradatacenter_crd!r} is not one of "
                         f"{', '.join(CASSANDRADATACENTER_CRDS)}") from None
    cass_operator = [p for p in sorted((CRD_DIR / "cass-operator").glob("*.yaml")) if p.name != cassdc.name]
    return sorted((CRD_DIR / "k8ssandra-operator").glob("*.yaml")) + [cassdc] + cass_operator


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> dict:
    # libyaml parses the 2.5 MB K8ssandraCluster CRD in 0.3 s, pure Python in 2.2 s.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)


def parsed(path: Path) -> dict:
    """One CRD file as a document, parsed once per process: callers must not modify it (copy first)."""
    with _PARSE_LOCK:
        return _parse(path)


def crd_documents(cassandradatacenter_crd: str = DEFAULT_CASSANDRADATACENTER_CRD) -> list[dict]:
    """The CRDs as documents, parsed once per process: callers must not modify them (copy first)."""
    files = crd_files(cassandradatacenter_crd)
    with _PARSE_LOCK:
        return [_parse(p) for p in files]


def parse_in_background(cassandradatacenter_crd: str = DEFAULT_CASSANDRADATACENTER_CRD) -> None:
    """Start parsing the CRDs (about 2 s) while the clusters start: they mostly wait."""
    threading.Thread(target=crd_documents, args=(cassandradatacenter_crd,), name="parse-crds", daemon=True).start()


def served_resource(crd: dict) -> kube.Resource:
    """The resource a CRD serves, at its storage version."""
    names = crd["spec"]["names"]
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    return kube.Resource(crd["spec"]["group"], version, names["plural"], names["kind"],
                         crd["spec"]["scope"] == "Namespaced")


def install_crds(client: kube.KubeClient, crds: list[dict], timeout: float = 60.0) -> None:
    """Server-side apply CRDs, each once, and wait until each is served."""
    for crd in crds:
        # Sent as JSON (a YAML document): the K8ssandraCluster CRD is 1.25 MB so, 2.5 MB as YAML.
        client.apply(kube.CRD, crd, force=True)
    deadline = time.monotonic() + timeout
    for crd in crds:
        resource = served_resource(crd)
        # 404 until the CRD is Established; then 429 while its storage initializes (retried by request).
        path = resource.path("default") if resource.namespaced else resource.path()
        while True:
            try:
                client.request("GET", path, query={"limit": "1"})
                break
            except kube.NotFound:
                pass
            if time.monotonic() > deadline:
                raise SandboxError(f"CRD {crd['metadata']['name']} not served after {timeout:.0f}s "
                                   f"in context {client.context!r}")
            time.sleep(0.1)


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


def install(kubeconfig_path: str, context: str, cassandradatacenter_crd: str = DEFAULT_CASSANDRADATACENTER_CRD) -> None:
    """One cluster: the CRDs, then the operator's identity, and wait until its token is filled."""
    crds = crd_documents(cassandradatacenter_crd)
    doc = kc.read_file(Path(kubeconfig_path))
    client = kube.KubeClient(doc, context)
    try:
        install_crds(client, crds)
        install_operator_identity(client)
        wait_token_filled(client, OPERATOR_NAMESPACE, TOKEN_SECRET)
    finally:
        client.close()


def install_all(state, progress: Callable[[str], None] = lambda s: None,
                cassandradatacenter_crd: str = DEFAULT_CASSANDRADATACENTER_CRD) -> None:
    """Every cluster of a sandbox, in parallel (they are independent); recorded in its state."""
    crd_documents(cassandradatacenter_crd)  # parse once, before the threads
    progress(f"installing K8ssandra CRDs ({cassandradatacenter_crd} CassandraDatacenter) and operator identity "
             f"in {len(state.clusters)} cluster(s)")
    pool = ThreadPoolExecutor(max_workers=min(8, len(state.clusters)))
    try:
        list(pool.map(lambda c: install(c.kubeconfig, c.context, cassandradatacenter_crd), state.clusters))
    finally:
        # On Ctrl-C, do not wait for the workers: the caller stops the clusters they talk to.
        pool.shutdown(wait=False, cancel_futures=True)
    state.k8ssandra = True
    state.cassandradatacenter_crd = cassandradatacenter_crd
    state.save()


# --- swapping the CassandraDatacenter CRD in a running cluster (tests, benchmarks) -----------

# The smallest datacenter either schema takes but for its inline spec.config.
_INLINE_PROBE = {"apiVersion": cdc.API_VERSION, "kind": cdc.KIND, "metadata": {"name": "crd-form-probe"},
                 "spec": {"clusterName": "probe", "serverType": "cassandra", "serverVersion": "4.0.17", "size": 1,
                          "config": {"cassandra-yaml": {"num_tokens": 16}}}}


def cassandradatacenter_crd_document(form: str) -> dict:
    return copy.deepcopy(parsed(CASSANDRADATACENTER_CRDS[form]))


def install_cassandradatacenter_crd(client: kube.KubeClient, form: str, timeout: float = 30.0) -> None:
    """Install (or replace) the CassandraDatacenter CRD of `form` ('production' or 'unpatched'), and
    wait until the API server validates with it: a replaced CRD is served at once, with the old
    schema until the server has taken in the new one (a 0.9 MB document)."""
    if form not in CASSANDRADATACENTER_CRDS:
        raise ValueError(f"form {form!r} is not one of {', '.join(CASSANDRADATACENTER_CRDS)}")
    install_crds(client, [cassandradatacenter_crd_document(form)])
    last: list[str] = []

    def in_effect() -> bool:
        try:
            client.create(cdc.RESOURCE, copy.deepcopy(_INLINE_PROBE), "default", dry_run=True)
            refused = False
        except kube.ApiError as e:
            last[:] = [str(e)]
            refused = cdc.refuses_inline_config(cdc.invalid_fields(str(e)))
            if not refused and e.status != 422:
                raise
        return refused == (form == "unpatched")

    try:
        waiting.until(lambda: in_effect() or None, timeout=timeout, interval=0.1, message="")
    except waiting.TimedOut:
        raise SandboxError(f"the {form} CassandraDatacenter CRD not in effect in {client.context} within "
                             f"{timeout:.0f}s: {last[0] if last else 'an inline spec.config is accepted'}") from None
