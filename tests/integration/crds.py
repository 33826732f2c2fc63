"""The real CassandraDatacenter CRDs, installed into (or swapped in) a test cluster.

The documents are the vendored ones the sandbox installs (k8sctl/sandbox/data/crds/, see its
PROVENANCE.md): production (cass-operator's kustomization) and unpatched (its raw bases file).
"""
from __future__ import annotations

import copy

from k8sctl import kube, waiting
from k8sctl.apis import cassandradatacenter as cdc
from k8sctl.sandbox import crds_and_identity

# The smallest datacenter either schema takes but for its inline spec.config.
_INLINE_PROBE = {"apiVersion": cdc.API_VERSION, "kind": cdc.KIND, "metadata": {"name": "crd-form-probe"},
                 "spec": {"clusterName": "probe", "serverType": "cassandra", "serverVersion": "4.0.17", "size": 1,
                          "config": {"cassandra-yaml": {"num_tokens": 16}}}}


def cassandradatacenter_crd(form: str) -> dict:
    return copy.deepcopy(crds_and_identity.parsed(crds_and_identity.CASSANDRADATACENTER_CRDS[form]))


def install_cassandradatacenter_crd(client: kube.KubeClient, form: str, timeout: float = 30.0) -> None:
    """Install (or replace) the CassandraDatacenter CRD of `form` ('production' or 'unpatched'), and
    wait until the API server validates with it: a replaced CRD is served at once, with the old
    schema until the server has taken in the new one (a 0.9 MB document)."""
    if form not in crds_and_identity.CASSANDRADATACENTER_CRDS:
        raise ValueError(f"form {form!r} is not one of {', '.join(crds_and_identity.CASSANDRADATACENTER_CRDS)}")
    crds_and_identity.install_crds(client, [cassandradatacenter_crd(form)])
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
        raise AssertionError(f"the {form} CassandraDatacenter CRD not in effect in {client.context} within "
                             f"{timeout:.0f}s: {last[0] if last else 'an inline spec.config is accepted'}") from None
