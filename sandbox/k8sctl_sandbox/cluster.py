"""A sandbox: N real Kubernetes control planes on loopback sharing one etcd.

Layout of DIR:
  sandbox.json              what `up` started (ports, names, kubeconfig paths)
  kubeconfig                every admin context merged
  kubeconfigs/<p>-<i>.yaml  one admin context `kind-<p>-<i>` each
  kubeconfigs/updated/...   the same as seen from inside the control plane
  clusters/<p>-<i>/         PKI, controller-manager kubeconfig
  etcd/                     etcd data
  run/*.pid, logs/*.log     one pid file and log per process

With a network (`--rtt`, `--proxy`), `server` (and every kubeconfig written) is the cluster's
toxiproxy proxy; `port` stays the API server's own, which the controller manager and the
readiness checks use.
"""
from __future__ import annotations

import functools
import http.client
import json
import math
import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from k8sctl import interrupts
from k8sctl import kubeconfig as kc
from k8sctl.errors import UsageError
from k8sctl_sandbox import processes
from k8sctl_sandbox.binaries import Binaries
from k8sctl_sandbox.pki import ClusterPKI, generate_cluster_pki

if TYPE_CHECKING:
    from k8sctl import kube

STATE_FILE = "sandbox.json"
KCM_CONTROLLERS = ",".join([
    "serviceaccount-token-controller", "serviceaccount-controller",
    "root-ca-certificate-publisher-controller", "namespace-controller", "garbage-collector-controller",
])
# Reverse of start; the operator (`up --operator`) first, its supervisor before it.
STOP_ORDER = ("operator-supervisor", "operator", "toxiproxy", "kube-controller-manager", "kube-apiserver", "etcd")
_OWN_ENTRIES = (STATE_FILE, "kubeconfig", "kubeconfigs", "clusters", "etcd", "run", "logs", "operator")


@dataclass
class ClusterInfo:
    name: str          # <prefix>-<i>
    context: str       # kind-<prefix>-<i>
    server: str
    port: int
    kcm_port: int
    kubeconfig: str
    in_cluster_kubeconfig: str
    proxy_port: int | None = None  # with a network: where its toxiproxy proxy listens (`server`)

    @property
    def direct_server(self) -> str:
        """The API server itself, past any proxy."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def processes(self) -> list[str]:
        return [f"kube-apiserver-{self.name}", f"kube-controller-manager-{self.name}"]


@dataclass
class SandboxState:
    directory: str
    prefix: str
    etcd_url: str
    clusters: list[ClusterInfo]
    k8ssandra: bool = False
    cassandradatacenter_crd: str | None = None  # with k8ssandra: which CassandraDatacenter CRD form
    kubernetes_version: str | None = None  # the release run, when known (not for KUBEBUILDER_ASSETS)
    operator: dict | None = None  # `up --operator`: source, binary, ports (live status: operator/status.json)
    rtt_ms: float = 0.0  # the round-trip time the proxies add
    toxiproxy_port: int | None = None  # with a network: toxiproxy's API on 127.0.0.1

    @property
    def kubeconfig(self) -> str:
        return str(Path(self.directory) / "kubeconfig")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self) -> None:
        (Path(self.directory) / STATE_FILE).write_text(self.to_json())

    @classmethod
    def load(cls, directory: Path) -> SandboxState:
        path = directory / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"no sandbox in {directory}: start one with 'k8sctl sandbox up --dir {directory}'") from None
        except ValueError:
            raise UsageError(f"{path} is damaged: run 'k8sctl sandbox down --dir {directory}' and start again") from None
        doc["clusters"] = [ClusterInfo(**c) for c in doc["clusters"]]
        return cls(**doc)


def check_dir(directory: Path) -> None:
    """Create the sandbox folder if needed; a usage error if it cannot be, or is not writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create sandbox folder {directory}: {e.strerror}; pass a writable --dir") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"sandbox folder {directory} is not writable: pass a writable --dir")


def _https_get(port: int, path: str, pki: ClusterPKI, timeout: float = 2.0) -> int:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _apiserver_argv(bins: Binaries, pki: ClusterPKI, port: int, etcd_url: str, name: str) -> list[str]:
    return [
        str(bins.kube_apiserver),
        f"--etcd-servers={etcd_url}", f"--etcd-prefix=/sandbox/{name}",
        "--bind-address=127.0.0.1", f"--secure-port={port}",
        # A non-loopback, non-routed documentation address: loopback is rejected as an
        # endpoint IP, and without it the server looks for a default route.
        "--advertise-address=192.0.2.1", "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
        f"--service-account-issuer=https://127.0.0.1:{port}",
        f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
        "--profiling=false", "--enable-priority-and-fairness=false", "--v=1",
    ]


def _kcm_argv(bins: Binaries, pki: ClusterPKI, kubeconfig_path: Path, port: int) -> list[str]:
    return [
        str(bins.kube_controller_manager),
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}", f"--authorization-kubeconfig={kubeconfig_path}",
        "--leader-elect=false", f"--controllers={KCM_CONTROLLERS}",
        f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        "--bind-address=127.0.0.1", f"--secure-port={port}", "--profiling=false", "--v=1",
    ]


# Each cluster is an API server and a controller manager: with --k8ssandra about 0.7 GB of
# memory (the API server holding the CRDs: 600 MB) and a few CPU-seconds to start. 16 covers every multi-region layout K8ssandra
# documents (3 to 4 datacenters and a control plane) with room to spare.
MAX_CLUSTERS = 16


def validate_up(clusters: int, prefix: str, timeout: float = 90.0) -> None:
    if clusters < 1:
        raise UsageError(f"--clusters must be at least 1 (got {clusters})")
    if clusters > MAX_CLUSTERS:
        raise UsageError(f"--clusters must be at most {MAX_CLUSTERS} (got {clusters}): each cluster is a "
                         f"kube-apiserver and a controller manager on this machine")
    if not prefix or not all(c.isalnum() or c == "-" for c in prefix):
        raise UsageError(f"--prefix {prefix!r} must be letters, digits and '-'")
    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds (got {timeout})")


def up(directory: Path, clusters: int, bins: Binaries, prefix: str = "k8ssandra",
       progress: Callable[[str], None] = lambda s: None, timeout: float = 90.0,
       proxy_binary: Path | None = None, rtt_ms: float = 0.0) -> SandboxState:
    """Start `clusters` control planes; on any failure (or Ctrl-C) stop what was started.
    With `proxy_binary` (toxiproxy), each API server is reached through a proxy adding `rtt_ms`."""
    validate_up(clusters, prefix, timeout)
    check_dir(directory)
    directory = directory.resolve()
    run_dir, log_dir = directory / "run", directory / "logs"
    if processes.running(run_dir):
        raise UsageError(f"a sandbox is already running in {directory}: run 'k8sctl sandbox down --dir {directory}' first")
    _remove_state(directory)  # leftovers of a crashed run
    try:
        return _up(directory, clusters, bins, prefix, progress, timeout, run_dir, log_dir, proxy_binary, rtt_ms)
    except BaseException:
        abandon(directory)
        raise


def abandon(directory: Path) -> list[str]:
    """After a failed or interrupted `up`: stop every process it started and remove its state,
    but keep its logs (the error points at one). Signals wait until this is done."""
    with interrupts.deferred(reraise=False, notice=interrupts.CLEANUP_NOTICE):
        stopped = processes.stop_all(directory / "run", grace=5, order=STOP_ORDER)
        _remove_state(directory, keep=("logs",))
    return stopped


def _up(directory: Path, n: int, bins: Binaries, prefix: str, progress, timeout: float,
        run_dir: Path, log_dir: Path, proxy_binary: Path | None = None, rtt_ms: float = 0.0) -> SandboxState:
    """The steps of `up`, in order; each waits for what the next one needs."""
    launch = _Launcher(bins, run_dir, log_dir, timeout)
    progress("starting etcd")
    etcd = _start_etcd(launch, directory / "etcd")
    progress(f"generating certificates for {n} cluster(s)")
    planned = _plan_clusters(directory, n, prefix)
    progress(f"starting {n} kube-apiserver(s)")
    apiservers = [launch.start(f"kube-apiserver-{c.name}", _apiserver_argv(bins, p, c.port, etcd.url, c.name))
                  for c, p in planned]
    toxiproxy_port = None
    if proxy_binary is not None:
        from k8sctl_sandbox import toxiproxy

        progress(f"starting toxiproxy: a proxy per API server, {rtt_ms:g} ms round trip")
        toxiproxy_port, listening = toxiproxy.start(run_dir, log_dir, {c.context: c.port for c, _ in planned},
                                                    rtt_ms, timeout, proxy_binary)
        for c, _ in planned:
            c.proxy_port = listening[c.context]
            c.server = f"https://127.0.0.1:{c.proxy_port}"
    _write_kubeconfigs(directory, planned)
    for (c, p), proc in zip(planned, apiservers):
        launch.wait(f"kube-apiserver of {c.context}", functools.partial(_apiserver_ready, c, p), [etcd.process, proc])
    progress(f"{n} API server(s) ready; starting controller managers")
    kcms = [launch.start(f"kube-controller-manager-{c.name}", _kcm_argv(bins, p, p.directory / "kcm.kubeconfig", c.kcm_port))
            for c, p in planned]
    state = SandboxState(str(directory), prefix, etcd.url, [c for c, _ in planned],
                         rtt_ms=rtt_ms if proxy_binary else 0.0, toxiproxy_port=toxiproxy_port)
    state.save()
    for (c, p), proc in zip(planned, kcms):
        launch.wait(f"kube-controller-manager of {c.context}", functools.partial(_controllers_working, c, p),
                    [etcd.process, proc])
    progress("all clusters ready")
    return state


@dataclass
class _Launcher:
    """Starts a sandbox's processes (pid file, log) and waits for each, with one timeout."""

    bins: Binaries
    run_dir: Path
    log_dir: Path
    timeout: float

    def start(self, name: str, argv: list[str]) -> processes.Started:
        return processes.start(name, argv, self.run_dir, self.log_dir, {"GOMAXPROCS": "2"})

    def wait(self, what: str, check: Callable[[], bool], procs: list[processes.Started]) -> None:
        processes.wait_ready(what, check, procs, self.timeout)


@dataclass
class _Etcd:
    url: str
    process: processes.Started


def _start_etcd(launch: _Launcher, data_dir: Path) -> _Etcd:
    client_port, peer_port = processes.free_port(), processes.free_port()
    url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    proc = launch.start("etcd", [
        str(launch.bins.etcd), "--name=sandbox", f"--data-dir={data_dir}",
        f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}", "--unsafe-no-fsync=true",
        "--quota-backend-bytes=4294967296", "--log-level=warn",
    ])

    def healthy() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", client_port, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    launch.wait("etcd", healthy, [proc])
    return _Etcd(url, proc)


def _plan_clusters(directory: Path, n: int, prefix: str) -> list[tuple[ClusterInfo, ClusterPKI]]:
    """Names, ports, kubeconfig paths and PKI of each cluster."""
    planned = []
    for i in range(n):
        name = f"{prefix}-{i}"
        pki = generate_cluster_pki(directory / "clusters" / name, name, ["127.0.0.1"])
        port = processes.free_port()
        planned.append((ClusterInfo(
            name=name, context=f"kind-{name}", server=f"https://127.0.0.1:{port}", port=port,
            kcm_port=processes.free_port(),
            kubeconfig=str(directory / "kubeconfigs" / f"{name}.yaml"),
            in_cluster_kubeconfig=str(directory / "kubeconfigs" / "updated" / f"{name}.yaml"),
        ), pki))
    return planned


def _write_kubeconfigs(directory: Path, planned: list[tuple[ClusterInfo, ClusterPKI]]) -> None:
    """Each cluster's admin kubeconfig (and its in-cluster view), the merged one, the controller manager's."""
    docs = []
    for c, p in planned:
        doc = kc.client_cert_kubeconfig(name=c.context, server=c.server, ca_pem=p.ca_cert.read_bytes(),
                                        cert_pem=p.admin_cert.read_bytes(), key_pem=p.admin_key.read_bytes())
        docs.append(doc)
        kc.write_private(Path(c.kubeconfig), kc.dump(doc))
        # Every sandbox cluster is on this host: the in-cluster address is the same.
        kc.write_private(Path(c.in_cluster_kubeconfig), kc.dump(doc))
        # The controllers run beside their API server: never through the proxy.
        kcm_doc = kc.client_cert_kubeconfig(name="kcm", server=c.direct_server, ca_pem=p.ca_cert.read_bytes(),
                                            cert_pem=p.kcm_cert.read_bytes(), key_pem=p.kcm_key.read_bytes())
        kc.write_private(p.directory / "kcm.kubeconfig", kc.dump(kcm_doc))
    kc.write_private(directory / "kubeconfig", kc.dump(kc.merge(docs)))


def _apiserver_ready(c: ClusterInfo, p: ClusterPKI) -> bool:
    return _https_get(c.port, "/readyz", p) == 200


def _controllers_working(c: ClusterInfo, p: ClusterPKI) -> bool:
    # The controller manager works once the token controller has given the `default`
    # service account of `default` and the CA publisher its kube-root-ca.crt.
    return (_https_get(c.port, "/api/v1/namespaces/default/serviceaccounts/default", p) == 200
            and _https_get(c.port, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt", p) == 200)


def admin_clients(directory: Path, only: str | None = None) -> Iterator[tuple[ClusterInfo, kube.KubeClient]]:
    """An admin client for each cluster of the sandbox in `directory` (or only context `only`), in turn."""
    from k8sctl import kube

    state = SandboxState.load(directory.resolve())
    for c in state.clusters:
        if only is not None and c.context != only:
            continue
        client = kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)
        try:
            yield c, client
        finally:
            client.close()


def status(directory: Path) -> tuple[SandboxState, dict[str, int], dict[str, bool]]:
    """The sandbox's state, its live processes, and which API servers answer /readyz."""
    directory = directory.resolve()
    state = SandboxState.load(directory)
    live = processes.running(directory / "run")
    ready = {}
    for c in state.clusters:
        pki = ClusterPKI(directory / "clusters" / c.name)
        try:
            ready[c.context] = _https_get(c.port, "/readyz", pki, timeout=2) == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            ready[c.context] = False
    return state, live, ready


def down(directory: Path) -> list[str]:
    """Stop every process of the sandbox in `directory` and remove its files."""
    directory = directory.resolve()
    if not directory.exists():
        raise UsageError(f"no sandbox in {directory}: the folder does not exist")
    stopped = processes.stop_all(directory / "run", order=STOP_ORDER)
    _remove_state(directory)
    try:
        directory.rmdir()  # only if nothing else was in it
    except OSError:
        pass
    return stopped


def stop_cluster(directory: Path, context: str) -> list[str]:
    """Stop one cluster's API server and controller manager (to test an unreachable cluster)."""
    directory = directory.resolve()
    state = SandboxState.load(directory)
    names = [n for c in state.clusters if c.context == context for n in c.processes]
    if not names:
        raise UsageError(f"no cluster with context {context!r} in {directory}")
    return processes.stop_all(directory / "run", names=names, order=STOP_ORDER)


def read_log(directory: Path, name: str) -> str:
    """The log of one process of the sandbox (`logs/<name>.log`)."""
    log_dir = directory.resolve() / "logs"
    names = sorted(p.stem for p in log_dir.glob("*.log")) if log_dir.is_dir() else []
    if name not in names:
        if not (directory / STATE_FILE).exists():
            raise UsageError(f"no sandbox in {directory}: pass its --dir")
        raise UsageError(f"no log {name!r} in {log_dir}: one of {', '.join(names) or '(none)'}")
    return (log_dir / f"{name}.log").read_text(errors="replace")


def _remove_state(directory: Path, keep: tuple[str, ...] = ()) -> None:
    for entry in _OWN_ENTRIES:
        if entry in keep:
            continue
        p = directory / entry
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
