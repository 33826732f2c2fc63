"""Applies to every test: the credential-leak guard on every k8sctl invocation."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests import leakguard


@pytest.fixture(autouse=True, scope="session")
def _no_credential_in_any_cli_output():
    original = CliRunner.invoke

    def invoke(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        stderr = result.stderr if result.stderr_bytes is not None else None
        leakguard.check(result.output, result.stdout, stderr, where="output")
        return result

    CliRunner.invoke = invoke  # type: ignore[method-assign]
    yield
    CliRunner.invoke = original  # type: ignore[method-assign]


def pytest_terminal_summary(terminalreporter):
    if leakguard.checked_outputs:
        terminalreporter.write_line(f"credential-leak guard: {len(leakguard.known())} credential forms checked "
                                    f"against {leakguard.checked_outputs} outputs of k8sctl")
