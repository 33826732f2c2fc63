"""`k8sctl completion bash|zsh|fish|pwsh`: the shell's completion script, and the completion of
context names from the kubeconfig a command would read (no request is made while completing)."""
from __future__ import annotations

import enum
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


class Shell(str, enum.Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    pwsh = "pwsh"


PROG = "k8sctl"
COMPLETE_VAR = "_K8SCTL_COMPLETE"


def script(shell: Shell) -> str:
    """The completion script for `shell` (the shell calls k8sctl back with _K8SCTL_COMPLETE set)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value)


def init() -> None:
    """Answer the shell's completion requests in the scripts' protocol (typer's)."""
    from typer._completion_classes import completion_init

    completion_init()


def register(app: typer.Typer) -> None:
    @app.command("completion", context_settings={"help_option_names": ["-h", "--help"]})
    def completion(shell: Shell = typer.Argument(..., help="The shell: bash, zsh, fish or pwsh.")) -> None:
        """Print the shell completion script for SHELL: `source <(k8sctl completion bash)` in ~/.bashrc."""
        typer.echo(script(shell))


def contexts_from(kubeconfig_param: str | None) -> Callable[[Any, str], list[str]]:
    """A completion of context names: those of the kubeconfig that the option named
    `kubeconfig_param` gives on the command line so far, else $KUBECONFIG, else ~/.kube/config."""
    def complete(ctx: Any, incomplete: str) -> list[str]:
        from k8sctl import kubeconfig as kc
        from k8sctl.errors import K8sctlError

        given = ctx.params.get(kubeconfig_param) if kubeconfig_param else None
        paths = [Path(given).expanduser()] if given else kc.default_paths(dict(os.environ))
        try:
            names = kc.context_names(kc.load(paths))
        except (K8sctlError, OSError, ValueError):
            return []  # completion never prints an error: no suggestions instead
        return [n for n in names if n.startswith(incomplete)]

    return complete
