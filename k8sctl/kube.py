"""The one place that talks to Kubernetes API servers.

A `KubeClient` is one API client for one kubeconfig context. It speaks plain
JSON over the official client's transport (auth, TLS and proxies come from the
kubernetes package's kubeconfig loader), counts its requests, and turns every
failure into a `ClusterError` whose message names the context and the server.
The kubernetes package is imported here only, and lazily, so that `k8sctl
--help` never pays for it.
"""
from __future__ import annotations

import builtins
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from k8sctl import kubeconfig as kc
from k8sctl import redact
from k8sctl.errors import ClusterError, UsageError

log = logging.getLogger("k8sctl")
trace = logging.getLogger("k8sctl.requests")  # -vv: a line per request

FIELD_MANAGER = "k8sctl"
DEFAULT_TIMEOUT = (5.0, 30.0)  # connect, read
APPLY_PATCH = "application/apply-patch+yaml"
# Retries of one request stop after this long, or at the client's deadline if that is nearer.
RETRY_BUDGET = 10.0


@dataclass
class RequestStats:
    """Requests made by every client of this process (benchmarks read it)."""

    requests: int = 0
    writes: int = 0      # requests that may change something (dry runs excluded)
    dry_runs: int = 0    # writes sent with dryRun=All: checked by the server, stored nowhere
    by_method: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, method: str, dry_run: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            if dry_run:
                self.dry_runs += 1
            elif method in ("POST", "PUT", "PATCH", "DELETE"):
                self.writes += 1

    def reset(self) -> None:
        with self._lock:
            self.requests = self.writes = self.dry_runs = 0
            self.by_method = {}


STATS = RequestStats()


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: enough to build its URL."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is required")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base


NAMESPACE = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRET = Resource("", "v1", "secrets", "Secret")
CONFIGMAP = Resource("", "v1", "configmaps", "ConfigMap")
SERVICEACCOUNT = Resource("", "v1", "serviceaccounts", "ServiceAccount")
POD = Resource("", "v1", "pods", "Pod")
ROLE = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLEBINDING = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
CLUSTERROLE = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)
CLUSTERROLEBINDING = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False)
CRD = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)
SELF_SUBJECT_REVIEW = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced=False)
SELF_SUBJECT_ACCESS_REVIEW = Resource(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", namespaced=False
)


# Custom resources live in k8sctl.apis (each API's one home), which imports Resource from here.
BUILTIN = {r.kind: r for r in (NAMESPACE, SECRET, CONFIGMAP, SERVICEACCOUNT, POD, ROLE, ROLEBINDING,
                               CLUSTERROLE, CLUSTERROLEBINDING, CRD)}


class ApiError(ClusterError):
    """The API server answered with an error status."""

    def __init__(self, message: str, status: int, reason: str = "", details_kind: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.details_kind = details_kind  # Status.details.kind: which kind of thing was not found


class NotFound(ApiError):
    pass


class Unreachable(ClusterError):
    """No HTTP answer at all: connection refused, DNS, TLS handshake, timeout."""

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message)
        self.cause = cause  # the short cause (_CAUSES), without context and server

    @property
    def tls(self) -> bool:
        return self.cause.startswith("TLS")


class UntrustedKubeconfig(ClusterError):
    """A kubeconfig read from a cluster asks for more than inline credentials (see kubeconfig.STORED_KEYS)."""


_IMPORT_LOCK = threading.Lock()
_CLIENT_MODULES: tuple | None = None


def _import_client():
    """The kubernetes client modules, imported on first use (~0.4 s) and once.

    Only kubeconfigs that need its loader (exec plugins, auth providers, files) get here.
    Under a lock: first imports of this package from several threads at once (the
    sandbox prepares clusters in parallel) trip Python's import deadlock detection.
    """
    global _CLIENT_MODULES
    if _CLIENT_MODULES is None:
        with _IMPORT_LOCK:
            if _CLIENT_MODULES is None:
                from kubernetes.client import api_client, configuration
                from kubernetes.config import kube_config
                from kubernetes.config.config_exception import ConfigException

                _CLIENT_MODULES = (api_client, configuration, kube_config, ConfigException)
    return _CLIENT_MODULES


def clean_token(token: str, where: str) -> str:
    """A bearer token as it may go into a header: surrounding whitespace (a pasted token, a
    Secret written with `echo`) is dropped; anything else that is not visible ASCII is refused."""
    token = token.strip()
    if not token or any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        raise UsageError(f"the token of {where} is empty or contains spaces or control characters: "
                         f"store the token alone, without quotes or line breaks")
    redact.remember(token)
    return token


class _SharedPools:
    """urllib3 pools shared by every client whose TLS handshake is the same: server, CA, client
    certificate, TLS server name, verification. Bearer tokens travel per request, so clients that
    differ only by token share connections (as client-go's transport cache shares transports by
    TLS config): a kubeconfig minted a moment ago can use a connection opened before its token
    existed, and ten sources on one API server open its connections once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple, list] = {}  # key -> [PoolManager, number of users]

    def acquire(self, key: tuple, make: Any) -> Any:
        with self._lock:
            entry = self._pools.get(key)
            if entry is None:
                entry = self._pools[key] = [make(), 0]
            entry[1] += 1
            return entry[0]

    def release(self, key: tuple) -> None:
        with self._lock:
            entry = self._pools.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._pools[key]
                entry[0].clear()


_POOLS = _SharedPools()


def _tls_key(server: str, ca: bytes | None, cert: bytes | None, key: bytes | None, server_name: str | None,
             insecure: bool) -> tuple:
    """What a TLS handshake with these settings proves; digests, so no key material is kept in it."""
    import hashlib

    digest = hashlib.sha256
    return (server, server_name or "", insecure, digest((ca or b"").strip()).hexdigest(),
            digest((cert or b"") + b"\0" + (key or b"")).hexdigest() if cert else "")


def _make_pool(where: str, ca: bytes | None, cert: bytes | None, key: bytes | None, server_name: str | None,
               insecure: bool):
    import ssl

    import urllib3

    try:
        # The CA given to create_default_context itself: it then skips loading the system's
        # store (~20 ms a context), which a kubeconfig's CA replaces anyway.
        if ca:
            ctx = ssl.create_default_context(cadata=ca.decode("ascii", errors="replace"))
        else:
            import certifi  # what the kubernetes package trusts without a CA, too

            ctx = ssl.create_default_context(cafile=certifi.where())
        if cert:
            _load_client_cert(ctx, cert, key or b"")
    except (ssl.SSLError, ValueError) as e:
        raise UsageError(f"{where}: its CA or client certificate data cannot be loaded ({_first_line(e)})") from None
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # one warning of ours instead
    pool_kw: dict[str, Any] = {"ssl_context": ctx}
    if server_name:
        pool_kw["server_hostname"] = server_name
    # Up to 32 idle connections per server: ten sources registered at once on one API server
    # share this pool. Beyond that, a connection is closed after use, which is all urllib3's
    # "pool is full" warning says: not worth a line to the user.
    _quiet_full_pool_warnings()
    pool_manager = urllib3.PoolManager(num_pools=4, maxsize=32, retries=False, **pool_kw)
    pool_manager.pool_classes_by_scheme = {**pool_manager.pool_classes_by_scheme, "https": _tls_pool_class()}
    return pool_manager


_TLS_POOL_CLASS = None


def _tls_pool_class():
    """urllib3's HTTPS pool, with connections that read TLS 1.3 session tickets before they are
    judged. A TLS 1.3 server sends its tickets just after the handshake; on a connection opened
    ahead and idle since, they wait unread, the socket looks readable, and urllib3 takes that as
    the server having closed it: it would open it again, a round trip lost. Read, they are TLS's
    business and the connection is reused."""
    global _TLS_POOL_CLASS
    if _TLS_POOL_CLASS is None:
        import ssl

        from urllib3.connection import HTTPSConnection
        from urllib3.connectionpool import HTTPSConnectionPool

        class TicketReadingConnection(HTTPSConnection):
            @property
            def is_connected(self) -> bool:
                sock = self.sock
                if isinstance(sock, ssl.SSLSocket):
                    timeout = sock.gettimeout()
                    try:
                        sock.settimeout(0)
                        sock.recv(1)
                        return False  # end of stream, or data nobody asked for: not reusable
                    except ssl.SSLWantReadError:
                        pass  # nothing but TLS records (or nothing): the connection is idle
                    except OSError:
                        return False
                    finally:
                        try:
                            sock.settimeout(timeout)
                        except OSError:
                            pass
                return super().is_connected

        class TicketReadingPool(HTTPSConnectionPool):
            ConnectionCls = TicketReadingConnection

        _TLS_POOL_CLASS = TicketReadingPool
    return _TLS_POOL_CLASS


def _quiet_full_pool_warnings() -> None:
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _FullPoolFilter) for f in pool_log.filters):
        pool_log.addFilter(_FullPoolFilter())


class _FullPoolFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Connection pool is full")


def _load_client_cert(ctx, cert: bytes, key: bytes) -> None:
    import os
    import tempfile

    redact.remember(key)
    # ssl loads a certificate chain only from files: a private 0700 folder, removed at once.
    with tempfile.TemporaryDirectory(prefix="k8sctl-tls-") as d:
        paths = [os.path.join(d, n) for n in ("tls.crt", "tls.key")]
        for path, data in zip(paths, (cert, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(*paths)


def _open_idle(pool_manager, url: str, count: int, connect_timeout: float) -> list[BaseException]:
    """Open up to `count` connections (TCP and TLS) to `url` and leave them idle in the pool, in
    parallel: the handshakes' round trips are paid while the caller does other work. Returns
    why connections failed (each is closed again; the request that needs it says what is wrong)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = pool_manager.connection_from_url(url)
    # All taken out at once, so that `count` distinct connections end up idle (an idle one taken
    # and given back by each in turn would count `count` times); urllib3 has no public "connect
    # ahead": _get_conn/_put_conn are stable since 1.x.
    conns = [pool._get_conn() for _ in range(count)]

    def connect(conn) -> BaseException | None:
        try:
            if not conn.is_connected:
                conn.timeout = connect_timeout
                conn.connect()
            return None
        except Exception as e:  # noqa: BLE001 - see the docstring
            conn.close()
            return e

    try:
        with ThreadPoolExecutor(max_workers=count) as threads:
            return [e for e in threads.map(connect, conns) if e is not None]
    finally:
        for conn in conns:
            pool._put_conn(conn)


def _all_timed_out(failures: list[BaseException], count: int, server: str, started: float) -> str | None:
    """The cause a request would report ("connection timed out") when every one of `count`
    connections opened ahead timed out, else None. A timeout, not a refusal: matched by cause
    (urllib3's NewConnectionError is a ConnectTimeoutError)."""
    if not failures or len(failures) < count \
            or {_describe(_exception_text(e)) for e in failures} != {_CAUSES["timed out"]}:
        return None
    trace.debug("connect %s %s %.0fms (%d opened ahead, none usable)", server, _CAUSES["timed out"],
                (time.monotonic() - started) * 1000, count)
    return _CAUSES["timed out"]


class Preconnected:
    """Connections opened ahead to a server, with a CA, for token clients to come (the clients
    of the same server and CA, without a client certificate, share them: see _SharedPools);
    kept until closed. Never fails: whatever goes wrong is met again by the request that needs
    the connection, and reported there; but a timeout costs a whole connect timeout to meet
    again, so when every connection timed out, `timed_out` holds the cause a request reports
    ("connection timed out") for callers that take it as their answer."""

    def __init__(self, server: str, ca: bytes, count: int, timeout=DEFAULT_TIMEOUT):
        key = _tls_key(server.rstrip("/"), ca, None, None, None, False)
        self.server = server.rstrip("/")
        self.timed_out: str | None = None
        self._key: tuple | None = None
        try:
            pool_manager = _POOLS.acquire(key, lambda: _make_pool(server, ca, None, None, None, False))
            self._key = key
            started = time.monotonic()
            failures = _open_idle(pool_manager, server, count, timeout[0])
        except Exception:  # noqa: BLE001 - an optimisation only
            return
        self.timed_out = _all_timed_out(failures, count, self.server, started)

    def close(self) -> None:
        if self._key is not None:
            _POOLS.release(self._key)
            self._key = None


class _InlineTransport:
    """HTTPS with urllib3 alone, for contexts whose credentials and CA are inline.

    Never runs a command, reads a file or follows a proxy named in the kubeconfig, so
    it is the only transport for kubeconfigs read from a cluster; and it spares the
    ~0.4 s import of the kubernetes package for most user kubeconfigs too.
    """

    def __init__(self, view: kc.ContextView, where: str):
        import base64

        cluster, user = view.cluster, view.user
        self.host = cluster["server"].rstrip("/")
        self.insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self._headers = {}
        if user.get("token"):
            self._headers["Authorization"] = f"Bearer {clean_token(str(user['token']), where)}"
        try:
            ca = kc.ca_pem_of(cluster)
            cert = base64.b64decode(user["client-certificate-data"]) if user.get("client-certificate-data") else None
            key = base64.b64decode(user.get("client-key-data") or "") if cert else None
        except (ValueError, UsageError) as e:
            raise UsageError(f"{where}: its CA or client certificate data cannot be loaded ({_first_line(e)})") from None
        server_name = cluster.get("tls-server-name")
        self._key = _tls_key(self.host, ca, cert, key, server_name, self.insecure)
        self._pool = _POOLS.acquire(self._key, lambda: _make_pool(where, ca, cert, key, server_name, self.insecure))

    def send(self, method: str, url: str, headers: dict, body: bytes | None, timeout) -> tuple[int, Any, bytes]:
        headers = {**headers, **self._headers}
        resp = self._pool.request(method, url, body=body, headers=headers, redirect=False,
                                  timeout=_urllib3_timeout(timeout), preload_content=True)
        return resp.status, resp.headers, resp.data

    def preconnect(self, count: int, timeout) -> list[BaseException]:
        return _open_idle(self._pool, self.host, count, timeout[0])

    def connections(self) -> int:
        return _connections_opened(self._pool)

    def close(self) -> None:
        if self._pool is not None:
            self._pool = None
            _POOLS.release(self._key)


class _LoaderTransport:
    """The kubernetes package's kubeconfig loader and REST client: exec plugins (EKS, GKE,
    AKS), auth providers, credential files and proxies. Only for the user's own kubeconfigs."""

    def __init__(self, config: dict, view: kc.ContextView, base_path: str):
        api_client, configuration, kube_config, config_exception = _import_client()
        _check_exec_plugin(view.user, view.name)
        self.context = view.name
        cfg = configuration.Configuration()
        try:
            loader = kube_config.KubeConfigLoader(config_dict=config, active_context=view.name,
                                                  config_base_path=base_path or None)
            loader.load_and_set(cfg)
        except (config_exception, KeyError, TypeError, ValueError, OSError) as e:
            raise UsageError(f"kubeconfig context {view.name!r} cannot be used: {_first_line(e)}") from e
        cfg.retries = False  # fail fast on unreachable servers; callers decide to retry
        self.host = cfg.host
        self.insecure = not cfg.verify_ssl
        if self.insecure:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # one warning of ours instead
        self._api = api_client.ApiClient(configuration=cfg)
        self._api.user_agent = "k8sctl"

    def send(self, method: str, url: str, headers: dict, body: bytes | None, timeout) -> tuple[int, Any, bytes]:
        headers = dict(headers)
        # Auth headers (bearer tokens, refreshed exec credentials) come from the configuration.
        self._api.update_params_for_auth(headers, None, ["BearerToken"], url, method, body)
        auth = headers.get("authorization") or headers.get("Authorization")
        if auth and auth.startswith("Bearer "):
            headers.pop("authorization", None)
            headers["Authorization"] = "Bearer " + clean_token(auth[7:], f"context {self.context!r}")
        resp = self._api.rest_client.pool_manager.request(
            method, url, body=body, headers=headers, redirect=False, preload_content=True,
            timeout=_urllib3_timeout(timeout))
        return resp.status, resp.headers, resp.data

    def preconnect(self, count: int, timeout) -> list[BaseException]:
        return []  # exec plugins may need to run first: connections open on the first request

    def connections(self) -> int:
        return _connections_opened(self._api.rest_client.pool_manager)

    def close(self) -> None:
        self._api.close()


def _connections_opened(pool_manager) -> int:
    """Connections (TCP + TLS handshakes) a urllib3 PoolManager has opened so far (for -vv)."""
    pools = pool_manager.pools
    return sum(pools[key].num_connections for key in list(pools.keys()))


def _urllib3_timeout(timeout):
    import urllib3

    return urllib3.Timeout(connect=timeout[0], read=timeout[1])


class KubeClient:
    """An API client bound to one context of a kubeconfig (checked with kubeconfig.select_context).

    `trusted=False` marks a kubeconfig read from a cluster: it must hold only inline
    credentials (kubeconfig.stored_kubeconfig_problem), else `UntrustedKubeconfig`.
    """

    def __init__(self, config: dict, context: str, base_path: str = "", timeout=DEFAULT_TIMEOUT, *,
                 trusted: bool = True, source: str = "kubeconfig", stats: RequestStats | None = None,
                 deadline: float | None = None):
        view = kc.select_context(config, context, source)
        self.context = context
        self.deadline = deadline  # time.monotonic() past which no request is retried
        self.stats = stats or STATS  # the process-wide count unless a caller keeps its own
        self.timeout = timeout
        refused = kc.stored_kubeconfig_problem(view)
        for secret in (view.user.get("token"), view.user.get("client-key-data")):
            redact.remember(secret)
        self._transport: _InlineTransport | _LoaderTransport
        if refused is None:
            self._transport = _InlineTransport(view, f"context {context!r} in {source}")
        elif not trusted:
            raise UntrustedKubeconfig(f"{source}: {refused}")
        elif _needs_loader(view):
            self._transport = _LoaderTransport(config, view, base_path)
        else:
            # Inline, but trusted-only settings (insecure-skip-tls-verify) or no credentials at all.
            self._transport = _InlineTransport(view, f"context {context!r} in {source}")
        self.server = self._transport.host
        self.insecure = self._transport.insecure
        if self.insecure:
            log.warning("TLS verification is off for context %r (insecure-skip-tls-verify in the kubeconfig)", context)
        self.anonymous = kc.auth_kind(view.user) == "none"

    def close(self) -> None:
        self._transport.close()

    def preconnect(self, count: int = 1) -> Unreachable | None:
        """Open `count` connections now (in parallel, waiting for them) so that as many requests
        sent at once later need no handshake. Failures are left to those requests, except that
        when every connection timed out, the Unreachable a request would raise is returned, for
        callers that take it as their answer rather than wait a second time."""
        started = time.monotonic()
        try:
            failures = self._transport.preconnect(count, self.timeout)
        except Exception:  # noqa: BLE001 - an optimisation only
            return None
        cause = _all_timed_out(failures, count, self.server, started)
        return Unreachable(self._unreachable_message(cause), cause) if cause else None

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- raw requests -------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None,
                content_type: str = "application/json", timeout=None) -> Any:
        """Send one request and return the decoded JSON answer (None for an empty body)."""
        import urllib3

        url = self.server + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": "k8sctl"}
        payload = json.dumps(body).encode() if body is not None else None  # JSON is YAML for apply-patch+yaml
        # Only idempotent requests are retried (a GET, a server-side apply): a POST that reached
        # the server may have done its work. They are retried on a connection reset, 429 and
        # 5xx, with backoff (or the server's Retry-After), never past the deadline.
        idempotent = is_idempotent(method, content_type)
        deadline = min(self.deadline or float("inf"), time.monotonic() + RETRY_BUDGET)
        backoff = 0.1
        dry_run = bool(query and query.get("dryRun"))
        tracing = trace.isEnabledFor(logging.DEBUG)
        while True:
            self.stats.record(method, dry_run)
            if tracing:
                started, opened = time.monotonic(), self._transport.connections()
            try:
                status, resp_headers, data = self._transport.send(method, url, headers, payload,
                                                                  timeout or self.timeout)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                cause = _describe(_exception_text(e))
                if tracing:
                    self._trace(method, url, cause, started, opened)
                if idempotent and cause == RESET_CAUSE and _pause(backoff, deadline):
                    backoff = min(backoff * 2, 2.0)
                    continue
                raise Unreachable(self._unreachable_message(cause), cause) from None
            if tracing:
                self._trace(method, url, str(status), started, opened)
            retry_after = resp_headers.get("Retry-After") or ""
            # Transient: what the server marks so (Retry-After on a 429 or 5xx, as client-go reads
            # it), and gateway answers. A plain 500 is an answer (e.g. an object the CRD's schema
            # cannot decode): retrying it would only stall.
            if idempotent and ((status == 429 or status >= 500) and retry_after or status in (502, 503, 504)):
                # A quarter of Retry-After (at most 0.5 s), never less than the backoff: the case met
                # here, a new CRD's storage initializing (Retry-After: 1), clears well within a second.
                wait = max(backoff, min(float(retry_after), 2.0) / 4) if retry_after.isdigit() else backoff
                if _pause(wait, deadline):
                    backoff = min(backoff * 2, 2.0)
                    continue
            break
        if not 200 <= status <= 299:
            raise self._api_error(method, path, status, data)
        return json.loads(data) if data else None

    def _trace(self, method: str, url: str, outcome: str, started: float, opened: int) -> None:
        new = self._transport.connections() - opened
        trace.debug("%s %s %s %.0fms (context %s%s)", method, url[len(self.server):], outcome,
                    (time.monotonic() - started) * 1000, self.context, ", new connection" if new else "")

    def _unreachable_message(self, why: str) -> str:
        return f"cannot reach the API server of context {self.context!r} at {self.server}: {why}"

    def _api_error(self, method: str, path: str, status: int, data: bytes) -> ApiError:
        reason, message, details_kind = "", "", ""
        try:
            doc = json.loads(data)
            reason, message = doc.get("reason", ""), doc.get("message", "")
            details_kind = (doc.get("details") or {}).get("kind", "")
        except (ValueError, AttributeError):
            message = data[:200].decode(errors="replace")
        if status == 401:
            text = (f"the API server of context {self.context!r} ({self.server}) rejected the credentials "
                    f"(401 Unauthorized): the token or certificate is invalid or expired")
        elif status == 403 and "system:anonymous" in message:
            why = ("the context has no credentials (no token, client certificate or exec plugin)" if self.anonymous
                   else "its credentials were not sent (did its exec plugin fail? see the warning above)")
            text = (f"the API server of context {self.context!r} ({self.server}) took the request as anonymous "
                    f"(system:anonymous) and refused {method} {path} (403): {why}")
        else:
            text = f"{method} {path} in context {self.context!r}: {status} {reason or ''} {message}".strip()
        cls = NotFound if status == 404 else ApiError
        return cls(" ".join(text.split()), status, reason, details_kind)

    # --- object helpers -----------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict:
        return self.request("GET", resource.path(namespace, name))

    def get_or_none(self, resource: Resource, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.get(resource, name, namespace)
        except NotFound:
            return None

    def list(self, resource: Resource, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        doc = self.request("GET", resource.path(namespace), query={"labelSelector": label_selector})
        return doc.get("items", [])

    def create(self, resource: Resource, obj: dict, namespace: str | None = None, dry_run: bool = False) -> dict:
        return self.request("POST", resource.path(namespace), obj, query={"dryRun": "All" if dry_run else None})

    def apply(self, resource: Resource, obj: dict, *, force: bool = False, dry_run: bool = False,
              field_manager: str = FIELD_MANAGER, subresource: str | None = None) -> dict:
        """Server-side apply `obj` (created or updated in place, never deleted first)."""
        meta = obj["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"], subresource)
        query = {"fieldManager": field_manager, "force": "true" if force else None,
                 "dryRun": "All" if dry_run else None}
        return self.request("PATCH", path, obj, query=query, content_type=APPLY_PATCH)

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> None:
        self.request("DELETE", resource.path(namespace, name))

    def whoami(self) -> str | None:
        """The authenticated user name (SelfSubjectReview), or None on servers without that API."""
        try:
            review = self.request("POST", SELF_SUBJECT_REVIEW.path(),
                                  {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        except NotFound:
            return None
        return ((review.get("status") or {}).get("userInfo") or {}).get("username")

    def api_versions(self, group: str) -> builtins.list[str]:
        """Versions of `group` this server serves ([] when the group is absent)."""
        try:
            doc = self.request("GET", f"/apis/{group}")
        except NotFound:
            return []
        return [v["version"] for v in doc.get("versions", [])]


def _needs_loader(view: kc.ContextView) -> bool:
    """Whether only the kubernetes package's loader can serve this (trusted) context."""
    inline_ok = kc.STORED_KEYS["user"] | kc.STORED_KEYS["cluster"] | {"insecure-skip-tls-verify"}
    return any(k not in inline_ok for k in (*view.user, *view.cluster))


def _exception_text(e: BaseException) -> str:
    return str(getattr(e, "reason", None) or e)


def _check_exec_plugin(user: dict, context: str) -> None:
    """The client only logs a missing exec plugin and goes on without credentials: say it plainly."""
    import shutil

    command = (user.get("exec") or {}).get("command")
    if command and shutil.which(command) is None:
        raise UsageError(f"context {context!r} authenticates with exec plugin {command!r}, which is not installed "
                         f"or not on PATH")


def _first_line(e: Any) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


RESET_CAUSE = "connection reset by the server"
READ_TIMEOUT_CAUSE = "no answer in time (the connection was made; read timed out)"
# After these the request may have reached the server and been carried out: only the answer was lost.
_ANSWER_LOST = (RESET_CAUSE, READ_TIMEOUT_CAUSE)


def outcome_unknown(e: BaseException) -> bool:
    """Whether a failed write may have been carried out all the same: its answer was lost (a read
    timeout, a reset) or the server failed after receiving it (5xx). Such a write is re-read before
    anything is undone, and never reported as "not written"."""
    if isinstance(e, Unreachable):
        return e.cause in _ANSWER_LOST
    if isinstance(e, ApiError):
        return e.status >= 500
    return False


def is_idempotent(method: str, content_type: str = "application/json") -> bool:
    """Whether a request may be sent again (GETs and server-side applies): those are retried on a
    reset, 429 and transient 5xx, within the command's deadline."""
    return method == "GET" or (method == "PATCH" and content_type == APPLY_PATCH)
_CAUSES = {
    "connection reset": RESET_CAUSE,
    "connection aborted": RESET_CAUSE,
    "remote end closed connection": RESET_CAUSE,
    # Before the general "certificate verify failed": OpenSSL says which check failed.
    "hostname mismatch": "TLS certificate verify failed: the server's certificate is not valid for the host name "
                         "used (the server URL's host, or tls-server-name)",
    "ip address mismatch": "TLS certificate verify failed: the server's certificate is not valid for the IP address "
                           "used (the server URL's, or tls-server-name)",
    "certificate verify failed": "TLS certificate verify failed: the kubeconfig's CA does not match the server",
    "connection refused": "connection refused",
    "read timed out": READ_TIMEOUT_CAUSE,
    "timed out": "connection timed out",
    "name or service not known": "host name not known",
    "no route to host": "no route to host",
    "wrong version number": "TLS handshake failed (is it an https endpoint?)",
}


def _pause(seconds: float, deadline: float) -> bool:
    """Sleep before a retry, unless that would pass the deadline."""
    if time.monotonic() + seconds >= deadline:
        return False
    time.sleep(seconds)
    return True


def _describe(text: str) -> str:
    # urllib3 wraps the real cause in pool reprs; name the cause, not the wrapper.
    low = text.lower()
    for needle, cause in _CAUSES.items():
        if needle in low:
            return cause
    return " ".join(text.split())[:200]
