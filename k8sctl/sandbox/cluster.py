"""A sandbox: N real Kubernetes control planes on loopback sharing one etcd.

Layout of DIR:
  sandbox.json              what `up` started (ports, names, kubeconfig paths)
  kubeconfig                every admin context merged
  kubeconfigs/<p>-<i>.yaml  one admin context `kind-<p>-<i>` each
  kubeconfigs/updated/...   the same as seen from inside the control plane
  clusters/<p>-<i>/         PKI, controller-manager kubeconfig
  etcd/                     etcd data
  run/*.pid, logs/*.log     one pid file and log per process
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import http.client
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from k8sctl import kubeconfig as kc
from k8sctl.errors import SandboxError, UsageError
from k8sctl.sandbox import processes
from k8sctl.sandbox.binaries import Binaries
from k8sctl.sandbox.pki import ClusterPKI, generate_cluster_pki

STATE_FILE = "sandbox.json"
KCM_CONTROLLERS = ",".join([
    "serviceaccount-token-controller", "serviceaccount-controller",
    "root-ca-certificate-publisher-controller", "namespace-controller", "garbage-collector-controller",
])
# Reverse of start; the operator (`up --operator`) first, its supervisor before it.
STOP_ORDER = ("operator-supervisor", "operator", "kube-controller-manager", "kube-apiserver", "etcd")
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
    operator: dict | None = None  # `up --operator`: source, binary, ports (live status: operator/status.json)

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


def _marker(directory: Path) -> str:
    return str(directory.resolve())


def _check_dir(directory: Path) -> None:
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


def _wait(what: str, check: Callable[[], bool], procs: list[processes.Started], timeout: float) -> None:
    """Poll `check` until true; fail at once with the log path if one of `procs` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            code = p.exit_code()
            if code is not None:
                why = " because its port was taken by another process (a port race: run again)" \
                    if processes.bind_failure(p.log) else ""
                raise SandboxError(f"{p.name} exited at start (exit code {code}){why}; read {p.log}")
        try:
            if check():
                return
        except (OSError, ssl.SSLError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            logs = ", ".join(str(p.log) for p in procs)
            raise SandboxError(f"{what} not ready after {timeout:.0f}s; read {logs}")
        time.sleep(0.1)


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


def validate_up(clusters: int, prefix: str) -> None:
    if clusters < 1:
        raise UsageError(f"--clusters must be at least 1 (got {clusters})")
    if not prefix or not all(c.isalnum() or c == "-" for c in prefix):
        raise UsageError(f"--prefix {prefix!r} must be letters, digits and '-'")


def up(directory: Path, clusters: int, bins: Binaries, prefix: str = "k8ssandra",
       progress: Callable[[str], None] = lambda s: None, timeout: float = 90.0) -> SandboxState:
    """Start `clusters` control planes; on any failure (or Ctrl-C) stop what was started."""
    validate_up(clusters, prefix)
    _check_dir(directory)
    directory = directory.resolve()
    marker = _marker(directory)
    run_dir, log_dir = directory / "run", directory / "logs"
    if processes.running(run_dir, marker):
        raise UsageError(f"a sandbox is already running in {directory}: run 'k8sctl sandbox down --dir {directory}' first")
    _remove_state(directory)  # leftovers of a crashed run
    try:
        return _up(directory, clusters, bins, prefix, progress, timeout, run_dir, log_dir)
    except BaseException:
        processes.stop_all(run_dir, marker, grace=5, order=STOP_ORDER)
        _remove_state(directory)
        raise


def _up(directory: Path, n: int, bins: Binaries, prefix: str, progress, timeout: float,
        run_dir: Path, log_dir: Path) -> SandboxState:
    env = {"GOMAXPROCS": "2"}
    progress("starting etcd")
    client_port, peer_port = processes.free_port(), processes.free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = processes.start("etcd", [
        str(bins.etcd), "--name=sandbox", f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}", "--unsafe-no-fsync=true",
        "--quota-backend-bytes=4294967296", "--log-level=warn",
    ], run_dir, log_dir, env)

    def etcd_ok() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", client_port, timeout=1)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    _wait("etcd", etcd_ok, [etcd], timeout)

    progress(f"generating certificates for {n} cluster(s)")
    infos: list[ClusterInfo] = []
    pkis: list[ClusterPKI] = []
    for i in range(n):
        name = f"{prefix}-{i}"
        pkis.append(generate_cluster_pki(directory / "clusters" / name, name, ["127.0.0.1"]))
        port = processes.free_port()
        infos.append(ClusterInfo(
            name=name, context=f"kind-{name}", server=f"https://127.0.0.1:{port}", port=port,
            kcm_port=processes.free_port(),
            kubeconfig=str(directory / "kubeconfigs" / f"{name}.yaml"),
            in_cluster_kubeconfig=str(directory / "kubeconfigs" / "updated" / f"{name}.yaml"),
        ))

    progress(f"starting {n} kube-apiserver(s)")
    apiservers = [processes.start(f"kube-apiserver-{c.name}", _apiserver_argv(bins, p, c.port, etcd_url, c.name),
                                  run_dir, log_dir, env) for c, p in zip(infos, pkis)]

    docs = []
    for c, p in zip(infos, pkis):
        doc = kc.client_cert_kubeconfig(name=c.context, server=c.server, ca_pem=p.ca_cert.read_bytes(),
                                        cert_pem=p.admin_cert.read_bytes(), key_pem=p.admin_key.read_bytes())
        docs.append(doc)
        kc.write_private(Path(c.kubeconfig), kc.dump(doc))
        # Every sandbox cluster is on this host: the in-cluster address is the same.
        kc.write_private(Path(c.in_cluster_kubeconfig), kc.dump(doc))
        kcm_doc = kc.client_cert_kubeconfig(name="kcm", server=c.server, ca_pem=p.ca_cert.read_bytes(),
                                            cert_pem=p.kcm_cert.read_bytes(), key_pem=p.kcm_key.read_bytes())
        kc.write_private(p.directory / "kcm.kubeconfig", kc.dump(kcm_doc))
    kc.write_private(directory / "kubeconfig", kc.dump(kc.merge(docs)))

    for c, p, proc in zip(infos, pkis, apiservers):
        _wait(f"kube-apiserver of {c.context}", lambda c=c, p=p: _https_get(c.port, "/readyz", p) == 200,
              [etcd, proc], timeout)
    progress(f"{n} API server(s) ready; starting controller managers")
    kcms = [processes.start(f"kube-controller-manager-{c.name}",
                            _kcm_argv(bins, p, p.directory / "kcm.kubeconfig", c.kcm_port), run_dir, log_dir, env)
            for c, p in zip(infos, pkis)]
    state = SandboxState(str(directory), prefix, etcd_url, infos)
    state.save()

    # The controller managers work once the token controller has given the `default`
    # service account of `default` and the CA publisher its kube-root-ca.crt.
    for c, p, proc in zip(infos, pkis, kcms):
        def kcm_ready(c=c, p=p) -> bool:
            return (_https_get(c.port, "/api/v1/namespaces/default/serviceaccounts/default", p) == 200
                    and _https_get(c.port, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt", p) == 200)
        _wait(f"kube-controller-manager of {c.context}", kcm_ready, [etcd, proc], timeout)
    progress("all clusters ready")
    return state


def status(directory: Path) -> tuple[SandboxState, dict[str, int], dict[str, bool]]:
    """The sandbox's state, its live processes, and which API servers answer /readyz."""
    directory = directory.resolve()
    state = SandboxState.load(directory)
    live = processes.running(directory / "run", _marker(directory))
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
    stopped = processes.stop_all(directory / "run", _marker(directory), order=STOP_ORDER)
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
    return processes.stop_all(directory / "run", _marker(directory), names=names, order=STOP_ORDER)


def read_log(directory: Path, name: str) -> str:
    """The log of one process of the sandbox (`logs/<name>.log`)."""
    log_dir = directory.resolve() / "logs"
    names = sorted(p.stem for p in log_dir.glob("*.log")) if log_dir.is_dir() else []
    if name not in names:
        if not (directory / STATE_FILE).exists():
            raise UsageError(f"no sandbox in {directory}: pass its --dir")
        raise UsageError(f"no log {name!r} in {log_dir}: one of {', '.join(names) or '(none)'}")
    return (log_dir / f"{name}.log").read_text(errors="replace")


def _remove_state(directory: Path) -> None:
    for entry in _OWN_ENTRIES:
        p = directory / entry
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
