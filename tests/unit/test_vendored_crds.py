"""The vendored CRDs are the files their projects build, unedited (data/crds/PROVENANCE.md)."""
from __future__ import annotations

import hashlib
import re

import pytest

from k8sctl.errors import UsageError
from k8sctl_sandbox import crds_and_identity

PROVENANCE = crds_and_identity.CRD_DIR / "PROVENANCE.md"


def recorded_hashes() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+\.yaml)` \| `([0-9a-f]{64})` \|$", PROVENANCE.read_text(), re.M)
    return dict(rows)


def test_every_vendored_file_is_recorded_with_its_hash():
    recorded = recorded_hashes()
    on_disk = {str(p.relative_to(crds_and_identity.CRD_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in crds_and_identity.CRD_DIR.rglob("*.yaml")}
    assert len(recorded) == 16
    assert on_disk == recorded  # a hand edit, or a file not in PROVENANCE.md, fails here


def test_production_and_unpatched_differ_only_in_the_cassandradatacenter_crd():
    production = [p.relative_to(crds_and_identity.CRD_DIR).as_posix() for p in crds_and_identity.crd_files("production")]
    unpatched = [p.relative_to(crds_and_identity.CRD_DIR).as_posix() for p in crds_and_identity.crd_files("unpatched")]
    assert len(production) == len(unpatched) == 15
    assert set(production) ^ set(unpatched) == {
        "cass-operator/cassandra.datastax.com_cassandradatacenters.yaml",
        "cass-operator-unpatched/cassandra.datastax.com_cassandradatacenters.yaml"}
    assert crds_and_identity.crd_files() == crds_and_identity.crd_files("production")


def _spec_config(form: str):
    crd = next(d for d in crds_and_identity.crd_documents(form) if d["spec"]["names"]["kind"] == "CassandraDatacenter")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec, spec["properties"].get("config")


def test_the_two_forms_are_what_the_issue_describes():
    spec, config = _spec_config("production")
    assert config is None and spec["x-kubernetes-preserve-unknown-fields"] is True
    _, config = _spec_config("unpatched")
    assert (config["type"], config["format"]) == ("string", "byte")


def test_one_document_per_crd_and_names_unique():
    docs = crds_and_identity.crd_documents()
    names = [d["metadata"]["name"] for d in docs]
    assert len(set(names)) == len(names) == 15
    assert all(d["kind"] == "CustomResourceDefinition" for d in docs)


def test_unknown_form_is_a_usage_error():
    with pytest.raises(UsageError, match="--cassandradatacenter-crd 'patched' is not one of production, unpatched"):
        crds_and_identity.crd_files("patched")
