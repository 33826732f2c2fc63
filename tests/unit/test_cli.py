"""CLI edge: help stays fast (no kubernetes import), errors are one line with exit codes."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from k8sctl import __version__
from k8sctl.cli import app


def test_help_does_not_import_the_kubernetes_client():
    code = ("import sys; sys.argv=['k8sctl','--help']\n"
            "from k8sctl.cli import app\n"
            "try:\n app()\n"
            "except SystemExit: pass\n"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('kubernetes','cryptography','urllib3')]\n"
            "print('LOADED', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out


def test_the_command_exits_with_its_code_and_all_its_output(tmp_path):
    """main() ends the process without the interpreter's teardown: what was printed must all be
    there (a file, not a terminal: fully buffered), and the exit code must be the command's."""
    out = tmp_path / "out.json"
    # A command that writes its result as `render` does (sys.stdout.write, no flush): its last
    # lines are still in the buffer when it returns.
    code = ("import sys\nimport k8sctl.cli as cli\n"
            "def command(**_):\n    for _ in range(1000):\n        sys.stdout.write('x')\n"
            "    sys.stdout.write('\\nend\\n')\n    raise SystemExit(3)\n"
            "cli.app = command\ncli.main()\n")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as users run it
    with out.open("w") as f:
        r = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.PIPE, text=True, env=buffered)
    assert r.returncode == 3 and out.read_text().endswith("x\nend\n"), r.stderr
    r = subprocess.run([sys.executable, "-m", "k8sctl", "create-clientconfig", "--bogus"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "No such option: --bogus" in r.stderr
    r = subprocess.run([sys.executable, "-m", "k8sctl", "create-clientconfig", "--src-kubeconfig", "/nonexistent"],
                       capture_output=True, text=True, env={**os.environ, "KUBECONFIG": "/nonexistent/kc"})
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_version_and_usage_errors():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"k8sctl {__version__}"
    r = CliRunner().invoke(app, ["create-clientconfig", "--bogus"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["create-clientconfig"], env={"KUBECONFIG": "/nonexistent/kc"})
    assert r.exit_code == 2 and r.output.startswith("error: pass --src-kubeconfig")
    assert "Traceback" not in r.output


def test_sandbox_status_without_sandbox(tmp_path):
    r = CliRunner().invoke(app, ["sandbox", "status", "--dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no sandbox in" in r.output


def test_missing_binaries_without_go_is_explained(tmp_path, monkeypatch):
    from k8sctl.errors import SandboxError
    from k8sctl_sandbox import binaries

    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` anywhere
    try:
        binaries.ensure(cache_root=tmp_path / "cache", assets_dir=None)
    except SandboxError as e:
        assert "Go is not installed" in str(e) and "KUBEBUILDER_ASSETS" in str(e)
    else:
        raise AssertionError("expected a SandboxError")
    assert not (tmp_path / "cache" / binaries.cache_dir(tmp_path / "cache").name).exists()


def test_free_ports_avoid_the_ephemeral_range():
    from k8sctl_sandbox import processes

    low, _ = processes._ephemeral_range()
    ports = {processes.free_port() for _ in range(50)}
    assert all(10000 <= p < max(low, 10001) for p in ports) and len(ports) > 40


def test_free_ports_are_never_handed_out_twice():
    """A sandbox picks all its ports before its servers bind them: a repeat would be a port race."""
    from k8sctl_sandbox import processes

    ports = [processes.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def _help_texts(env: dict[str, str]) -> dict[str, str]:
    out = {}
    for argv in (["--help"], ["clientconfig", "--help"], ["sandbox", "--help"], ["create-clientconfig", "--help"],
                 ["clientconfig", "rotate", "--help"], ["reconcile", "--help"]):
        r = CliRunner().invoke(app, argv, env=env, terminal_width=int(env["COLUMNS"]))
        assert r.exit_code == 0, r.output
        out[" ".join(argv)] = r.output
    return out


def test_help_never_cuts_a_summary_or_breaks_a_word():
    """CI logs are not terminals: at any width every command summary is whole (no "..." or "…") and
    names like kube-controller-manager or data-plane are never split at a hyphen."""
    for columns in ("60", "80", "200"):
        for argv, text in _help_texts({"COLUMNS": columns}).items():
            assert "…" not in text and not any(line.rstrip().endswith("...") and "[" not in line
                                               for line in text.splitlines()), (columns, argv, text)
            assert not any(line.rstrip().endswith("-") for line in text.splitlines()), (columns, argv, text)
    wide = _help_texts({"COLUMNS": "60"})
    assert "kube-controller-manager" in wide["sandbox --help"]
    assert "Create or update the kubeconfig Secret and ClientConfig through which the operator reaches a cluster." \
        in " ".join(wide["--help"].split())


def _complete(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "k8sctl"], capture_output=True, text=True,
                          env={**os.environ, **env}).stdout


def test_completion_prints_each_shells_own_script():
    scripts = {}
    for shell in ("bash", "zsh", "fish", "pwsh"):
        r = CliRunner().invoke(app, ["completion", shell])
        assert r.exit_code == 0 and "_K8SCTL_COMPLETE" in r.output, (shell, r.output)
        scripts[shell] = r.output
    assert "complete -o default -F" in scripts["bash"] and "#compdef k8sctl" in scripts["zsh"]
    assert "complete --command k8sctl" in scripts["fish"] and "Register-ArgumentCompleter" in scripts["pwsh"]
    assert len(set(scripts.values())) == 4
    r = CliRunner().invoke(app, ["completion", "tcsh"])
    assert r.exit_code == 2
    assert "--show-completion" not in CliRunner().invoke(app, ["--help"]).output


def test_the_shell_completes_commands_through_the_script_protocol():
    out = _complete({"_K8SCTL_COMPLETE": "complete_bash", "COMP_WORDS": "k8sctl clientconfig r", "COMP_CWORD": "2"})
    assert out.split() == ["rotate"]


def test_context_names_complete_from_the_kubeconfig_the_command_would_read(tmp_path):
    from k8sctl.cli.completion import contexts_from

    doc = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
           "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in ("kind-a", "kind-b", "prod")]}
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))

    class Ctx:
        params = {"src_kubeconfig": str(path)}

    assert contexts_from("src_kubeconfig")(Ctx(), "kind-") == ["kind-a", "kind-b"]
    Ctx.params = {"src_kubeconfig": str(tmp_path / "missing")}
    assert contexts_from("src_kubeconfig")(Ctx(), "") == []  # no error printed: no suggestions


def test_verbose_works_after_the_command_too():
    from k8sctl.cli.plugins import verbose_first

    assert verbose_first(["clientconfig", "verify", "-v"]) == ["-v", "clientconfig", "verify"]
    assert verbose_first(["reconcile", "demo", "-vv", "--", "-v"]) == ["-vv", "reconcile", "demo", "--", "-v"]
    assert verbose_first(["--verbose", "x"]) == ["--verbose", "x"]
    for argv in (["clientconfig", "verify", "-v", "--help"], ["create-clientconfig", "--help", "-vv"]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 0 and "Usage:" in r.output, (argv, r.output)
    r = CliRunner().invoke(app, ["clientconfig", "list", "--kubeconfig", "/nonexistent/k8sctl-test", "-v"])
    assert r.exit_code == 2 and "No such option" not in r.output and "does not exist" in r.output, r.output
