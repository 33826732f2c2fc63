"""The real CassandraDatacenter CRDs, installed into (or swapped in) a test cluster.

The documents are the vendored ones the sandbox installs (k8sctl/sandbox/data/crds/, see its
PROVENANCE.md): production (cass-operator's kustomization) and unpatched (its raw bases file).
"""
from __future__ import annotations

import copy

from k8sctl import kube
from k8sctl.sandbox import crds_and_identity


def cassandradatacenter_crd(form: str) -> dict:
    return copy.deepcopy(crds_and_identity.parsed(crds_and_identity.CASSANDRADATACENTER_CRDS[form]))


def install_cassandradatacenter_crd(client: kube.KubeClient, form: str) -> None:
    """Install (or replace) the CassandraDatacenter CRD of `form` ('production' or 'unpatched'); wait until served."""
    if form not in crds_and_identity.CASSANDRADATACENTER_CRDS:
        raise ValueError(f"form {form!r} is not one of {', '.join(crds_and_identity.CASSANDRADATACENTER_CRDS)}")
    crds_and_identity.install_crds(client, [cassandradatacenter_crd(form)])
