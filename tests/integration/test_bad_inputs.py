"""Every runnable row of docs/bad-inputs.md: exit code, one error line, no traceback, nothing written."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as clientconfig_api
from k8sctl.cli import app
from k8sctl_sandbox import crds_and_identity

NS = crds_and_identity.OPERATOR_NAMESPACE

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "bad-inputs.md"
_ROW = re.compile(r"^\| `(?P<command>[^`]+)` \| (?P<exit>\d) \| (?P<message>.+) \|$")


def rows() -> list[tuple[str, int, str]]:
    out = []
    for line in CATALOGUE.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            out.append((m["command"], int(m["exit"]), m["message"]))
    return out


def test_the_catalogue_has_rows():
    assert len(rows()) >= 30


def _objects(admins) -> set[tuple[int, str, str]]:
    """Every Secret and ClientConfig name in the operator's namespace of clusters 0 and 1."""
    found = set()
    for i in (0, 1):
        for resource in (kube.SECRET, clientconfig_api.resource("v1beta1")):
            found |= {(i, resource.kind, o["metadata"]["name"]) for o in admins[i].list(resource, NS)}
    return found


@pytest.mark.parametrize("command, exit_code, message", rows(), ids=[r[0][:70] for r in rows()])
def test_bad_input(command, exit_code, message, sandbox, admins, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.yaml").write_text("clusters: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "art" / "art.kubeconfig").mkdir(parents=True)
    # Cluster 1's admin kubeconfig with cluster 2's CA and a quoted "false": were it taken as true,
    # the wrong CA would go unnoticed.
    quoted = kc.read_file(Path(sandbox.clusters[1].kubeconfig))
    quoted["clusters"][0]["cluster"]["certificate-authority-data"] = \
        kc.read_file(Path(sandbox.clusters[2].kubeconfig))["clusters"][0]["cluster"]["certificate-authority-data"]
    quoted["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = "false"
    kc.write_private(tmp_path / "quoted.yaml", kc.dump(quoted))
    places = {f"kc{i}": c.kubeconfig for i, c in enumerate(sandbox.clusters)}
    places |= {f"ic{i}": c.in_cluster_kubeconfig for i, c in enumerate(sandbox.clusters)}
    places |= {"tmp": str(empty), "file": str(tmp_path / "file"), "badyaml": str(tmp_path / "bad.yaml"),
               "yamllist": str(tmp_path / "list.yaml"), "artdir": str(tmp_path / "art"),
               "quotedfalse": str(tmp_path / "quoted.yaml")}
    argv = shlex.split(command.format(**places))
    before = _objects(admins)
    r = CliRunner().invoke(app, argv, env={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")})
    assert r.exit_code == exit_code, r.output
    assert message in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output
    if not message.startswith(("Invalid value", "No such option")):  # click's usage errors add a usage line
        assert r.output.count("\n") == 1 and r.output.startswith("error: "), r.output
    assert _objects(admins) == before, "something was written"
