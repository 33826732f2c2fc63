"""Kubeconfig files: load and merge, pick a context, build a single-context one.

Pure apart from reading and writing files: no network, no kubernetes client.
"""
from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from k8sctl.errors import UsageError

_NAMED_LISTS = ("clusters", "users", "contexts")
# Keys holding file paths, resolved against the kubeconfig's own folder (as kubectl does).
_PATH_KEYS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}


def default_paths(env: dict[str, str]) -> list[Path]:
    """$KUBECONFIG (os.pathsep-separated, empty entries skipped), else ~/.kube/config."""
    value = env.get("KUBECONFIG", "")
    paths = [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    return paths or [Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"]


# libyaml's parser where PyYAML was built with it: the same documents, about 10x faster
# (a kubeconfig of ten contexts with certificates: 58 ms in Python, 6 ms).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes) -> Any:
    """yaml.safe_load, with libyaml's parser when available."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def read_file(path: Path) -> dict:
    """Parse one kubeconfig file; relative file references become absolute."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"kubeconfig {path} does not exist: pass an existing file") from None
    except (PermissionError, IsADirectoryError) as e:
        raise UsageError(f"kubeconfig {path} cannot be read ({e.strerror}): check the path and its permissions") from None
    try:
        doc = load_yaml(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"kubeconfig {path} is not valid YAML{where}: fix or regenerate the file") from None
    if not isinstance(doc, dict):
        raise UsageError(f"kubeconfig {path} is not a kubeconfig (expected a mapping with clusters, users, contexts)")
    for section in _NAMED_LISTS:
        items = doc.get(section) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i for i in items):
            raise UsageError(f"kubeconfig {path}: '{section}' must be a list of named entries")
        inner = section[:-1]
        for item in items:
            body = item.get(inner) or {}
            for key in _PATH_KEYS.get(section, ()):
                if body.get(key) and not os.path.isabs(body[key]):
                    body[key] = str((path.parent / body[key]).resolve())
    return doc


def load(paths: list[Path]) -> dict:
    """Merge kubeconfig files like kubectl: the first file to define a name wins."""
    existing = [p for p in paths if p.exists()] if len(paths) > 1 else paths
    if not existing:
        raise UsageError(f"no kubeconfig found at {os.pathsep.join(map(str, paths))}: pass --kubeconfig or set KUBECONFIG")
    merged: dict = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for path in existing:
        doc = read_file(path)
        if not merged.get("current-context") and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section in _NAMED_LISTS:
            seen = {i["name"] for i in merged[section]}
            merged[section] += [i for i in doc.get(section) or [] if i["name"] not in seen]
    return merged


@dataclass(frozen=True)
class ContextView:
    """One context of a kubeconfig with its cluster and user resolved."""

    name: str
    cluster_name: str
    cluster: dict
    user_name: str
    user: dict
    namespace: str | None

    @property
    def server(self) -> str:
        return self.cluster.get("server", "")


def _named(doc: dict, section: str, name: str) -> dict | None:
    items = doc.get(section) or []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(section[:-1]) or {}
    return None


# The types client-go decodes these fields into: kubectl refuses a kubeconfig with another type.
# A quoted "false" for insecure-skip-tls-verify is a string, which Python (and the kubernetes
# package's loader) would take as true: it must never turn verification off.
_FIELD_TYPES: dict[str, dict[str, type]] = {
    "cluster": {"server": str, "certificate-authority-data": str, "certificate-authority": str,
                "tls-server-name": str, "proxy-url": str, "insecure-skip-tls-verify": bool,
                "disable-compression": bool},
    "user": {"token": str, "tokenFile": str, "client-certificate-data": str, "client-key-data": str,
             "client-certificate": str, "client-key": str, "username": str, "password": str},
}


def _field_type_problem(section: str, body: object, name: str) -> str | None:
    """Why a cluster or user entry cannot be decoded as kubectl would, or None. Names the field and
    the type found, never the value (it may be a credential)."""
    if not isinstance(body, dict):
        return f"{section} {name!r} is not a mapping"
    for key, expected in _FIELD_TYPES[section].items():
        value = body.get(key)
        if value is None or type(value) is expected:
            continue
        if expected is bool:
            return (f"{key} of {section} {name!r} must be true or false, not a {type(value).__name__} (kubectl "
                    f"refuses it too): write it unquoted")
        return f"{key} of {section} {name!r} must be a string, not a {type(value).__name__}: quote it"
    return None


def context_names(doc: dict) -> list[str]:
    contexts = doc.get("contexts") or []
    return [c["name"] for c in contexts if isinstance(c, dict) and isinstance(c.get("name"), str)] \
        if isinstance(contexts, list) else []


def select_context(doc: dict, name: str | None, source: str = "kubeconfig") -> ContextView:
    """Resolve `name` (default: current-context) into its cluster and user."""
    name = name or doc.get("current-context")
    if not name:
        raise UsageError(f"{source} has no current-context: pass a context name (one of: {', '.join(context_names(doc)) or 'none'})")
    ctx = _named(doc, "contexts", name)
    if ctx is None:
        raise UsageError(f"context {name!r} not found in {source}; known contexts: {', '.join(context_names(doc)) or 'none'}")
    if not isinstance(ctx, dict):
        raise UsageError(f"context {name!r} in {source} is not a mapping")
    cluster_name, user_name = ctx.get("cluster", ""), ctx.get("user", "")
    cluster = _named(doc, "clusters", cluster_name)
    if cluster is None or (isinstance(cluster, dict) and not cluster.get("server")):
        raise UsageError(f"context {name!r} in {source} refers to cluster {cluster_name!r}, which is missing or has no server")
    user = _named(doc, "users", user_name) or {}
    for section, body, body_name in (("cluster", cluster, cluster_name), ("user", user, user_name)):
        problem = _field_type_problem(section, body, body_name)
        if problem:
            raise UsageError(f"{problem} (context {name!r} in {source})")
    _check_server(cluster["server"], f"cluster {cluster_name!r} in {source}")
    return ContextView(name, cluster_name, cluster, user_name, user, ctx.get("namespace"))


# A kubeconfig read from a cluster (a ClientConfig's Secret) is untrusted data: it may hold
# inline credentials and trust, nothing that makes this machine run a command, read a
# file, use a proxy or skip TLS verification. Anything else makes it unusable.
STORED_KEYS = {
    "cluster": {"server", "certificate-authority-data", "tls-server-name", "extensions", "disable-compression"},
    "user": {"token", "client-certificate-data", "client-key-data", "extensions"},
}
_WHY_REFUSED = {
    "exec": "runs a command (exec plugin)",
    "auth-provider": "runs an auth-provider plugin",
    "tokenFile": "reads the token from a local file",
    "client-certificate": "reads a local file",
    "client-key": "reads a local file",
    "certificate-authority": "reads a local file",
    "proxy-url": "sends traffic through a proxy",
    "insecure-skip-tls-verify": "turns TLS verification off",
    "username": "uses basic auth",
    "password": "uses basic auth",
    "as": "impersonates another user",
    "as-groups": "impersonates other groups",
    "as-uid": "impersonates another user",
    "as-user-extra": "impersonates another user",
}


def stored_kubeconfig_problem(view: ContextView) -> str | None:
    """Why a kubeconfig read from a cluster must not be used for `view`, or None when it may.

    Accepted: `token`, or `client-certificate-data` with `client-key-data`; trust from
    `certificate-authority-data` (or the system's CAs when there is none).
    """
    for section, body, name in (("user", view.user, view.user_name), ("cluster", view.cluster, view.cluster_name)):
        if not isinstance(body, dict):
            return f"{section} {name!r} is not a mapping"
        for key in body:
            if key not in STORED_KEYS[section]:
                why = _WHY_REFUSED.get(key, "is not an inline credential or CA")
                return (f"{section} {name!r} sets {key!r}, which {why}; a kubeconfig stored in a cluster may hold only "
                        f"inline credentials (token, or client-certificate-data and client-key-data) and "
                        f"certificate-authority-data")
    user = view.user
    if not user.get("token") and not (user.get("client-certificate-data") and user.get("client-key-data")):
        if user.get("client-certificate-data") or user.get("client-key-data"):
            return f"user {view.user_name!r} has only half of a client certificate (needs both -data keys)"
        return f"user {view.user_name!r} has no credentials (no token, no client certificate)"
    return None


def auth_kind(user: dict) -> str:
    """What a kubeconfig user authenticates with, in a word or two (never the credential)."""
    if user.get("exec"):
        return "exec"
    if user.get("auth-provider"):
        return "auth-provider"
    if user.get("token") or user.get("tokenFile"):
        return "token"
    if user.get("client-certificate-data") or user.get("client-certificate"):
        return "client certificate"
    if user.get("username"):
        return "basic auth"
    return "none"


def is_server_url(server: str, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """Whether `server` is SCHEME://HOST[:PORT] with a valid port."""
    try:
        parts = urlsplit(str(server))
        _ = parts.port  # reading it raises on an out-of-range or non-numeric port
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and " " not in str(server)


def _check_server(server: str, where: str) -> None:
    if not is_server_url(server):
        raise UsageError(f"{where} has an invalid server URL {server!r}: expected https://HOST[:PORT]")


def build_kubeconfig(*, cluster_name: str, server: str, ca_pem: bytes, user_name: str, token: str,
                     context_name: str, namespace: str | None = None, tls_server_name: str | None = None) -> dict:
    """A kubeconfig with exactly one cluster, one bearer-token user and one context."""
    if not ca_pem.strip():
        raise UsageError("the CA certificate is empty: refusing to write a kubeconfig without TLS verification")
    context: dict = {"cluster": cluster_name, "user": user_name}
    if namespace:
        context["namespace"] = namespace
    cluster = {"certificate-authority-data": base64.b64encode(ca_pem).decode(), "server": server}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": {"token": token}}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
    }


def client_cert_kubeconfig(*, name: str, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict:
    """A kubeconfig authenticating with a client certificate (the sandbox's admin)."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"certificate-authority-data": b64(ca_pem), "server": server}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def merge(docs: list[dict]) -> dict:
    """Several single-context kubeconfigs as one file (first one's context current)."""
    out: dict = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [], "contexts": []}
    for d in docs:
        for section in _NAMED_LISTS:
            out[section] += d.get(section) or []
    if docs:
        out["current-context"] = docs[0].get("current-context")
    return out


def dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write_private(path: Path, text: str) -> None:
    """Write a credential file atomically with mode 0600 (never readable by others, never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ca_pem_of(cluster: dict) -> bytes | None:
    """The CA a kubeconfig cluster entry carries (data or file), or None."""
    if cluster.get("certificate-authority-data"):
        try:
            return base64.b64decode(cluster["certificate-authority-data"])
        except ValueError:
            raise UsageError("certificate-authority-data in the kubeconfig is not valid base64") from None
    if cluster.get("certificate-authority"):
        p = Path(cluster["certificate-authority"])
        try:
            return p.read_bytes()
        except OSError as e:
            raise UsageError(f"certificate-authority file {p} cannot be read ({e.strerror})") from None
    return None


# --- in-cluster: the pod's service account, when there is no kubeconfig (as kubectl does) ---

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_CONTEXT = "in-cluster"


def in_cluster(env: dict[str, str], sa_dir: Path | None = None) -> dict | None:
    """A kubeconfig for the pod's own service account (KUBERNETES_SERVICE_HOST/PORT and the
    mounted token, CA and namespace), or None outside a pod. Read once: a k8sctl run is short."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    sa_dir = sa_dir or SERVICE_ACCOUNT_DIR
    token_path = sa_dir / "token"
    if not host or not port or not token_path.is_file():
        return None
    try:
        token = token_path.read_text().strip()
        ca = (sa_dir / "ca.crt").read_bytes() if (sa_dir / "ca.crt").is_file() else b""
        namespace = (sa_dir / "namespace").read_text().strip() if (sa_dir / "namespace").is_file() else None
    except OSError as e:
        raise UsageError(f"the pod's service account files in {sa_dir} cannot be read ({e.strerror})") from None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    cluster: dict = {"server": f"https://{host}:{port}"}
    if ca.strip():
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    context: dict = {"cluster": IN_CLUSTER_CONTEXT, "user": IN_CLUSTER_CONTEXT}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": IN_CLUSTER_CONTEXT, "cluster": cluster}],
        "users": [{"name": IN_CLUSTER_CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": IN_CLUSTER_CONTEXT, "context": context}],
        "current-context": IN_CLUSTER_CONTEXT,
    }


def load_or_in_cluster(explicit: list[Path], env: dict[str, str], sa_dir: Path | None = None) -> dict:
    """The user's kubeconfig: `explicit` (--kubeconfig), else $KUBECONFIG or ~/.kube/config, else,
    when none of those exists and this runs in a pod, the pod's service account."""
    if explicit:
        return load(explicit)
    paths = default_paths(env)
    if not any(p.exists() for p in paths):
        doc = in_cluster(env, sa_dir)
        if doc is not None:
            return doc
    return load(paths)
