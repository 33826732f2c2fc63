"""Token Secrets and TokenRequests, used by create and rotate; and what the source cluster itself
says about a token and its own address, so that nothing a stored kubeconfig claims is taken as fact.

`review_token`: who a token is for, asked of the source cluster (TokenReview) through the
user's trusted client, never read from the token's claims. `published_ca` and `prove_server`: an
address is the source cluster's API server when its serving certificate checks against the CA
the cluster publishes (ConfigMap kube-root-ca.crt), read through the trusted client; the proof is
a TLS handshake alone, with no credential on that connection.
"""
from __future__ import annotations

import base64
import copy
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from k8sctl import kube
from k8sctl.errors import ClusterError
from k8sctl.lifecycle import ServiceAccountRef

TOKEN_REVIEW = kube.Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False)
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"  # what kube-controller-manager publishes in every namespace
ROOT_CA_KEY = "ca.crt"
_SA_PREFIX = "system:serviceaccount:"


def account_of(username: str | None) -> ServiceAccountRef | None:
    """The service account a user name `system:serviceaccount:NS:NAME` stands for, else None."""
    if not username or not username.startswith(_SA_PREFIX):
        return None
    parts = username[len(_SA_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return ServiceAccountRef(parts[0], parts[1])


@dataclass(frozen=True)
class TokenReview:
    """What the source cluster said of a token: its account, or why there is none."""

    account: ServiceAccountRef | None
    why: str = ""  # when account is None


def review_token(src: kube.KubeClient, token: str) -> TokenReview:
    """A TokenReview of `token` sent through `src` (trusted): its account only when the cluster
    authenticates it as a service account. 403 (the client may not review tokens) and a token the
    cluster does not authenticate (expired, revoked, another cluster's) give no account and a reason."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    try:
        status = (src.request("POST", TOKEN_REVIEW.path(), body) or {}).get("status") or {}
    except kube.ApiError as e:
        if e.status == 403:
            return TokenReview(None, f"{src.context} does not let --src-kubeconfig review tokens (403: create "
                                     f"tokenreviews), so it cannot confirm whose token is stored")
        raise
    if not status.get("authenticated"):
        return TokenReview(None, f"{src.context} does not authenticate the stored token (expired, revoked, or "
                                 f"not of this cluster)")
    username = (status.get("user") or {}).get("username")
    account = account_of(username)
    if account is None:
        return TokenReview(None, f"{src.context} says the stored token is not a service account's")
    return TokenReview(account)


def published_ca(src: kube.KubeClient, namespace: str) -> bytes:
    """The CA the source cluster publishes in `namespace` (ConfigMap kube-root-ca.crt, key ca.crt),
    read through `src` (trusted)."""
    where = f"ConfigMap {namespace}/{ROOT_CA_CONFIGMAP} of {src.context}"
    try:
        cm = src.get(kube.CONFIGMAP, ROOT_CA_CONFIGMAP, namespace)
    except kube.NotFound:
        raise ClusterError(f"{where} is not there: the cluster publishes no CA to prove its address "
                           f"with") from None
    ca = ((cm.get("data") or {}).get(ROOT_CA_KEY) or "").strip()
    if "BEGIN CERTIFICATE" not in ca:
        raise ClusterError(f"{where} holds no PEM certificate under {ROOT_CA_KEY}")
    return ca.encode() + b"\n"


def with_ca(doc: dict, ca_pem: bytes) -> dict:
    """A copy of kubeconfig `doc` whose clusters trust `ca_pem` alone (everything else kept)."""
    out = copy.deepcopy(doc)
    for cl in out.get("clusters") or []:
        cluster = cl.get("cluster") or {}
        cluster.pop("certificate-authority", None)
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        cl["cluster"] = cluster
    return out


def connect(server: str, timeout: float) -> socket.socket:
    """A TCP connection to `server`'s host and port (https default 443): the part of a proof that can
    be made before the CA is known. Raises ClusterError naming the server."""
    host, port = _host_port(server)
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ClusterError(f"{server} cannot be reached from here ({_why(e)})") from None


def prove_server(server: str, tls_server_name: str | None, ca_pem: bytes | None, timeout: float,
                 sock: socket.socket | None = None) -> None:
    """A TLS handshake with `server` whose certificate must check against `ca_pem` (None: the system's
    CAs) for its host name, or `tls_server_name`; nothing is sent but the handshake. Raises a
    ClusterError naming the server otherwise. `sock`: a connection made ahead (see `connect`), closed here."""
    host, _ = _host_port(server)
    try:
        ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", errors="replace")) if ca_pem \
            else ssl.create_default_context()
    except (ssl.SSLError, ValueError) as e:
        raise ClusterError(f"the CA to check {server} with cannot be loaded ({e})") from None
    sock = sock or connect(server, timeout)
    try:
        sock.settimeout(timeout)
        with ctx.wrap_socket(sock, server_hostname=tls_server_name or host):
            pass
    except ssl.SSLCertVerificationError as e:
        raise ClusterError(f"{server} is not proven to be the cluster's API server: its certificate does not "
                           f"check against the CA ({e.verify_message})") from None
    except (ssl.SSLError, OSError) as e:
        raise ClusterError(f"{server} is not proven to be the cluster's API server: the TLS handshake failed "
                           f"({_why(e)})") from None
    finally:
        sock.close()


def _host_port(server: str) -> tuple[str, int]:
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise ClusterError(f"{server} is not an https:// address: no credential is sent there")
    try:
        return parts.hostname, parts.port or 443
    except ValueError:
        raise ClusterError(f"{server} has an invalid port") from None


def _why(e: OSError) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e or type(e).__name__).split())[:200]
