"""The two distributions as users install them: the CLI's wheel alone in a fresh virtualenv holds
no sandbox, requires neither cryptography nor the sandbox, lists no `sandbox` command, and
registers a cluster of a running sandbox."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from k8sctl import kube
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl_sandbox import crds_and_identity

ROOT = Path(__file__).resolve().parents[2]
NS = crds_and_identity.OPERATOR_NAMESPACE


def _wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    return next(out.glob("*.whl"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {"cli": _wheel(ROOT, out / "cli"), "sandbox": _wheel(ROOT / "sandbox", out / "sandbox")}


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def test_the_cli_wheel_holds_the_cli_alone(wheels):
    with zipfile.ZipFile(wheels["cli"]) as z:
        names = z.namelist()
    assert any(n == "k8sctl/cli/__init__.py" for n in names)
    assert [n for n in names if "sandbox" in n or n.endswith((".yaml", "go.mod", "go.sum"))] == []
    requires = [line.split(":", 1)[1].strip() for line in _metadata(wheels["cli"]).splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in requires) == \
        ["kubernetes", "pyyaml", "rich", "typer"]


def test_the_sandbox_wheel_holds_the_test_bed_and_requires_the_cli(wheels):
    with zipfile.ZipFile(wheels["sandbox"]) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "k8sctl_sandbox/cluster.py" in names and not any(n.startswith("k8sctl/") for n in names)
    assert any(n.endswith("cass-operator/cassandra.datastax.com_cassandradatacenters.yaml") for n in names)
    assert any(n.endswith("gomod/etcd/go.mod") for n in names)
    assert "[k8sctl.commands]" in entry_points and "sandbox = k8sctl_sandbox.cli:app" in entry_points
    requires = _metadata(wheels["sandbox"])
    assert "Requires-Dist: k8sctl" in requires and "Requires-Dist: cryptography" in requires


def test_the_cli_alone_in_a_fresh_virtualenv_registers_a_sandbox_cluster(wheels, sandbox, admins, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheels["cli"])], capture_output=True,
                         text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    k8sctl = str(venv / "bin" / "k8sctl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import importlib.util as u; print(u.find_spec('k8sctl_sandbox'), "
                                "u.find_spec('cryptography'))"], capture_output=True, text=True, env=env, check=True)
    assert installed.stdout.split() == ["None", "None"]

    helped = subprocess.run([k8sctl, "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "create-clientconfig" in helped.stdout and "sandbox" not in helped.stdout
    missing = subprocess.run([k8sctl, "sandbox", "up"], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert "pip install k8sctl-sandbox" in missing.stderr and "Traceback" not in missing.stderr

    src, dest = sandbox.clusters[1], sandbox.clusters[0]
    name = f"wheel-{uuid.uuid4().hex[:6]}"
    try:
        r = subprocess.run([k8sctl, "create-clientconfig", "--src-kubeconfig", src.kubeconfig,
                            "--dest-kubeconfig", dest.kubeconfig, "--in-cluster-kubeconfig", src.in_cluster_kubeconfig,
                            "--name", name, "--context-name", name, "-o", "json"],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["registrations"][0]["name"] == name
        cc = admins[0].get(clientconfig_api.resource("v1beta1"), name, NS)
        assert clientconfig_api.context_of(cc) == name
    finally:
        for resource, obj in ((clientconfig_api.resource("v1beta1"), name), (kube.SECRET, f"{name}-config")):
            try:
                admins[0].delete(resource, obj, NS)
            except kube.NotFound:
                pass
