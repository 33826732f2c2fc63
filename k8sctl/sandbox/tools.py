"""Small conveniences on a running sandbox, for demos and tests without kubectl.

`mark_ready` stands in for cass-operator, which does not run in the sandbox: it
sets what cass-operator would report once a datacenter's pods are up.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.errors import UsageError
from k8sctl.reconcile import ready_state
from k8sctl.sandbox.cluster import ClusterInfo, SandboxState


_ALL_DATACENTERS = "/apis/cassandra.datastax.com/v1beta1/cassandradatacenters"  # every namespace


def _clients(directory: Path, only: str | None = None) -> Iterator[tuple[ClusterInfo, kube.KubeClient]]:
    state = SandboxState.load(directory.resolve())
    for c in state.clusters:
        if only is not None and c.context != only:
            continue
        client = kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)
        try:
            yield c, client
        finally:
            client.close()


def _resource(doc: object, filename: Path, index: int) -> kube.Resource:
    where = f"{filename}: document {index}"
    if not isinstance(doc, dict):
        what = "a list" if isinstance(doc, list) else f"a {type(doc).__name__}"
        raise UsageError(f"{where} is {what}, not a Kubernetes object: each document must be a mapping with "
                         f"apiVersion, kind and metadata.name (write a list as separate '---' documents)")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise UsageError(f"{where} has no metadata.name")
    kind = doc.get("kind", "")
    if kind == "ClientConfig":
        return kube.clientconfig_resource(str(doc.get("apiVersion", "/v1beta1")).split("/")[-1])
    if kind not in kube.BUILTIN:
        raise UsageError(f"{where}: kind {kind!r} is not one the sandbox applies")
    return kube.BUILTIN[kind]


def apply_file(directory: Path, context: str, filename: Path, namespace: str) -> list[str]:
    try:
        docs = [d for d in yaml.safe_load_all(filename.read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read manifests from {filename}: {e}") from None
    # Every document is checked before the first is applied: nothing half-written.
    resources = [_resource(doc, filename, i) for i, doc in enumerate(docs, 1)]
    for _, client in _clients(directory, only=context):
        done = []
        for doc, resource in zip(docs, resources):
            if resource.namespaced:
                doc.setdefault("metadata", {}).setdefault("namespace", namespace)
            client.apply(resource, doc, force=True)
            done.append(f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']} applied in {context}")
        return done
    raise UsageError(f"no context {context!r} in the sandbox at {directory}")


def list_datacenters(directory: Path) -> list[dict]:
    rows = []
    for c, client in _clients(directory):
        for dc in client.request("GET", _ALL_DATACENTERS).get("items", []):
            rows.append({"context": c.context, "namespace": dc["metadata"]["namespace"], "name": dc["metadata"]["name"],
                         "size": dc["spec"].get("size"), "ready": bool(ready_state(dc)[0])})
    return rows


def ready_status(dc: dict) -> dict:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"cassandraOperatorProgress": "Ready", "observedGeneration": dc["metadata"].get("generation", 1),
            "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxStandIn",
                            "message": "marked Ready by k8sctl sandbox (no cass-operator runs here)",
                            "lastTransitionTime": now}]}


def mark_ready(directory: Path) -> list[str]:
    done = []
    for c, client in _clients(directory):
        for dc in client.request("GET", _ALL_DATACENTERS).get("items", []):
            if ready_state(dc)[0]:
                continue
            meta = dc["metadata"]
            client.request("PATCH", kube.CASSANDRA_DATACENTER.path(meta["namespace"], meta["name"], "status"),
                           {"status": ready_status(dc)}, content_type="application/merge-patch+json")
            done.append(f"{c.context}: {meta['namespace']}/{meta['name']} marked Ready (standing in for cass-operator)")
    return done
