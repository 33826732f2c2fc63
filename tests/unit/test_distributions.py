"""The CLI and its test bed are two distributions: the CLI never imports the sandbox, benchmarks
import no test module, and `k8sctl sandbox` without the sandbox says what to install."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from k8sctl.cli import app, plugins

ROOT = Path(__file__).resolve().parents[2]


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level package of every import in every .py file under `folder`, per file."""
    out: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def test_the_cli_never_imports_the_sandbox():
    offenders = {f: sorted(n for n in names if n.split(".")[0] == "k8sctl_sandbox")
                 for f, names in _imports(ROOT / "k8sctl").items()}
    assert {f: n for f, n in offenders.items() if n} == {}
    assert len(offenders) > 20  # the scan saw the package


def test_benchmarks_import_no_test_module():
    offenders = {f: sorted(n for n in names if n.split(".")[0] == "tests")
                 for f, names in _imports(ROOT / "benchmarks").items()}
    assert {f: n for f, n in offenders.items() if n} == {}
    assert offenders


def test_the_sandbox_uses_the_cli_and_the_cli_finds_it_through_its_entry_point():
    sandbox = _imports(ROOT / "sandbox" / "k8sctl_sandbox")
    assert any(n.split(".")[0] == "k8sctl" for names in sandbox.values() for n in names)
    assert "sandbox" in plugins._entry_points()  # installed editable beside the CLI (make venv)
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "sandbox" in r.output


def test_without_the_sandbox_help_lists_no_sandbox_and_the_command_names_the_package(monkeypatch):
    monkeypatch.setattr(plugins, "_entry_points", lambda: {})
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0 and "sandbox" not in r.output and "create-clientconfig" in r.output
    for argv in (["sandbox"], ["sandbox", "up", "--clusters", "3"], ["sandbox", "--help"]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 2, (argv, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "pip install k8sctl-sandbox" in lines[0], argv


def test_a_command_of_k8sctl_itself_reads_no_entry_points():
    """Reading entry points costs tens of milliseconds: only a command k8sctl lacks, or the help, pays it."""
    code = ("import sys; sys.argv=['k8sctl','create-clientconfig','--help']\n"
            "import k8sctl.cli.plugins as p\n"
            "def boom():\n    raise SystemExit('entry points read')\n"
            "p._entry_points = boom\n"
            "from k8sctl.cli import app\n"
            "app()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "--src-kubeconfig" in r.stdout, r.stdout + r.stderr
