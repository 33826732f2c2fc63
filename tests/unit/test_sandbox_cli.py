"""`k8sctl sandbox` flags checked before anything is built or started (no cluster needed)."""
from __future__ import annotations

from typer.testing import CliRunner

from k8sctl.cli import app
from k8sctl_sandbox import crds_and_identity
from k8sctl_sandbox.cli import CassandraDatacenterCrd


def up(tmp_path, *args: str):
    # PATH without `go` and an empty cache: reaching the build step would fail differently.
    return CliRunner().invoke(app, ["sandbox", "up", "--dir", str(tmp_path / "sb"), *args],
                              env={"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                                   "KUBEBUILDER_ASSETS": ""})


def test_cassandradatacenter_crd_names_match_the_vendored_forms():
    assert [c.value for c in CassandraDatacenterCrd] == list(crds_and_identity.CASSANDRADATACENTER_CRDS)


def test_cassandradatacenter_crd_needs_k8ssandra(tmp_path):
    r = up(tmp_path, "--cassandradatacenter-crd", "unpatched")
    assert r.exit_code == 2
    assert r.output == "error: --cassandradatacenter-crd needs --k8ssandra (it picks the CRD that --k8ssandra installs)\n"
    assert not (tmp_path / "sb").exists()


def test_unknown_cassandradatacenter_crd_is_refused(tmp_path):
    r = up(tmp_path, "--k8ssandra", "--cassandradatacenter-crd", "patched")
    assert r.exit_code == 2 and "'patched' is not one of" in r.output and "production" in r.output
    assert not (tmp_path / "sb").exists()


def test_timeout_must_be_a_positive_finite_number(tmp_path):
    for value in ("nan", "inf", "-inf", "0", "-5"):
        r = up(tmp_path, "--timeout", value)
        assert r.exit_code == 2, (value, r.output)
        assert r.output.startswith("error: --timeout must be a positive number of seconds"), (value, r.output)
        assert len(r.output.splitlines()) == 1
    assert not (tmp_path / "sb").exists()


def test_clusters_has_a_documented_upper_bound(tmp_path):
    from k8sctl_sandbox.cluster import MAX_CLUSTERS

    r = up(tmp_path, "--clusters", str(MAX_CLUSTERS + 1))
    assert r.exit_code == 2 and r.output.startswith(f"error: --clusters must be at most {MAX_CLUSTERS} (got 17)")
    help_text = CliRunner().invoke(app, ["sandbox", "up", "--help"]).output
    assert f"1 to {MAX_CLUSTERS}" in help_text
    assert not (tmp_path / "sb").exists()


def test_n_is_not_a_short_flag_for_clusters(tmp_path):
    """Issue 10 reserves -n for --namespace."""
    r = up(tmp_path, "-n", "2")
    assert r.exit_code == 2 and "No such option: -n" in r.output
    assert "-n," not in CliRunner().invoke(app, ["sandbox", "up", "--help"]).output


def test_apply_refuses_a_document_that_is_not_an_object(tmp_path):
    cases = {"- a\n- b\n": "document 1 is a list, not a Kubernetes object",
             "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n[1, 2]\n": "document 2 is a list",
             "just text\n": "document 1 is a str, not a Kubernetes object",
             "apiVersion: v1\nkind: ConfigMap\nmetadata: [x]\n": "document 1 has no metadata.name"}
    for text, words in cases.items():
        f = tmp_path / "m.yaml"
        f.write_text(text)
        r = CliRunner().invoke(app, ["sandbox", "apply", "--dir", str(tmp_path / "none"), "--context", "c", "-f", str(f)])
        assert r.exit_code == 2, (text, r.output)
        assert r.output.startswith(f"error: {f}: {words}") and len(r.output.splitlines()) == 1, r.output


def test_apply_refuses_an_empty_namespace(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    r = CliRunner().invoke(app, ["sandbox", "apply", "--dir", str(tmp_path), "--context", "c", "-f", str(f), "-n", ""])
    assert r.exit_code == 2 and r.output.startswith("error: --namespace must not be empty")
