"""The `k8sctl` command's entry point. The typer app (`k8sctl.cli.root`) is imported inside `main`,
after the signal handlers are in place: an interrupt during start-up is then one line, not a
traceback. `app` is still reachable as `k8sctl.cli.app`."""
from __future__ import annotations

import os
import sys


def __getattr__(name: str):
    if name == "app":
        from k8sctl.cli.root import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """The `k8sctl` command. SIGTERM and SIGHUP raise as Ctrl-C does (KeyboardInterrupt), so that
    every command cleans up what it made and says `error: interrupted` (exit 130), also during
    start-up. Once a command has finished (its files closed, its threads joined, its output
    written), the process ends without the interpreter's teardown of some 200 modules and their
    objects: ~25 ms, an eighth of a create-clientconfig on loopback. k8sctl registers no exit
    handlers; an exception still goes the usual way."""
    from k8sctl.interrupts import signals_raise

    try:
        with signals_raise():
            from k8sctl.cli import completion  # typer: after the handlers, as the app

            if completion.COMPLETE_VAR in os.environ:  # the shell asks for completions
                completion.init()
            app = sys.modules[__name__].app  # the typer app (or what a test put there)
            app(prog_name=completion.PROG)  # also under `python -m k8sctl`: the name the scripts complete
        code: int = 0
    except SystemExit as e:
        if isinstance(e.code, str):  # click's way of saying "print this and fail"
            print(e.code, file=sys.stderr)
            code = 1
        else:
            code = e.code or 0
    except KeyboardInterrupt:  # before a command's own handling was in place (start-up)
        print("error: interrupted", file=sys.stderr)
        code = 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`k8sctl ... | head -1`): its reader has had enough
            pass
    os._exit(code)
