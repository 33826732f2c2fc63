"""cass-operator's CassandraDatacenter API (cassandra.datastax.com/v1beta1): its one home.

Names, version, the annotations k8sctl and the operators put on it, the Ready rule
(read by reconcile, written by the sandbox's stand-in for cass-operator), and the
two ways to give a datacenter its configuration:

- inline: `spec.config`, the JSON object cass-operator's config builder reads. The
  production CRD (cass-operator's kustomization drops `spec.config` from the schema)
  accepts it; the raw `config/crd/bases` CRD types it as a byte string and refuses it.
- secret: `spec.configSecret`, the name of a Secret in the datacenter's namespace
  whose key `config` holds the same JSON. cass-operator reads it in preference to
  `spec.config` and watches it (the field's description in the CRD).

Pure: no IO.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

from k8sctl.kube import Resource

GROUP = "cassandra.datastax.com"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CassandraDatacenter"
RESOURCE = Resource(GROUP, VERSION, "cassandradatacenters", KIND)

HASH_ANNOTATION = "k8ssandra.io/resource-hash"
HASH_PATH = f"metadata.annotations.{HASH_ANNOTATION}"  # as `owned_drift` names it
SKIP_USER_CREATION = "cassandra.datastax.com/skip-user-creation"
# cass-operator annotates the Secret named by spec.configSecret with the datacenter's name
# (and patches it in when missing): k8sctl writes it itself so the operator has nothing to add.
DATACENTER_ANNOTATION = "cassandra.datastax.com/datacenter"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "k8sctl"
CONFIG_SECRET_KEY = "config"

INLINE, SECRET, AUTO = "inline", "secret", "auto"
CONFIG_SOURCES = (INLINE, SECRET, AUTO)
# Labels of the operator's that the config Secret carries too (the datacenter's own set).
_OPERATOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component",
                    "k8ssandra.io/cleaned-up-by", "k8ssandra.io/cluster-name", "k8ssandra.io/cluster-namespace")
_DNS1123_LABEL_MAX = 63


# --- status ------------------------------------------------------------------

def ready_state(obj: dict | None) -> tuple[bool | None, str | None]:
    """(Ready condition and progress == Ready, cassandraOperatorProgress) of a CassandraDatacenter."""
    if obj is None:
        return None, None
    status = obj.get("status") or {}
    progress = status.get("cassandraOperatorProgress")
    cond = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return cond and progress == "Ready", progress


def ready_status(dc: dict, reason: str = "SandboxStandIn",
                 message: str = "marked Ready by k8sctl sandbox (no cass-operator runs here)") -> dict:
    """The status cass-operator reports once a datacenter's pods are up (for stand-ins only)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"cassandraOperatorProgress": "Ready", "observedGeneration": dc["metadata"].get("generation", 1),
            "conditions": [{"type": "Ready", "status": "True", "reason": reason, "message": message,
                            "lastTransitionTime": now}]}


# --- the resource hash ---------------------------------------------------------

def canonical_hash(obj: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, compact), base64 like the operator's annotation."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def with_hash(obj: dict) -> dict:
    """`obj` with HASH_ANNOTATION set to the hash of everything else in it."""
    obj = copy.deepcopy(obj)
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(HASH_ANNOTATION, None)
    annotations[HASH_ANNOTATION] = canonical_hash(obj)
    return obj


def stored_hash(obj: dict | None) -> str | None:
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)


# --- config source -----------------------------------------------------------

def config_secret_name(cluster: str, datacenter: str) -> str:
    """`<K8ssandraCluster>-<datacenter>-cassandra-config`, a DNS-1123 label.

    Not cass-operator's own `<clusterName>-<datacenter>-config` (the Secret it writes
    the merged config to), which it would otherwise overwrite. Lower-cased, characters
    outside [a-z0-9-] become `-`; longer than 63 characters, it is cut and ends with
    8 hex characters of the full name's sha256, so two long names stay apart.
    """
    full = f"{cluster}-{datacenter}-cassandra-config"
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", full.lower())).strip("-")
    if len(name) <= _DNS1123_LABEL_MAX and name == full:
        return name
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    if len(name) + 9 > _DNS1123_LABEL_MAX:
        name = name[:_DNS1123_LABEL_MAX - 9].rstrip("-")
    return f"{name}-{digest}"


def config_json(config: dict) -> str:
    """The Secret's `config` value: the inline object as JSON, stable for a stable input."""
    return json.dumps(config, sort_keys=True, indent=2)


def for_source(inline: dict, source: str, cluster: str) -> tuple[dict, dict | None]:
    """The datacenter as written with `source`, and the config Secret it names (None inline).

    `inline` is the builder's object (spec.config inline, hash annotated). For `secret`
    the datacenter loses spec.config, gains spec.configSecret and is hashed again, so a
    config change alone changes only the Secret.
    """
    if source == INLINE:
        return copy.deepcopy(inline), None
    if source != SECRET:
        raise ValueError(f"config source {source!r} is not {INLINE} or {SECRET}")
    dc = copy.deepcopy(inline)
    meta, spec = dc["metadata"], dc["spec"]
    name = config_secret_name(cluster, meta["name"])
    config = spec.pop("config", None) or {}
    spec["configSecret"] = name
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k in _OPERATOR_LABELS}
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                     "annotations": {DATACENTER_ANNOTATION: meta["name"]}},
        "data": {CONFIG_SECRET_KEY: base64.b64encode(config_json(config).encode()).decode()},
    }
    return with_hash(dc), secret


def live_source(dc: dict | None, cluster: str) -> str | None:
    """Which source a live datacenter uses: SECRET for the Secret k8sctl names, INLINE for spec.config."""
    spec = (dc or {}).get("spec") or {}
    if dc is None:
        return None
    if spec.get("configSecret"):
        return SECRET if spec["configSecret"] == config_secret_name(cluster, dc["metadata"]["name"]) else None
    return INLINE if isinstance(spec.get("config"), dict) else None


def managed_by_k8sctl(obj: dict | None) -> bool:
    if not obj:
        return False
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def secret_config(secret: dict | None) -> dict | None:
    """The JSON a config Secret holds, or None when it holds none that parses."""
    raw = ((secret or {}).get("data") or {}).get(CONFIG_SECRET_KEY)
    if not raw:
        return None
    try:
        value = json.loads(base64.b64decode(raw))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- what k8sctl owns --------------------------------------------------------

def drift(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths of what `desired` sets and `live` does not have, or has with another value.

    Fields only `live` has (server defaults, other managers' fields, status) are not
    drift: k8sctl owns what it applies, nothing else.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        out: list[str] = []
        for k, v in desired.items():
            sub = f"{path}.{k}" if path else k
            if k not in live:
                out.append(sub)
            else:
                out.extend(drift(v, live[k], sub))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        return [p for i, (d, item) in enumerate(zip(desired, live)) for p in drift(d, item, f"{path}[{i}]")]
    # 1 == True in Python; not in JSON.
    same = desired == live and isinstance(desired, bool) == isinstance(live, bool)
    return [] if same else [path]


def owned_drift(desired: dict, live: dict) -> list[str]:
    """Drift of the parts of an object k8sctl writes: labels, annotations, and everything else but status."""
    meta_d, meta_l = desired.get("metadata") or {}, live.get("metadata") or {}
    out = []
    for key in ("labels", "annotations"):
        out += drift(meta_d.get(key) or {}, meta_l.get(key) or {}, f"metadata.{key}")
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        out += drift(value, live.get(key), key) if key in live else [key]
    return out


# --- schema errors -------------------------------------------------------------

# A field path where the API server names one: `spec.config: Invalid value`, or in a typed-patch
# error `.spec.racks: element 0: ...`.
_FIELD = re.compile(r"(?<![\w.\]])\.?((?:spec|metadata|data|stringData)(?:\.[A-Za-z0-9_-]+|\[[^\]]*\])*): ")


def invalid_fields(message: str) -> list[str]:
    """The field paths an API server's Invalid (422) or typed-patch error message names, in order."""
    seen: list[str] = []
    for m in _FIELD.finditer(message):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


_GO_VALUE_DUMP = re.compile(r"&value\.\w+\{.*\}", re.DOTALL)
_DETAIL_MAX = 300


def schema_detail(message: str) -> str:
    """What an API server's schema error says, from its first field on, without echoing config values.

    A typed-patch error prints the refused value whole (`&value.valueUnstructured{...}`); for
    spec.config that is the datacenter's configuration, which may hold passwords.
    """
    fields = invalid_fields(message)
    if refuses_inline_config(fields):
        return ("the CRD types spec.config as a byte string and refuses the JSON object cass-operator reads "
                "(cass-operator's raw config/crd/bases CRD)")
    m = _FIELD.search(message)
    detail = message[m.start():] if m else message
    detail = _GO_VALUE_DUMP.sub("(value not shown)", detail).strip().lstrip(".")
    if m and message[:m.start()].endswith("["):  # `is invalid: [a: ..., b: ...]`
        detail = detail.removesuffix("]")
    return detail if len(detail) <= _DETAIL_MAX else detail[:_DETAIL_MAX - 3] + "..."


def refuses_inline_config(fields: list[str]) -> bool:
    """Whether a schema error is about spec.config (the raw CRD's `must be of type byte`)."""
    return any(f == "spec.config" or f.startswith("spec.config.") for f in fields)
