"""What every command shares: global flags, error-to-exit-code mapping, output."""
from __future__ import annotations

import enum
import functools
import json
import logging
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


def _one_line(text: str) -> str:
    from k8sctl import redact

    return redact.redact(" ".join(str(text).split()))


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: message` on one line of stderr (credentials redacted); return the Exit to raise."""
    message = _one_line(message)
    if sys.stderr.isatty():
        from rich.markup import escape

        console().print(f"[bold red]error:[/] {escape(message)}")
    else:
        print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def warn(message: str) -> None:
    """One `warning:` line on stderr (credentials redacted, markup escaped)."""
    message = _one_line(message)
    if sys.stderr.isatty():
        from rich.markup import escape

        console().print(f"[yellow]warning:[/] {escape(message)}")
    else:
        print(f"warning: {message}", file=sys.stderr)


class _WarningHandler(logging.Handler):
    """Log records of k8sctl and of libraries (the kubernetes loader logs exec-plugin
    failures on the root logger) become one redacted `warning:` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            warn(record.getMessage())
        except Exception:  # a broken log call must never break the command
            pass


def setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _WarningHandler)] + [_WarningHandler()]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)  # library warnings (urllib3's) take the same path


def _print_traceback() -> None:
    import traceback

    print(_redacted_lines(traceback.format_exc()), file=sys.stderr, end="")


def _redacted_lines(text: str) -> str:
    from k8sctl import redact

    return redact.redact(text)


def handle_errors(fn: Callable) -> Callable:
    """Turn k8sctl errors into a one-line message and their exit code (a traceback only with -v).

    Every message goes through the credential redaction: nothing this process has read as a
    token or key can be printed, whatever put it into an exception.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except K8sctlError as e:
            if Globals.verbose:
                _print_traceback()
            raise fail(str(e) or type(e).__name__, e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a bug, not a user error: still one line unless -v
            if Globals.verbose:
                _print_traceback()
            raise fail(f"internal error: {type(e).__name__}: {e} (run with -v for details and report it)", 1) from None

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
