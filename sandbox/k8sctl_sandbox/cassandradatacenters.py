"""The CassandraDatacenters of a sandbox: list them; mark them Ready, standing in for cass-operator.

cass-operator does not run in the sandbox: `mark_ready` sets what it would report once a
datacenter's pods are up, so that what waits for Ready (reconcile's gating) can be tried.
"""
from __future__ import annotations

from pathlib import Path

from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.apis.cassandradatacenter import ready_state, ready_status  # the API's home for its status rules
from k8sctl_sandbox.cluster import admin_clients

_ALL_DATACENTERS = f"/apis/{cdc.API_VERSION}/{cdc.RESOURCE.plural}"  # every namespace


def list_datacenters(directory: Path) -> list[dict]:
    rows = []
    for c, client in admin_clients(directory):
        for dc in client.request("GET", _ALL_DATACENTERS).get("items", []):
            rows.append({"context": c.context, "namespace": dc["metadata"]["namespace"], "name": dc["metadata"]["name"],
                         "size": dc["spec"].get("size"), "ready": bool(ready_state(dc)[0])})
    return rows


def mark_ready(directory: Path) -> list[str]:
    done = []
    for c, client in admin_clients(directory):
        for dc in client.request("GET", _ALL_DATACENTERS).get("items", []):
            if ready_state(dc)[0]:
                continue
            meta = dc["metadata"]
            client.request("PATCH", cdc.RESOURCE.path(meta["namespace"], meta["name"], "status"),
                           {"status": ready_status(dc)}, content_type="application/merge-patch+json")
            done.append(f"{c.context}: {meta['namespace']}/{meta['name']} marked Ready (standing in for cass-operator)")
    return done
