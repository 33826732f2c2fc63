"""Failure kinds, each mapped to one exit code at the CLI edge.

Domain code raises these with a message that says what is wrong and how to fix
it; the CLI prints the message on one line (a traceback only with -v).
"""
from __future__ import annotations


class K8sctlError(Exception):
    """Base of every error k8sctl reports to a user."""

    exit_code = 1


class UsageError(K8sctlError):
    """Bad flags or input files: the user can fix the command line (exit 2)."""

    exit_code = 2


class ClusterError(K8sctlError):
    """A cluster refused, failed or could not be reached (exit 1)."""

    exit_code = 1


class SandboxError(K8sctlError):
    """A local control-plane process could not be built, started or stopped (exit 1)."""

    exit_code = 1
