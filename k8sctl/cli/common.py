"""What every command shares: global flags, error-to-exit-code mapping, output."""
from __future__ import annotations

import enum
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

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
    failures on the root logger) become one redacted `warning:` line each; -vv's request
    trace (debug records) a redacted `request:` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.INFO:
                warn(record.getMessage())
            else:
                print(f"request: {_one_line(record.getMessage())}", file=sys.stderr)
        except Exception:  # a broken log call must never break the command
            pass


def setup_logging(verbose: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _WarningHandler)] + [_WarningHandler()]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # -vv: k8sctl's own request trace only (libraries' debug logs stay off).
    logging.getLogger("k8sctl.requests").setLevel(logging.DEBUG if verbose >= 2 else logging.NOTSET)
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


# --- connection options: one set for every command that talks to the control plane ---------
# Like kubectl's ConfigFlags: declared once here, parsed once by `connect` into a Connection.

KubeconfigOption = typer.Option(None, "--kubeconfig", help="Control-plane kubeconfig (default: $KUBECONFIG, then "
                                "~/.kube/config, then the pod's service account).")
ContextOption = typer.Option(None, "--context", help="Control-plane context (default: current-context).")
NamespaceOption = typer.Option(None, "-n", "--namespace", help="Namespace of the ClientConfigs (default: the "
                               "context's, else k8ssandra-operator).")
RequestTimeoutOption = typer.Option(None, "--request-timeout", help="Time to wait for each API request, like "
                                    "kubectl: 30s, 1m (default: 5s to connect, 30s to answer; 0: no limit).")


@dataclass
class Connection:
    """The control plane as the connection options name it: kubeconfig, context, namespace, timeout."""

    doc: dict
    context: str
    namespace: str
    timeout: tuple[float | None, float | None]

    def client(self):
        """A new KubeClient for the context (a context manager; the caller closes it)."""
        from k8sctl import kube

        return kube.KubeClient(self.doc, self.context, timeout=self.timeout, source="the control-plane kubeconfig")


def request_timeouts(request_timeout: Optional[str]) -> tuple[float | None, float | None]:
    """--request-timeout as (connect, read) seconds: the default (5s, 30s); `0` for no limit."""
    from k8sctl import durations, kube

    if request_timeout is None:
        return kube.DEFAULT_TIMEOUT
    seconds = durations.parse(request_timeout, "--request-timeout")
    return (None, None) if seconds == 0 else (min(seconds, kube.DEFAULT_TIMEOUT[0]), seconds)


def connect(kubeconfig: Optional[Path], context: Optional[str], namespace: Optional[str],
            request_timeout: Optional[str]) -> Connection:
    """Parse the connection options (and the kubeconfig) into a Connection: the one place that does."""
    from k8sctl import kubeconfig as kc
    from k8sctl.clientconfigs import DEFAULT_NAMESPACE
    from k8sctl.errors import UsageError

    if namespace is not None and not namespace.strip():
        raise UsageError("--namespace is empty: give a namespace or leave the option out")
    timeout = request_timeouts(request_timeout)
    doc = kc.load_or_in_cluster([kubeconfig.expanduser()] if kubeconfig else [], env())
    view = kc.select_context(doc, context, "the control-plane kubeconfig")
    return Connection(doc, view.name, namespace or view.namespace or DEFAULT_NAMESPACE, timeout)



class Spinner:
    """A spinner on stderr when it is a terminal; silent otherwise (CI logs stay clean)."""

    def __init__(self, text: str):
        self._status = console().status(text, spinner="dots") if sys.stderr.isatty() else None

    def __enter__(self) -> Spinner:
        if self._status:
            self._status.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._status:
            self._status.stop()

    def update(self, text: str) -> None:
        if self._status:
            from rich.markup import escape

            self._status.update(escape(text))


WAIT_OPERATOR_DEFAULT = "5m"
WaitOperatorOption = typer.Option(None, "--wait-operator", metavar="[=TIMEOUT]",
                                  help=f"After a change, wait until k8ssandra-operator has loaded it (default "
                                       f"{WAIT_OPERATOR_DEFAULT}; --wait-operator=90s for another limit).")


def optional_value(option: str, default: str):
    """A command class that lets `option` be given bare (meaning `default`) or as `option=VALUE`,
    like kubectl's --dry-run[=...]; typer itself has no optional option values."""
    from typer.core import TyperCommand

    class Command(TyperCommand):
        def parse_args(self, ctx, args):
            cut = args.index("--") if "--" in args else len(args)
            args = [f"{option}={default}" if a == option and i < cut else a for i, a in enumerate(args)]
            return super().parse_args(ctx, args)

    return Command


def wait_seconds(value: Optional[str], flag: str = "--wait-operator") -> Optional[float]:
    from k8sctl import durations
    from k8sctl.errors import UsageError

    if value is None:
        return None
    seconds = durations.parse(value, flag)
    if seconds <= 0:
        raise UsageError(f"{flag} must be a positive duration like 90s or 5m")
    return seconds
