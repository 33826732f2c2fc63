"""typer wiring of k8sctl (the app; the entry point is `k8sctl.cli.main`). No Kubernetes logic
here: commands complete their options, call the domain, and render what it returns."""
from __future__ import annotations

import typer

from k8sctl import __version__
from k8sctl.cli import clientconfig, completion, plugins, reconcile
from k8sctl.cli.common import Globals, setup_logging

app = typer.Typer(
    name="k8sctl",
    # Commands of other distributions (the sandbox's) are found through entry points, and only
    # when a command that k8sctl itself lacks is asked for, or the help lists them.
    cls=plugins.PluginGroup,
    # `k8sctl completion SHELL` prints each shell's own script (typer's --show-completion guesses
    # the shell, and printed bash's for `--show-completion zsh`).
    add_completion=False,
    help="ClientConfig and multi-cluster tooling for the K8ssandra operator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help like kubectl's: rich's help formatter alone costs ~100 ms of imports.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"k8sctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "-v", "--verbose", count=True,
                                help="Show details (and tracebacks) of failures; -vv also each API request "
                                     "(method, path, status, milliseconds, context), like kubectl -v=6."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    Globals.verbose = verbose > 0
    setup_logging(verbose)


clientconfig.register(app)
reconcile.register(app)
completion.register(app)
