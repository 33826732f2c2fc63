"""The real CassandraDatacenter CRDs, installed into a test cluster.

Until the sandbox installs the vendored upstream CRDs itself, tests that need one of
the forms users really have install it through this one helper, from the copies in
tests/fixtures/crds/ (see its README: byte-identical to ../shared/crds/).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from k8sctl import kube
from k8sctl.sandbox import k8ssandra

CRDS = Path(__file__).resolve().parent.parent / "fixtures" / "crds"
FORMS = {
    # What production installs: cass-operator's kustomization, spec.config dropped from the schema.
    "production": CRDS / "cassandra.datastax.com_cassandradatacenters.yaml",
    # What some users end up with: the raw config/crd/bases file, spec.config a byte string.
    "unpatched": CRDS / "unpatched" / "cassandra.datastax.com_cassandradatacenters.yaml",
}


def cassandradatacenter_crd(form: str) -> dict:
    return yaml.safe_load(FORMS[form].read_text())


def install_cassandradatacenter_crd(client: kube.KubeClient, form: str) -> None:
    """Install (or replace) the CassandraDatacenter CRD of `form` ('production' or 'unpatched'); wait until served."""
    if form not in FORMS:
        raise ValueError(f"form {form!r} is not one of {', '.join(FORMS)}")
    k8ssandra.install_crds(client, [cassandradatacenter_crd(form)])
