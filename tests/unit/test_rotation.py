"""Pure parts of `clientconfig rotate`: the new kubeconfig, the options, whose account and which
address (a loopback TLS listener plays a server). No cluster."""
from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
import yaml

from k8sctl import rotation
from k8sctl import serviceaccounts as sa
from k8sctl.errors import ClusterError, UsageError
from k8sctl.lifecycle import ServiceAccountRef
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


# --- whose account, and which address: never the claims alone --------------------------------

def _entry_with_claims(namespace: str, name: str):
    from k8sctl.lifecycle import _entry

    claims = {"kubernetes.io/serviceaccount/namespace": namespace,
              "kubernetes.io/serviceaccount/service-account.name": name}
    token = "e30." + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + ".c2ln"
    doc = kubeconfig()
    doc["users"][0]["user"]["token"] = token
    secret = {"metadata": {"name": "s", "namespace": "ops"},
              "data": {"kubeconfig": base64.b64encode(yaml.safe_dump(doc).encode()).decode()}}
    cc = {"metadata": {"name": "cc", "namespace": "ops"}, "spec": {"contextName": doc["contexts"][0]["name"],
                                                                   "kubeConfigSecret": {"name": "s"}}}
    return _entry(cc, secret)


def test_the_account_is_the_confirmed_one_or_the_named_one_never_the_claims_alone():
    decide = rotation._decide_account
    confirmed = sa.TokenReview(ServiceAccountRef("ops", "k8ssandra-operator"))
    unconfirmed = sa.TokenReview(None, "not authenticated")
    forged = _entry_with_claims("kube-system", "clusterrole-aggregation-controller")
    assert decide(confirmed, forged, rotation.RotateOptions(all=True), "ops") == ServiceAccountRef(
        "ops", "k8ssandra-operator")
    with pytest.raises(ClusterError, match="confirms .* ops/k8ssandra-operator, not --serviceaccount x"):
        decide(confirmed, forged, rotation.RotateOptions(all=True, serviceaccount="x"), "ops")
    with pytest.raises(ClusterError, match="claims name kube-system/clusterrole-aggregation-controller, not the "
                                           "default ops/k8ssandra-operator: pass --serviceaccount and --src-namespace"):
        decide(unconfirmed, forged, rotation.RotateOptions(all=True), "ops")
    assert decide(unconfirmed, forged, rotation.RotateOptions(all=True, serviceaccount="op"), "ops") == \
        ServiceAccountRef("ops", "op")
    agreeing = _entry_with_claims("ops", "k8ssandra-operator")
    assert decide(unconfirmed, agreeing, rotation.RotateOptions(all=True), "ops") == ServiceAccountRef(
        "ops", "k8ssandra-operator")


def test_account_of_takes_only_a_service_account_user_name():
    assert sa.account_of("system:serviceaccount:ns:name") == ServiceAccountRef("ns", "name")
    for name in (None, "", "admin", "system:serviceaccount:ns", "system:serviceaccount:ns:a:b",
                 "system:serviceaccount::name"):
        assert sa.account_of(name) is None


def test_an_old_token_secret_is_deleted_only_for_the_account_and_the_stored_token():
    account = ServiceAccountRef("ops", "op")
    secret = {"type": "kubernetes.io/service-account-token",
              "metadata": {"annotations": {"kubernetes.io/service-account.name": "op"}},
              "data": {"token": base64.b64encode(b"the-old-token").decode()}}
    assert rotation._why_not_deleted(account, "t", secret, "the-old-token") is None
    assert "does not hold the old stored token" in rotation._why_not_deleted(account, "t", secret, "another")
    assert "is not a token Secret of other" in rotation._why_not_deleted(ServiceAccountRef("ops", "other"), "t",
                                                                         secret, "the-old-token")
    assert "already gone" in rotation._why_not_deleted(account, "t", None, "the-old-token")


def test_prove_server_is_a_handshake_checked_against_the_given_ca(tmp_path):
    from k8sctl_sandbox import pki

    ours = pki.generate_cluster_pki(tmp_path / "ours", "ours", ["127.0.0.1"])
    theirs = pki.generate_cluster_pki(tmp_path / "theirs", "theirs", ["127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(ours.serving_cert), str(ours.serving_key))
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve():
        for _ in range(3):
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    received.append(tls.recv(100))
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    sa.prove_server(url, None, ours.ca_cert.read_bytes(), 5.0)
    with pytest.raises(ClusterError, match=f"{url} is not proven to be the cluster's API server"):
        sa.prove_server(url, None, theirs.ca_cert.read_bytes(), 5.0)
    with pytest.raises(ClusterError, match="not proven"):  # a name the certificate does not carry
        sa.prove_server(url, "elsewhere.example", ours.ca_cert.read_bytes(), 5.0, sa.connect(url, 5.0))
    thread.join(10)
    listener.close()
    assert received == [b""]  # the proven connection carried nothing after the handshake
    with pytest.raises(ClusterError, match="not an https:// address"):
        sa.prove_server("http://127.0.0.1:1", None, None, 1.0)


def test_with_ca_trusts_only_the_given_ca():
    doc = kubeconfig()
    out = sa.with_ca(doc, b"PEM")
    assert out["clusters"][0]["cluster"]["certificate-authority-data"] == base64.b64encode(b"PEM").decode()
    assert out["clusters"][0]["cluster"]["server"] == doc["clusters"][0]["cluster"]["server"]
    assert doc["clusters"][0]["cluster"] != out["clusters"][0]["cluster"]
