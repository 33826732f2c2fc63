"""Kubeconfig loading, merging and building (pure, no cluster)."""
from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import yaml

from k8sctl import kubeconfig as kc
from k8sctl.errors import UsageError


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def config(name: str, server: str, **cluster_extra) -> dict:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, **cluster_extra}}],
        "users": [{"name": name, "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }


def test_default_paths_follow_kubeconfig_env(tmp_path):
    assert kc.default_paths({"KUBECONFIG": f"/a{os.pathsep}{os.pathsep}/b", "HOME": "/h"}) == [Path("/a"), Path("/b")]
    assert kc.default_paths({"HOME": "/h"}) == [Path("/h/.kube/config")]


def test_merge_first_file_wins_and_missing_files_are_skipped(tmp_path):
    a = write(tmp_path / "a", config("one", "https://a:1"))
    b_doc = config("one", "https://b:2")
    b_doc["clusters"].append({"name": "two", "cluster": {"server": "https://b:3"}})
    b_doc["contexts"].append({"name": "two", "context": {"cluster": "two", "user": "one"}})
    b_doc["current-context"] = "two"
    b = write(tmp_path / "b", b_doc)
    merged = kc.load([tmp_path / "missing", a, b])
    assert merged["current-context"] == "one"
    assert kc.select_context(merged, "one").server == "https://a:1"
    assert kc.select_context(merged, "two").server == "https://b:3"


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ca.crt").write_bytes(b"PEM")
    p = write(tmp_path / "sub" / "config", config("c", "https://x:1", **{"certificate-authority": "ca.crt"}))
    view = kc.select_context(kc.load([p]), None)
    assert view.cluster["certificate-authority"] == str(tmp_path / "sub" / "ca.crt")
    assert kc.ca_pem_of(view.cluster) == b"PEM"


@pytest.mark.parametrize("content, message", [
    ("clusters: [", "not valid YAML at line"),
    ("- a\n- b\n", "is not a kubeconfig"),
    ("clusters: {a: 1}\n", "'clusters' must be a list of named entries"),
])
def test_invalid_files_are_usage_errors(tmp_path, content, message):
    p = tmp_path / "bad"
    p.write_text(content)
    with pytest.raises(UsageError, match=message):
        kc.load([p])


def test_missing_and_unknown(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        kc.load([tmp_path / "nope"])
    doc = config("a", "https://a:1")
    with pytest.raises(UsageError, match=r"context 'b' not found in kubeconfig; known contexts: a"):
        kc.select_context(doc, "b")
    doc["contexts"][0]["context"]["cluster"] = "gone"
    with pytest.raises(UsageError, match="refers to cluster 'gone'"):
        kc.select_context(doc, "a")
    with pytest.raises(UsageError, match="no current-context"):
        kc.select_context({"contexts": []}, None)


def test_build_kubeconfig_has_one_of_each_and_a_ca():
    doc = kc.build_kubeconfig(cluster_name="c", server="https://s:1", ca_pem=b"CA", user_name="c-sa",
                              token="tok", context_name="ctx")
    assert [len(doc[k]) for k in ("clusters", "users", "contexts")] == [1, 1, 1]
    assert doc["current-context"] == "ctx"
    assert doc["users"][0] == {"name": "c-sa", "user": {"token": "tok"}}
    assert base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    with pytest.raises(UsageError, match="CA certificate is empty"):
        kc.build_kubeconfig(cluster_name="c", server="https://s:1", ca_pem=b" \n", user_name="u", token="t", context_name="x")


def test_write_private_is_0600_and_atomic(tmp_path):
    p = tmp_path / "d" / "secret.yaml"
    kc.write_private(p, "x: 1\n")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "x: 1\n"
    assert [f.name for f in p.parent.iterdir()] == ["secret.yaml"]  # no temp file left


@pytest.mark.parametrize("server", ["https://exa mple:6443", "https://host:99999", "ftp://host", "no-scheme:6443"])
def test_invalid_server_urls_are_usage_errors(server):
    with pytest.raises(UsageError, match="invalid server URL"):
        kc.select_context(config("c", server), "c")
