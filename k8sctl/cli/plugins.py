"""Commands that other distributions add to k8sctl (the test bed's `k8sctl sandbox`), found through
the `k8sctl.commands` entry points. Each entry point names a typer app; its name is the command.

The entry points are read only when a command k8sctl lacks is asked for or the help lists the
commands: reading them costs tens of milliseconds, which `create-clientconfig` never pays.
"""
from __future__ import annotations

import re
from typing import Any

import typer

from k8sctl.cli.groups import FullHelpGroup

GROUP = "k8sctl.commands"
# Commands documented with k8sctl that live in another distribution: what to install for each.
KNOWN = {"sandbox": ("k8sctl-sandbox", "the local multi-cluster test bed")}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _not_installed(name: str) -> Any:
    """A hidden command that says, in one line, which package brings `name` (whatever follows it)."""
    from k8sctl.cli.common import fail

    dist, what = KNOWN[name]
    stub = typer.Typer(add_completion=False)

    @stub.command(name, hidden=True, add_help_option=False,
                  context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def missing() -> None:
        raise fail(f"`k8sctl {name}` ({what}) comes with the {dist} package, which is not installed: pip install "
                   f"{dist} (from a clone of k8sctl: pip install ./sandbox)", 2)

    return typer.main.get_command(stub)


_VERBOSE = re.compile(r"^(-v+|--verbose)$")


def verbose_first(args: list[str]) -> list[str]:
    """`-v`, `-vv` and `--verbose` anywhere before `--` moved to the front, where the root takes
    them: `k8sctl clientconfig verify -v` as `k8sctl -v clientconfig verify`."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if _VERBOSE.match(a)]
    return flags + [a for a in args[:end] if not _VERBOSE.match(a)] + args[end:]


class PluginGroup(FullHelpGroup):
    """k8sctl's own commands, then those of installed plugins; the verbosity flag anywhere."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, verbose_first(list(args)))

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return own + sorted(n for n in _entry_points() if n not in own)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = _entry_points().get(cmd_name)
        if ep is None:
            return _not_installed(cmd_name) if cmd_name in KNOWN else None
        loaded = typer.main.get_command(ep.load())
        loaded.name = cmd_name
        return loaded
