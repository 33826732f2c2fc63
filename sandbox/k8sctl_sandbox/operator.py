"""`sandbox up --operator`: the real k8ssandra-operator manager, built from its source and run
against the sandbox's control plane as its service account, supervised like a Deployment.

The source is a checkout of k8ssandra/k8ssandra-operator (v1.32.5) given by path; it is built
at run time into the cache (`<cache>/operator/<source hash>/manager`) and never copied into
the project. What the manager needs, found by running it (see README, "The real operator"):
its CRDs and cass-operator's on every cluster, its real Role bound to its service account,
the image ConfigMap, webhook serving certificates, and the service-account namespace file
it reads outside a pod (given to it in a private mount namespace, never on the host's /run).

Layout of DIR/operator/:
  kubeconfig            the service account's token for the control plane (0600)
  tmp/k8s-webhook-server/serving-certs/tls.{crt,key}   its TMPDIR: webhook certificates
  utab/                 LIBMOUNT_UTAB of the private mount namespace
  config.json           what the supervisor runs (argv, env names, ports)
  status.json           written by the supervisor only: pid, restarts, last reason
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from k8sctl import interrupts
from k8sctl.errors import SandboxError, UsageError
from k8sctl_sandbox import binaries

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = PROJECT_ROOT.parent / "shared" / "upstream" / "k8ssandra-operator"
MODULE = "github.com/k8ssandra/k8ssandra-operator"
WANTED = "a checkout of k8ssandra/k8ssandra-operator v1.32.5"


# ---------------------------------------------------------------------------- source and build

def resolve_source(given: Path | None, default: Path = DEFAULT_SOURCE) -> Path:
    """The operator source to build: `given`, else the default when present; checked."""
    if given is None:
        if not default.is_dir():
            raise UsageError(f"no k8ssandra-operator source at {default}: pass --operator-source DIR ({WANTED})")
        given = default
    source = given.expanduser().resolve()
    go_mod = source / "go.mod"
    try:
        first = go_mod.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        raise UsageError(f"--operator-source {given} has no go.mod: pass {WANTED}") from None
    if first != f"module {MODULE}" or not (source / "main.go").is_file():
        raise UsageError(f"--operator-source {given} is not the k8ssandra-operator module (with main.go): pass {WANTED}")
    return source


def _build_inputs(source: Path) -> list[Path]:
    # What `go build .` reads: everything but config/ (manifests) and hidden folders.
    out = []
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source)
        if rel.parts[0] == "config" or any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file():
            out.append(p)
    return out


def _go_version() -> str:
    if shutil.which("go") is None:
        raise SandboxError("Go is not installed: install Go >= 1.26 to build the k8ssandra-operator manager")
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def source_hash(source: Path, go_version: str) -> str:
    """sha256 of the build inputs (path and content) and the Go version: the cache key."""
    h = hashlib.sha256(f"{go_version}\n".encode())
    for p in _build_inputs(source):
        h.update(str(p.relative_to(source)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def cache_root() -> Path:
    return binaries.default_cache_root().parent / "operator"


def build(source: Path, root: Path | None = None,
          progress: Callable[[str], None] = lambda s: None) -> tuple[Path, bool]:
    """The manager built from `source` (once per source hash); returns (path, built now)."""
    root = root or cache_root()
    target = root / source_hash(source, _go_version())[:16]
    manager = target / "manager"

    def go_build(work: Path, out: Path, log: Path) -> None:
        # Build from a copy (the source tree is only read).
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(".*"))
        cmd = ["go", "build", "-trimpath", "-mod=readonly", "-ldflags", "-s -w", "-o", str(out / "manager"), "."]
        progress("building the k8ssandra-operator manager (go build; minutes when cold)")
        with open(log, "wb") as logf:
            logf.write(("$ CGO_ENABLED=0 " + " ".join(cmd) + f"\n# source {source}\n").encode())
            logf.flush()
            # Its own process group: on Ctrl-C or SIGTERM go and its compilers stop together.
            rc = interrupts.run_in_own_group(cmd, work, dict(os.environ, CGO_ENABLED="0"), logf)
        if rc != 0 or not (out / "manager").is_file():
            raise SandboxError(f"building the k8ssandra-operator manager failed (go build exit {rc}); read {log}")
        (out / "SOURCE").write_text(f"{source}\n")

    built = binaries.build_once(target, lambda d: (d / "manager").is_file(), go_build, progress,
                                waiting="waiting for another build of the operator")
    return manager, built


# ---------------------------------------------------------------------------- what it needs on each cluster

WEBHOOK_PORT = 9443  # fixed in the operator's main.go
WEBHOOK_PATH = "/validate-k8ssandra-io-v1alpha1-k8ssandracluster"
SERVICEACCOUNT = "k8ssandra-operator"
TOKEN_SECRET = "k8ssandra-operator-token"
IMAGE_CONFIG_LABEL = {"k8ssandra.io/config": "image"}


def _yaml_docs(path: Path) -> list[dict]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


# cass-operator's CRDs as its kustomization builds them, vendored (data/crds/PROVENANCE.md).
VENDORED_CASS_OPERATOR_CRDS = Path(__file__).parent / "data" / "crds" / "cass-operator"


def crd_paths(source: Path, cass_operator_crds: Path = VENDORED_CASS_OPERATOR_CRDS) -> list[Path]:
    """Every CRD the operator needs: its own (config/crd/bases of its source) and cass-operator's
    as cass-operator's kustomization builds them (CassandraDatacenter, CassandraTask, ScheduledTask).
    """
    own = sorted((source / "config" / "crd" / "bases").glob("*.yaml"))
    cass = [cass_operator_crds / "cassandra.datastax.com_cassandradatacenters.yaml",
            *sorted(cass_operator_crds.glob("control.k8ssandra.io_*.yaml"))]
    missing = [str(p) for p in cass if not p.is_file()]
    if not own or missing:
        raise UsageError(f"CRDs missing: {', '.join(missing) or source / 'config/crd/bases'}: "
                         f"pass --operator-source {WANTED}")
    names = {p.name for p in own}
    # The operator's tree has no cass-operator CRDs; a name in both would be ambiguous.
    return own + [p for p in cass if p.name not in names]


def crd_documents(source: Path, cass_operator_crds: Path = VENDORED_CASS_OPERATOR_CRDS) -> list[dict]:
    return [d for p in crd_paths(source, cass_operator_crds) for d in _yaml_docs(p)]


def role_document(source: Path, namespace: str) -> dict:
    """The operator's real Role (config/rbac/role.yaml), in `namespace`."""
    docs = [d for d in _yaml_docs(source / "config" / "rbac" / "role.yaml") if d.get("kind") == "Role"]
    if len(docs) != 1:
        raise UsageError(f"{source / 'config/rbac/role.yaml'} should hold one Role: pass {WANTED}")
    role = docs[0]
    role["metadata"] = {"name": role["metadata"]["name"], "namespace": namespace}
    return role


def role_binding_document(role: dict, namespace: str) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": role["metadata"]["name"], "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICEACCOUNT, "namespace": namespace}],
    }


def image_config_document(source: Path, namespace: str) -> dict:
    """ConfigMap `image-config` labelled k8ssandra.io/config=image, from config/cass-operator/imageconfig."""
    path = source / "config" / "cass-operator" / "imageconfig" / "patch-image-config.yaml"
    try:
        data = _yaml_docs(path)[0]["data"]["image_config.yaml"]
    except (OSError, IndexError, KeyError, TypeError):
        raise UsageError(f"{path} has no data.image_config.yaml: pass {WANTED}") from None
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "image-config", "namespace": namespace, "labels": dict(IMAGE_CONFIG_LABEL)},
            "data": {"image_config.yaml": data}}


def webhook_document(ca_pem: bytes) -> dict:
    """Validation of K8ssandraClusters by the operator itself, as config/webhook/manifests.yaml
    declares it, but reached at its fixed loopback port instead of through a Service."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "k8ssandra-operator-sandbox"},
        "webhooks": [{
            "name": "vk8ssandracluster.kb.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": f"https://127.0.0.1:{WEBHOOK_PORT}{WEBHOOK_PATH}",
                             "caBundle": base64.b64encode(ca_pem).decode()},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "rules": [{"apiGroups": ["k8ssandra.io"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["k8ssandraclusters"]}],
        }],
    }


def _webhook_resource():
    from k8sctl import kube

    return kube.Resource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                         "ValidatingWebhookConfiguration", namespaced=False)


def install(client, source: Path, namespace: str, crds: list[dict]) -> None:
    """What the operator needs on one cluster (control plane or data plane)."""
    from k8sctl import kube
    from k8sctl_sandbox import crds_and_identity

    crds_and_identity.install_crds(client, crds, timeout=60.0)
    role = role_document(source, namespace)
    client.apply(kube.ROLE, role, force=True)
    client.apply(kube.ROLEBINDING, role_binding_document(role, namespace), force=True)


# ---------------------------------------------------------------------------- running it

OPERATOR_DIR = "operator"
SUPERVISOR = "operator-supervisor"   # process names (run/<name>.pid, logs/<name>.log)
MANAGER = "operator"
UNSUPERVISED = "not supervised"
STOP_ORDER = (SUPERVISOR, MANAGER)   # the supervisor first, or it would start the manager again
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Runs inside the private mount namespace: a tmpfs over /run (never the host's) holding the
# namespace file the operator reads outside a pod, then the manager itself (exec: same pid).
_IN_NAMESPACE = ('mount -n -t tmpfs -o mode=0755,size=1m k8sctl-operator-run /run'
                 ' && mkdir -p "${0%/*}" && printf %s "$1" > "$0" && shift && exec "$@"')
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def namespace_wrapper(namespace: str, utab: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and env that run a command in a private mount namespace with the
    service-account namespace file; as root, else through a user namespace."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    argv = ["unshare", *user, "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _IN_NAMESPACE, NAMESPACE_FILE, namespace]
    return argv, {"LIBMOUNT_UTAB": str(utab)}


def check_private_namespace(namespace: str, utab: Path) -> str | None:
    """None when a private mount namespace works here, else why not (one line)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    prefix, env = namespace_wrapper(namespace, utab)
    utab.parent.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run([*prefix, "cat", NAMESPACE_FILE], capture_output=True, text=True, timeout=10,
                           env={**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if p.returncode != 0 or p.stdout != namespace:
        why = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        return f"unshare --mount failed ({why}); it needs root or unprivileged user namespaces"
    return None


def webhook_port_holder(port: int = WEBHOOK_PORT) -> str | None:
    """None when the webhook port is free; else who holds it (a sandbox folder when it is one)."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
        # Go listens with SO_REUSEADDR on every address (":9443"): probe the same way.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
            return None
        except OSError:
            pass
    pid = _listener_pid(port)
    if pid is None:
        return f"another process (port {port} is in use)"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"process {pid}"
    for arg in cmdline:
        a = arg.decode(errors="replace")
        if a.startswith("--kubeconfig=") and a.endswith(f"/{OPERATOR_DIR}/kubeconfig"):
            return f"the operator of the sandbox in {Path(a.split('=', 1)[1]).parent.parent}"
    return f"process {pid} ({cmdline[0].decode(errors='replace')})"


def check_webhook_port() -> None:
    holder = webhook_port_holder()
    if holder:
        raise UsageError(f"the operator's webhook port {WEBHOOK_PORT} (fixed in its main.go) is taken by {holder}: "
                         "one sandbox per machine can run the operator; stop that one first")


def unavailable_reason(namespace: str = "k8ssandra-operator") -> str | None:
    """Why this machine cannot run the operator without touching the host's /run, or None."""
    with tempfile.TemporaryDirectory(prefix="k8sctl-utab-") as tmp:
        return check_private_namespace(namespace, Path(tmp) / "utab")


def _listener_pid(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def operator_dir(directory: Path) -> Path:
    return directory / OPERATOR_DIR


def write_service_account_kubeconfig(client, server: str, ca_pem: bytes, namespace: str, path: Path) -> None:
    """A kubeconfig with the operator service account's token (not the admin's)."""
    from k8sctl import kube
    from k8sctl import kubeconfig as kc

    secret = client.get(kube.SECRET, TOKEN_SECRET, namespace)
    token = base64.b64decode((secret.get("data") or {}).get("token", "")).decode()
    if not token:
        raise SandboxError(f"token Secret {namespace}/{TOKEN_SECRET} has no token yet")
    doc = kc.build_kubeconfig(cluster_name="control-plane", server=server, ca_pem=ca_pem,
                              user_name=f"{namespace}-{SERVICEACCOUNT}", token=token,
                              context_name="control-plane", namespace=namespace)
    kc.write_private(path, kc.dump(doc))


def start(state, source: Path, manager: Path, namespace: str | None = None,
          progress: Callable[[str], None] = lambda s: None, timeout: float = 120.0) -> dict:
    """Install what the operator needs on every cluster, then start its supervisor on the
    control plane (the sandbox's first cluster) and wait until it serves.

    Returns what was started (also saved in the sandbox state as `operator`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from k8sctl import kube
    from k8sctl import kubeconfig as kc
    from k8sctl_sandbox import crds_and_identity, pki, processes

    namespace = namespace or crds_and_identity.OPERATOR_NAMESPACE
    directory = Path(state.directory)
    odir = operator_dir(directory)
    odir.mkdir(mode=0o700, exist_ok=True)
    why = check_private_namespace(namespace, odir / "utab" / "utab")
    if why:
        raise SandboxError(f"cannot run the operator: {why}")
    check_webhook_port()

    crds = crd_documents(source)
    if state.k8ssandra:
        # --k8ssandra installed the vendored CRDs (cass-operator's in the form asked for): apply
        # only the others (those its kustomization leaves out, or another --operator-source's).
        from k8sctl_sandbox import crds_and_identity

        done = {d["metadata"]["name"]: d
                for d in crds_and_identity.crd_documents(state.cassandradatacenter_crd or "production")}
        crds = [d for d in crds if d["metadata"]["name"] not in done
                or (d != done[d["metadata"]["name"]] and d["spec"]["group"] != "cassandra.datastax.com")]
    progress(f"installing the operator's CRDs and Role in {len(state.clusters)} cluster(s)")

    def install_on(c):
        client = kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context)
        try:
            install(client, source, namespace, crds)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=min(4, len(state.clusters))) as pool:
        list(pool.map(install_on, state.clusters))

    control = state.clusters[0]
    cluster_pki = pki.ClusterPKI(directory / "clusters" / control.name)
    client = kube.KubeClient(kc.read_file(Path(control.kubeconfig)), control.context)
    try:
        client.apply(kube.CONFIGMAP, image_config_document(source, namespace), force=True)
        certs = odir / "tmp" / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki.issue_serving_cert(cluster_pki, certs / "tls.crt", certs / "tls.key", ["127.0.0.1"], "k8ssandra-operator-webhook")
        client.apply(_webhook_resource(), webhook_document(cluster_pki.ca_cert.read_bytes()), force=True)
        write_service_account_kubeconfig(client, control.server, cluster_pki.ca_cert.read_bytes(), namespace,
                                         odir / "kubeconfig")
    finally:
        client.close()

    health, metrics = processes.free_port(), processes.free_port()
    prefix, ns_env = namespace_wrapper(namespace, odir / "utab" / "utab")
    config = {
        "argv": [*prefix, str(manager), f"--kubeconfig={odir / 'kubeconfig'}",
                 f"--metrics-bind-address=127.0.0.1:{metrics}", f"--health-probe-bind-address=127.0.0.1:{health}"],
        "env": {**ns_env, "WATCH_NAMESPACE": namespace, "K8SSANDRA_CONTROL_PLANE": "true",
                "OPERATOR_NAMESPACE": namespace, "SERVICE_ACCOUNT_NAME": SERVICEACCOUNT,
                "TMPDIR": str(odir / "tmp"), "GOMAXPROCS": "2"},
        "unsetEnv": [*_PROXY_VARS, "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"],
        "log": str(directory / "logs" / f"{MANAGER}.log"),
        "pidFile": str(directory / "run" / f"{MANAGER}.pid"),
        "status": str(odir / "status.json"),
    }
    (odir / "config.json").write_text(json.dumps(config, indent=2))
    info = {"source": str(source), "manager": str(manager), "namespace": namespace, "context": control.context,
            "healthPort": health, "metricsPort": metrics, "webhookPort": WEBHOOK_PORT}
    state.operator = info
    state.save()

    progress("starting the k8ssandra-operator manager (supervised)")
    t0 = time.monotonic()
    sup = processes.start(SUPERVISOR, [sys.executable, "-m", "k8sctl_sandbox.operator_supervisor", str(odir)],
                          directory / "run", directory / "logs")
    wait_ready(directory, timeout=timeout, supervisor=sup)
    info["startupSeconds"] = round(time.monotonic() - t0, 1)
    state.save()
    return info


# ---------------------------------------------------------------------------- status

def status_report(directory: Path, info: dict, live: dict[str, int]) -> dict:
    """The operator as `sandbox status` shows it: state, pid, restarts, last exit."""
    status = read_status(directory) or {}
    state = status.get("state", "unknown")
    if SUPERVISOR not in live:
        state = UNSUPERVISED  # nothing restarts the manager any more
    elif state == "running" and MANAGER not in live:
        state = "restarting"
    return {"state": state, "pid": live.get(MANAGER), "restarts": status.get("restarts", 0),
            "started": status.get("started"), "lastExit": status.get("lastExit"),
            "context": info.get("context"), "namespace": info.get("namespace"),
            "healthPort": info.get("healthPort"), "source": info.get("source")}


def status_line(r: dict) -> str:
    line = f"operator: {r['state']}"
    if r["pid"]:
        line += f" (pid {r['pid']}, since {r['started']})"
    line += f" in {r['context']}/{r['namespace']}, {r['restarts']} restart(s)"
    if r["lastExit"]:
        line += f"; last exit: {_message(r['lastExit']['reason']) or 'code ' + str(r['lastExit']['code'])}"
    return line


def _message(log_line: str) -> str:
    """The level, logger and message of a zap console line, without its time and JSON fields."""
    fields = log_line.split("\t")
    if len(fields) > 2 and fields[0][:4].isdigit():
        fields = fields[1:]
    return " ".join(f for f in fields if not f.startswith("{")).strip()


def read_status(directory: Path) -> dict | None:
    """What the supervisor last wrote (pid, restarts, last exit), or None without an operator."""
    try:
        return json.loads((operator_dir(directory) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def run_log(directory: Path, status: dict | None = None) -> str:
    """The manager's log since its current run started."""
    status = status or read_status(directory) or {}
    log = directory / "logs" / f"{MANAGER}.log"
    try:
        with open(log, "rb") as f:
            f.seek(status.get("logOffset", 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def is_serving(text: str) -> bool:
    """Whether a run's log shows the K8ssandraCluster controller's workers started (caches synced)."""
    return any("Starting workers" in line and '"controller": "k8ssandracluster"' in line for line in text.splitlines())


def health_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_ready(directory: Path, timeout: float = 120.0, supervisor=None, after_runs: int = 0) -> dict:
    """Wait until the manager's current run (number > after_runs) serves; returns the status."""
    from k8sctl_sandbox.cluster import SandboxState

    state = SandboxState.load(directory)
    port = (state.operator or {}).get("healthPort")
    deadline = time.monotonic() + timeout
    log = directory / "logs" / f"{MANAGER}.log"
    while True:
        if supervisor is not None and supervisor.exit_code() is not None:
            raise SandboxError(f"the operator's supervisor exited (code {supervisor.exit_code()}); "
                               f"read {directory / 'logs' / (SUPERVISOR + '.log')}")
        status = read_status(directory) or {}
        if status.get("runs", 0) > after_runs and status.get("state") == "running" \
                and port and health_ok(port) and is_serving(run_log(directory, status)):
            return status
        last = (status.get("lastExit") or {}).get("reason") or ""
        if f":{WEBHOOK_PORT}: bind: address already in use" in last:
            raise SandboxError(f"the operator cannot listen on its webhook port {WEBHOOK_PORT} (fixed in its main.go): "
                               "another process took it after the check (a race: run again)")
        if time.monotonic() > deadline:
            raise SandboxError(f"the operator did not start serving within {timeout:.0f}s"
                               f"{'; last exit: ' + last if last else ''}; read {log}")
        time.sleep(0.2)
