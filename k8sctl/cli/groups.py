"""Help that never cuts a value: a command's summary is its help's first sentence, wrapped (click
shortens it to the terminal's width with "..."; CI logs are not terminals), and no word is broken
(click's wrapper splits `kube-controller-manager` or `data-plane` at a hyphen)."""
from __future__ import annotations

import sys
from typing import Any

from typer._click import _textwrap
from typer.core import TyperGroup


class _WholeWords(_textwrap.TextWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "break_on_hyphens": False, "break_long_words": False})


# click's help formatter takes its wrapper from this module at each call (typer's copy of click,
# pinned with typer): every option and command help line is wrapped by whole words.
_textwrap.TextWrapper = _WholeWords  # type: ignore[misc]


class FullHelpGroup(TyperGroup):
    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
