"""Connections shared by TLS identity (kube._SharedPools) and opened ahead (kube.Preconnected),
on a real API server: a bearer token travels with each request, a client certificate with the
connection, so only clients that differ by token may share one."""
from __future__ import annotations

import base64
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl_sandbox import crds_and_identity
from tests import leakguard

NS = crds_and_identity.OPERATOR_NAMESPACE
SA = "k8ssandra-operator"  # the operator's service account in every prepared cluster


def mint(admin: kube.KubeClient, namespace: str, account: str) -> str:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}
    return admin.request("POST", kube.SERVICEACCOUNT.path(namespace, account, "token"), body)["status"]["token"]


def token_kubeconfig(admin_doc: dict, token: str) -> dict:
    cluster = admin_doc["clusters"][0]["cluster"]
    return kc.build_kubeconfig(cluster_name="c", server=cluster["server"], ca_pem=base64.b64decode(
        cluster["certificate-authority-data"]), user_name="u", token=token, context_name="ctx")


def test_clients_differing_by_token_share_connections_and_each_request_is_its_own(sandbox, admins, namespace_factory):
    c = sandbox.clusters[1]
    admin_doc = kc.read_file(Path(c.kubeconfig))
    other_ns = namespace_factory(1)
    admins[1].create(kube.SERVICEACCOUNT, {"apiVersion": "v1", "kind": "ServiceAccount",
                                           "metadata": {"name": "second"}}, other_ns)
    first = kube.KubeClient(token_kubeconfig(admin_doc, mint(admins[1], NS, SA)), "ctx",
                            trusted=False)
    second = kube.KubeClient(token_kubeconfig(admin_doc, mint(admins[1], other_ns, "second")), "ctx", trusted=False)
    try:
        assert first._transport._pool is second._transport._pool
        assert first.whoami() == f"system:serviceaccount:{NS}:{SA}"
        opened = second._transport.connections()
        assert second.whoami() == f"system:serviceaccount:{other_ns}:second"
        assert second._transport.connections() == opened  # the first client's connection, reused
        # Many at once, interleaved over the shared connections: each answer is its own client's.
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda client: (client, client.whoami()), [first, second] * 12))
        assert all(name == (f"system:serviceaccount:{NS}:{SA}" if client is first
                            else f"system:serviceaccount:{other_ns}:second") for client, name in answers)
        # Each client holds the pool once; closing both gives it back (other tests' clients of the
        # same server and CA may hold it too).
        key = first._transport._key
        users = kube._POOLS._pools[key][1]
    finally:
        first.close()
        second.close()
    assert kube._POOLS._pools.get(key, [None, 0])[1] == users - 2


def test_a_client_certificate_never_carries_a_token_clients_requests(sandbox, admins):
    c = sandbox.clusters[1]
    admin_doc = kc.read_file(Path(c.kubeconfig))
    with kube.KubeClient(admin_doc, c.context) as admin, \
            kube.KubeClient(token_kubeconfig(admin_doc, mint(admins[1], NS, SA)), "ctx",
                            trusted=False) as token_client:
        assert admin._transport._pool is not token_client._transport._pool
        # The API server authenticates a client certificate before a bearer token: a shared
        # connection would have made the token client the admin.
        assert admin.whoami() != token_client.whoami() == \
            f"system:serviceaccount:{NS}:{SA}"


def test_preconnected_connections_serve_a_token_minted_afterwards(sandbox, admins):
    c = sandbox.clusters[2]
    admin_doc = kc.read_file(Path(c.kubeconfig))
    cluster = admin_doc["clusters"][0]["cluster"]
    ahead = kube.Preconnected(cluster["server"], base64.b64decode(cluster["certificate-authority-data"]), 2)
    try:
        client = kube.KubeClient(token_kubeconfig(admin_doc, mint(admins[2], NS, SA)),
                                 "ctx", trusted=False)
        with client:
            opened = client._transport.connections()
            assert opened >= 2
            with ThreadPoolExecutor(max_workers=2) as pool:
                names = list(pool.map(lambda _: client.whoami(), range(2)))
            assert names == [f"system:serviceaccount:{NS}:{SA}"] * 2
            assert client._transport.connections() == opened
    finally:
        ahead.close()


def test_vv_traces_each_request_and_the_verification_opens_no_connection(sandbox):
    """-vv: a line per request (method, path, status, time, context, new connection or not); the
    verification's reviews go over connections opened while the source was read. A process of
    its own: in this one, other tests' clients keep connections to the sandbox open."""
    src, dest = sandbox.clusters[3], sandbox.clusters[0]
    r = subprocess.run([sys.executable, "-m", "k8sctl", "-vv", "create-clientconfig", "--src-kubeconfig",
                        src.kubeconfig, "--dest-kubeconfig", dest.kubeconfig, "--in-cluster-kubeconfig",
                        src.in_cluster_kubeconfig, "--name", "traced", "--dry-run", "-o", "json"],
                       capture_output=True, text=True, timeout=120)
    leakguard.check(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("request: ")]
    reviews = [line for line in lines if "/selfsubjectreviews " in line or "/selfsubjectaccessreviews " in line]
    assert len(reviews) == 2 and all(" 201 " in line and "new connection" not in line for line in reviews), lines
    reads = [line for line in lines if line.startswith("request: GET ")]
    assert len(reads) == 4 and all(f"(context {src.context}" in line or f"(context {dest.context}" in line
                                   for line in reads), lines
    assert sum("new connection" in line for line in reads) == 4, lines  # source and destination, two each


def test_a_connection_opened_ahead_and_left_idle_is_used_not_opened_again(sandbox, admins):
    """A TLS 1.3 server sends session tickets after the handshake; unread on an idle connection
    they made urllib3 take it for closed and open it again (a round trip lost)."""
    c = sandbox.clusters[2]
    admin_doc = kc.read_file(Path(c.kubeconfig))
    cluster = admin_doc["clusters"][0]["cluster"]
    ahead = kube.Preconnected(cluster["server"], base64.b64decode(cluster["certificate-authority-data"]), 1)
    try:
        pool = kube._POOLS._pools[ahead._key][0].connection_from_url(cluster["server"])
        opened = [conn.sock for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None]
        assert opened
        time.sleep(0.3)  # the tickets are in by now
        with kube.KubeClient(token_kubeconfig(admin_doc, mint(admins[2], NS, SA)), "ctx", trusted=False) as client:
            assert client.whoami() == f"system:serviceaccount:{NS}:{SA}"
            in_pool = [conn.sock for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None]
            assert any(sock is before for sock in in_pool for before in opened), "the connection was opened again"
    finally:
        ahead.close()


def test_a_certificate_that_is_not_for_the_name_used_is_named_so(sandbox):
    """The CA is right; the name is not (tls-server-name, or an address the certificate does not
    list): said as such, not as a CA mismatch, and never connected past."""
    doc = kc.read_file(Path(sandbox.clusters[1].kubeconfig))

    def refused_with(tls_server_name: str) -> str:
        doc["clusters"][0]["cluster"]["tls-server-name"] = tls_server_name
        with kube.KubeClient(doc, doc["current-context"]) as client:
            try:
                client.whoami()
            except kube.Unreachable as e:
                assert e.tls, e.cause
                return e.cause
        raise AssertionError(f"a certificate not valid for {tls_server_name} was accepted")

    assert "not valid for the host name" in refused_with("not-the-apiserver.example")
    assert "not valid for the IP address" in refused_with("10.9.9.9")  # the server listens on loopback only
