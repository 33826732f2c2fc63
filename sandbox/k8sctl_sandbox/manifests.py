"""`sandbox apply`: server-side apply manifests to one sandbox cluster (no kubectl needed)."""
from __future__ import annotations

from pathlib import Path

import yaml

from k8sctl import kube
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.apis import k8ssandracluster as k8c
from k8sctl.errors import UsageError
from k8sctl_sandbox.cluster import admin_clients

# What `sandbox apply` applies by kind (ClientConfig by its apiVersion: two versions are served).
KINDS = {**kube.BUILTIN, cdc.KIND: cdc.RESOURCE, k8c.KIND: k8c.RESOURCE}


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
        return clientconfig_api.resource(str(doc.get("apiVersion", "/v1beta1")).split("/")[-1])
    if kind not in KINDS:
        raise UsageError(f"{where}: kind {kind!r} is not one the sandbox applies")
    return KINDS[kind]


def apply_file(directory: Path, context: str, filename: Path, namespace: str) -> list[str]:
    if not namespace.strip():
        raise UsageError("--namespace must not be empty: name the namespace for objects that do not say theirs")
    try:
        docs = [d for d in yaml.safe_load_all(filename.read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read manifests from {filename}: {e}") from None
    # Every document is checked before the first is applied: nothing half-written.
    resources = [_resource(doc, filename, i) for i, doc in enumerate(docs, 1)]
    for _, client in admin_clients(directory, only=context):
        done = []
        for doc, resource in zip(docs, resources):
            if resource.namespaced:
                doc.setdefault("metadata", {}).setdefault("namespace", namespace)
            client.apply(resource, doc, force=True)
            done.append(f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']} applied in {context}")
        return done
    raise UsageError(f"no context {context!r} in the sandbox at {directory}")
