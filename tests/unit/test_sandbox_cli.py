"""`k8sctl sandbox` flags checked before anything is built or started (no cluster needed)."""
from __future__ import annotations

from typer.testing import CliRunner

from k8sctl.cli import app
from k8sctl.cli.sandbox import CassandraDatacenterCrd
from k8sctl.sandbox import k8ssandra


def up(tmp_path, *args: str):
    # PATH without `go` and an empty cache: reaching the build step would fail differently.
    return CliRunner().invoke(app, ["sandbox", "up", "--dir", str(tmp_path / "sb"), *args],
                              env={"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                                   "KUBEBUILDER_ASSETS": ""})


def test_cassandradatacenter_crd_names_match_the_vendored_forms():
    assert [c.value for c in CassandraDatacenterCrd] == list(k8ssandra.CASSANDRADATACENTER_CRDS)


def test_cassandradatacenter_crd_needs_k8ssandra(tmp_path):
    r = up(tmp_path, "--cassandradatacenter-crd", "unpatched")
    assert r.exit_code == 2
    assert r.output == "error: --cassandradatacenter-crd needs --k8ssandra (it picks the CRD that --k8ssandra installs)\n"
    assert not (tmp_path / "sb").exists()


def test_unknown_cassandradatacenter_crd_is_refused(tmp_path):
    r = up(tmp_path, "--k8ssandra", "--cassandradatacenter-crd", "patched")
    assert r.exit_code == 2 and "'patched' is not one of" in r.output and "production" in r.output
    assert not (tmp_path / "sb").exists()
