"""Pure parts of `clientconfig rotate`: the new kubeconfig and the options. No cluster."""
from __future__ import annotations

from pathlib import Path

import pytest

from k8sctl import rotation
from k8sctl.errors import UsageError
from tests.unit.test_lifecycle import LEGACY, kubeconfig


def test_with_token_changes_only_the_token():
    doc = kubeconfig()
    new = rotation.with_token(doc, "u", "new-token-value")
    assert new["users"][0]["user"] == {"token": "new-token-value"} and doc["users"][0]["user"]["token"] == LEGACY
    assert new["clusters"] == doc["clusters"]


def test_rotate_options_are_validated():
    with pytest.raises(UsageError, match="--all"):
        rotation.RotateOptions().validate()
    with pytest.raises(UsageError, match="--all"):
        rotation.RotateOptions(names=["a"], all=True).validate()
    with pytest.raises(UsageError, match="--src-context"):
        rotation.RotateOptions(all=True, src_context="c").validate()
    with pytest.raises(UsageError, match="--no-verify-server checks the new token through --src-kubeconfig"):
        rotation.RotateOptions(all=True, verify_server=False).validate()
    rotation.RotateOptions(all=True, verify_server=False, src_kubeconfig=Path("src.yaml"), dry_run=True).validate()
