"""What every command shares: global flags, error-to-exit-code mapping, output."""
from __future__ import annotations

import enum
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from k8sctl.errors import K8sctlError


class Output(str, enum.Enum):
    text = "text"
    json = "json"
    yaml = "yaml"


class Globals:
    verbose: bool = False


def console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: message` on one line of stderr; return the Exit to raise."""
    if sys.stderr.isatty():
        console().print(f"[bold red]error:[/] {message}", markup=False if "[" in message else True)
    else:
        print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn k8sctl errors into a one-line message and their exit code (a traceback only with -v)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except K8sctlError as e:
            if Globals.verbose:
                console().print_exception()
            raise fail(" ".join(str(e).split()) or type(e).__name__, e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a bug, not a user error: still one line unless -v
            if Globals.verbose:
                raise
            raise fail(f"internal error: {type(e).__name__}: {' '.join(str(e).split())} "
                       f"(run with -v for details and report it)", 1) from None

    return wrapper


def render(data: Any, output: Output, text: Callable[[Any], None]) -> None:
    """Print a command's result: `text` draws it for people; json/yaml is one parsable document."""
    if output is Output.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    elif output is Output.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        text(data)


def env() -> dict[str, str]:
    return dict(os.environ)


OutputOption = typer.Option(Output.text, "-o", "--output", help="Output format: text for people, json or yaml for scripts.")
