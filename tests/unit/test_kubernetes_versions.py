"""`--kubernetes-version`: which release each minor builds, where each is cached, what is reused.

Builds here use a stand-in `go` that records its arguments and writes empty executables:
what is tested is the selection and the cache, not Go (no real build starts).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from k8sctl.errors import SandboxError, UsageError
from k8sctl_sandbox import binaries
from k8sctl_sandbox.cli import KUBERNETES_VERSION_HELP

RECORDING_GO = """#!/bin/sh
echo "$*" >> "{calls}"
while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
case "$out" in
  */) for b in kube-apiserver kube-controller-manager; do printf '#!/bin/sh\\n' > "$out$b"; chmod +x "$out$b"; done ;;
  *) printf '#!/bin/sh\\n' > "$out"; chmod +x "$out" ;;
esac
"""


def test_the_four_minors_and_their_releases():
    assert binaries.KUBERNETES_RELEASES == {"1.34": "v1.34.4", "1.35": "v1.35.4", "1.36": "v1.36.3", "1.37": "v1.37.2"}
    assert binaries.KUBERNETES_VERSION == "v1.37.2" == binaries.kubernetes_release(None)
    minors = re.findall(r"1\.\d+", KUBERNETES_VERSION_HELP.split("(default")[0])
    assert minors == list(binaries.KUBERNETES_RELEASES)


@pytest.mark.parametrize("asked, release", [("1.34", "v1.34.4"), ("v1.35", "v1.35.4"), ("1.36.3", "v1.36.3"),
                                            (" 1.37 ", "v1.37.2")])
def test_release_of_a_minor(asked, release):
    assert binaries.kubernetes_release(asked) == release


@pytest.mark.parametrize("asked", ["1.33", "1.38", "1.36.1", "1.34.4.1", "latest", ""])
def test_other_versions_are_refused(asked):
    with pytest.raises(UsageError, match=r"--kubernetes-version .* is not one of 1.34, 1.35, 1.36, 1.37 \(the releases"):
        binaries.kubernetes_release(asked)


@pytest.mark.parametrize("minor", ["1.34", "1.35", "1.36", "1.37"])
def test_each_module_pins_its_release_and_replaces_every_staging_module(minor):
    release = binaries.KUBERNETES_RELEASES[minor]
    patch = release.split(".")[2]
    gomod = binaries.GOMOD_DIR / f"kubernetes-{minor}"
    text = (gomod / "go.mod").read_text()
    unreplaced = set(re.findall(r"^\s*(k8s\.io/\S+) v0\.0\.0 // indirect$", text, re.M))
    replaced = dict(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", text, re.M))
    assert unreplaced and unreplaced <= set(replaced)
    assert set(replaced.values()) == {f"v0.{minor.split('.')[1]}.{patch}"}
    assert f"k8s.io/kubernetes {release} h1:" in (gomod / "go.sum").read_text()


def recording_go(tmp_path: Path, monkeypatch) -> Path:
    calls = tmp_path / "go-calls"
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "go").write_text(RECORDING_GO.format(calls=calls))
    (bindir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return calls


def test_each_version_is_built_into_its_own_folder_reusing_etcd(tmp_path, monkeypatch):
    calls = recording_go(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    steps: list[str] = []
    first = binaries.ensure(cache_root=cache, progress=steps.append, kubernetes_version="v1.37.2")
    assert first.kube_apiserver.parent == cache / "kubernetes-v1.37.2_etcd-v3.6.16"
    second = binaries.ensure(cache_root=cache, progress=steps.append, kubernetes_version="v1.34.4")
    assert second.kube_apiserver.parent == cache / "kubernetes-v1.34.4_etcd-v3.6.16"
    assert second.kubernetes_version == "v1.34.4" and second.sources["kube-apiserver"] == "built"
    builds = calls.read_text().splitlines()
    # etcd once (for the first version), Kubernetes once per version, with that version stamped.
    assert [("etcd" if "go.etcd.io" in c else "kubernetes") for c in builds] == ["etcd", "kubernetes", "kubernetes"]
    assert "gitVersion=v1.37.2" in builds[1] and "gitMinor=37" in builds[1]
    assert "gitVersion=v1.34.4" in builds[2] and "gitMinor=34" in builds[2]
    assert any(s.startswith("etcd v3.6.16: copied from kubernetes-v1.37.2_etcd-v3.6.16") for s in steps)
    assert binaries.cached_releases(cache) == ["v1.34.4", "v1.37.2"]
    # Cached: nothing is built again.
    again = binaries.ensure(cache_root=cache, kubernetes_version="v1.34.4")
    assert again.sources == {n: "cache" for n in binaries.NAMES} and len(calls.read_text().splitlines()) == 3


def test_a_missing_version_is_named_when_building_is_not_allowed(tmp_path):
    with pytest.raises(SandboxError, match=r"run 'k8sctl sandbox binaries --kubernetes-version 1.35' to build them"):
        binaries.ensure(cache_root=tmp_path, allow_build=False, kubernetes_version="v1.35.4")


def test_assets_count_only_for_the_version_they_report(tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, version in (("kube-apiserver", "v1.36.3"), ("kube-controller-manager", "v1.36.3"), ("etcd", "3.6.16")):
        (assets / name).write_text(f"#!/bin/sh\necho 'Kubernetes {version}'\n")
        (assets / name).chmod(0o755)
    found, sources, missing = binaries.locate(tmp_path / "cache", str(assets), "v1.36.3")
    assert missing == [] and set(sources.values()) == {"KUBEBUILDER_ASSETS"}
    found, sources, missing = binaries.locate(tmp_path / "cache", str(assets), "v1.37.2")
    assert sources == {"etcd": "KUBEBUILDER_ASSETS"} and missing == ["kube-apiserver", "kube-controller-manager"]
    found, sources, missing = binaries.locate(tmp_path / "cache", str(assets), None)  # as they are
    assert missing == []
