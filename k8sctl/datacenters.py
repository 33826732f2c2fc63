"""K8ssandraCluster -> CassandraDatacenter objects, the way k8ssandra-operator builds them.

Pure: no cluster, no IO. Follows the operator's Coalesce/NewDatacenter (see
README, "How reconcile builds a CassandraDatacenter"). Out of scope, as for the
operator's other controllers: Stargate, Reaper, Medusa, telemetry ConfigMaps,
seeds, keyspace replication, decommissioning.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from k8sctl.apis.cassandradatacenter import API_VERSION, HASH_ANNOTATION, KIND, SKIP_USER_CREATION, canonical_hash
from k8sctl.errors import UsageError

__all__ = ["API_VERSION", "HASH_ANNOTATION", "SKIP_USER_CREATION", "DesiredDatacenter", "build_datacenters",
           "canonical_hash", "cleanup_for_kubernetes", "coalesce", "merge", "quantity_bytes"]

INITIAL_REPLICATION_ANNOTATION = "k8ssandra.io/initial-system-replication"

# Fields only the cluster level (spec.cassandra) decides.
CLUSTER_ONLY = {"clusterName", "superuserSecretRef", "serverType", "serverEncryptionStores",
                "clientEncryptionStores", "additionalSeeds", "datacenters", "metadata", "rebuild"}
# Fields only a datacenter decides.
DC_ONLY = {"k8sContext", "metadata", "size", "stopped", "perNodeConfigMapRef", "cdc", "datacenterName", "stargate"}
# Lists merged item by item on a key (cluster order kept, new datacenter items appended); other lists are atomic.
MERGE_KEYS = {"racks": "name", "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "volumeDevices": "devicePath", "pvcs": "name",
              "additionalVolumes": "name"}
# Values replaced whole rather than merged (a volume's source, an env var's source).
ATOMIC_KEYS = {"valueFrom", "configMap", "secret", "emptyDir", "persistentVolumeClaim", "hostPath", "projected"}

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


@dataclass(frozen=True)
class DesiredDatacenter:
    """One CassandraDatacenter to push: where, and the object itself (hash annotated)."""

    index: int
    context: str          # "" = the control plane itself
    namespace: str
    name: str
    object: dict

    @property
    def resource_hash(self) -> str:
        return self.object["metadata"]["annotations"][HASH_ANNOTATION]


# --- merging -----------------------------------------------------------------

def _unset(v: Any) -> bool:
    # Go zero values count as "not set" when merging (an explicit false is a value: *bool).
    return v is None or v == "" or v == [] or v == {}


def merge(cluster: Any, dc: Any, key: str | None = None) -> Any:
    """The datacenter wins: maps key by key, keyed lists item by item, everything else replaced."""
    if _unset(dc):
        return copy.deepcopy(cluster)
    if _unset(cluster) or key in ATOMIC_KEYS:
        return copy.deepcopy(dc)
    if isinstance(cluster, dict) and isinstance(dc, dict):
        out = copy.deepcopy(cluster)
        for k, v in dc.items():
            out[k] = merge(cluster.get(k), v, k)
        return out
    if isinstance(cluster, list) and isinstance(dc, list) and key in MERGE_KEYS:
        item_key = MERGE_KEYS[key]
        out = [copy.deepcopy(i) for i in cluster]
        index = {i.get(item_key): n for n, i in enumerate(out) if isinstance(i, dict)}
        for item in dc:
            k = item.get(item_key) if isinstance(item, dict) else None
            if k is not None and k in index:
                merged = merge(out[index[k]], item)
                # An env var is a value or a source, never both (the API server rejects both).
                if key == "env" and "valueFrom" in item:
                    merged.pop("value", None)
                out[index[k]] = merged
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(dc)


def coalesce(cassandra: dict, dc_template: dict) -> dict:
    """The datacenter's effective options: cluster-level merged with its own."""
    out = {k: copy.deepcopy(v) for k, v in cassandra.items() if k not in CLUSTER_ONLY}
    for k, v in dc_template.items():
        if k in DC_ONLY:
            out[k] = copy.deepcopy(v)
        else:
            out[k] = merge(out.get(k), v, k)
    # meta.{commonLabels, commonAnnotations, pods, services} merge cluster into dc.
    cluster_meta = {k: v for k, v in (cassandra.get("metadata") or {}).items()
                    if k in ("commonLabels", "commonAnnotations", "pods", "services")}
    out["metadata"] = merge(cluster_meta, dc_template.get("metadata") or {})
    return out


# --- small helpers -----------------------------------------------------------

def cleanup_for_kubernetes(name: str) -> str:
    """cass-operator's CleanupForKubernetes: a DNS-1035 label, lower-case, `_` -> `-`, invalid parts dropped."""
    if re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63:
        return name
    s = name.lower().replace("_", "-")
    return "".join(re.findall(r"[a-z0-9-]+", s)).strip("-")


def quantity_bytes(value: Any) -> int:
    """A Kubernetes quantity ("512M", "1Gi", 1024) as an integer number of bytes."""
    if isinstance(value, (int, float)):
        return int(value)
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise UsageError(f"{value!r} is not a Kubernetes quantity like 512M or 1Gi")
    return int(Decimal(m.group(1)) * _SUFFIX[m.group(2)])


def parse_version(version: str) -> tuple[int, int, int]:
    m = _SEMVER.match(version or "")
    if not m:
        raise UsageError(f"serverVersion {version!r} is not a version like 4.0.1")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# --- config ------------------------------------------------------------------

# K8ssandraCluster jvmOptions field -> cass-config keys (quantities in bytes).
_JVM_FIELDS = {"heapSize": ("initial_heap_size", "max_heap_size"), "heap_initial_size": ("initial_heap_size",),
               "heap_max_size": ("max_heap_size",), "heapNewGenSize": ("heap_new_size",)}


def _config_json(config: dict, major: int) -> dict:
    """spec.config as cass-operator's config builder reads it."""
    out: dict = {}
    if config.get("cassandraYaml"):
        out["cassandra-yaml"] = copy.deepcopy(config["cassandraYaml"])
    if config.get("dseYaml"):
        out["dse-yaml"] = copy.deepcopy(config["dseYaml"])
    jvm = config.get("jvmOptions") or {}
    section: dict = {}
    for field, value in jvm.items():
        if field == "additionalOptions":
            continue
        if field in _JVM_FIELDS:
            for key in _JVM_FIELDS[field]:
                section[key] = quantity_bytes(value)
        elif field == "gc":
            section["garbage_collector"] = value
        else:
            section[field] = value
    if section:
        out["jvm-options" if major == 3 else "jvm-server-options"] = section
    if jvm.get("additionalOptions"):
        out["cassandra-env-sh"] = {"additional-jvm-opts": list(jvm["additionalOptions"])}
    return out


def _apply_defaults(config: dict, server_type: str, major: int, auth: bool, first: bool,
                    system_replication: str) -> dict:
    config = copy.deepcopy(config or {})
    yaml_cfg = config.setdefault("cassandraYaml", {})
    if server_type in ("cassandra", "hcd"):
        yaml_cfg.setdefault("num_tokens", 256 if major == 3 else 16)
        if major == 3:
            yaml_cfg.setdefault("start_rpc", False)
    else:
        config.setdefault("dseYaml", {})
        yaml_cfg.setdefault("allocate_tokens_for_local_replication_factor", 3)
    if server_type == "dse":
        authn, authz, roles = ("com.datastax.bdp.cassandra.auth.DseAuthenticator",
                               "com.datastax.bdp.cassandra.auth.DseAuthorizer",
                               "com.datastax.bdp.cassandra.auth.DseRoleManager")
    else:
        authn, authz, roles = ("PasswordAuthenticator", "CassandraAuthorizer", "CassandraRoleManager")
    if not auth:
        authn, authz = "AllowAllAuthenticator", "AllowAllAuthorizer"
    yaml_cfg.setdefault("authenticator", authn)
    yaml_cfg.setdefault("authorizer", authz)
    yaml_cfg.setdefault("role_manager", roles)
    jvm = config.setdefault("jvmOptions", {})
    options = list(jvm.get("additionalOptions") or [])
    # The operator prepends each option when missing, system replication first, then
    # allow_alter_rf: so allow_alter_rf comes first.
    if server_type in ("cassandra", "hcd"):
        if first:
            options = _prepend_if_missing(options, f"-Dcassandra.system_distributed_replication={system_replication}")
        if major != 3:
            options = _prepend_if_missing(options, "-Dcassandra.allow_alter_rf_during_range_movement=true")
    jvm["additionalOptions"] = options
    if not jvm["additionalOptions"]:
        del jvm["additionalOptions"]
    return config


def _prepend_if_missing(options: list[str], option: str) -> list[str]:
    return options if option in options else [option, *options]


def _system_replication(kc: dict, datacenters: list[dict]) -> str:
    annotations = (kc.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(INITIAL_REPLICATION_ANNOTATION)
    if raw:
        try:
            replication = json.loads(raw)
        except ValueError:
            raise UsageError(f"annotation {INITIAL_REPLICATION_ANNOTATION} is not JSON like {{\"dc1\": 3}}") from None
    else:
        first = datacenters[0]
        name = first.get("datacenterName") or first["metadata"]["name"]
        replication = {name: min(3, int(first.get("size") or 1))}
        for ext in (kc.get("spec") or {}).get("externalDatacenters") or []:
            replication.setdefault(ext, 3)
    # Sorted by datacenter name, as the operator writes it.
    return ",".join(f"{k}:{replication[k]}" for k in sorted(replication))


# --- the builder -------------------------------------------------------------

def _validate(options: dict, server_type: str, telemetry_mcac: bool) -> list[str]:
    """The operator's ValidateDatacenterConfig checks, as messages without the datacenter name."""
    errors = []
    version = options.get("serverVersion")
    if not version:
        errors.append("template.ServerVersion is required (spec.cassandra.serverVersion)")
    if not server_type:
        errors.append("serverType is required")
    if not options.get("storageConfig"):
        errors.append("storageConfig is required (spec.cassandra.storageConfig)")
    if version and server_type == "cassandra" and not telemetry_mcac:
        v = parse_version(version)
        if (v[0] == 3 and v < (3, 11, 13)) or (v[0] == 4 and v[1] == 0 and v < (4, 0, 4)):
            errors.append(f"the new metrics endpoint is only available since Cassandra 3.11.13/4.0.4, so MCAC "
                          f"cannot be disabled (serverVersion {version}); set spec.cassandra.telemetry.mcac.enabled: "
                          f"true or use a newer version")
    yaml_cfg = (options.get("config") or {}).get("cassandraYaml") or {}
    if "commitlog_sync_period_in_ms" in yaml_cfg and "commitlog_sync_batch_window_in_ms" in yaml_cfg:
        errors.append("commitlog_sync_period_in_ms and commitlog_sync_batch_window_in_ms are mutually exclusive")
    return errors


# The operator's default MCAC metric filters (pkg/telemetry), space-separated in env METRIC_FILTERS.
DEFAULT_METRIC_FILTERS = (
    "deny:org.apache.cassandra.metrics.Table",
    "deny:org.apache.cassandra.metrics.table",
    "allow:org.apache.cassandra.metrics.table.live_ss_table_count",
    "allow:org.apache.cassandra.metrics.Table.LiveSSTableCount",
    "allow:org.apache.cassandra.metrics.table.live_disk_space_used",
    "allow:org.apache.cassandra.metrics.table.LiveDiskSpaceUsed",
    "allow:org.apache.cassandra.metrics.Table.Pending",
    "allow:org.apache.cassandra.metrics.Table.Memtable",
    "allow:org.apache.cassandra.metrics.Table.Compaction",
    "allow:org.apache.cassandra.metrics.table.read",
    "allow:org.apache.cassandra.metrics.table.write",
    "allow:org.apache.cassandra.metrics.table.range",
    "allow:org.apache.cassandra.metrics.table.coordinator",
    "allow:org.apache.cassandra.metrics.table.dropped_mutations",
)


def _metric_filters(options: dict) -> str:
    """telemetry.mcac.metricFilters (an empty list is a value), else the operator's defaults."""
    filters = ((options.get("telemetry") or {}).get("mcac") or {}).get("metricFilters")
    return " ".join(DEFAULT_METRIC_FILTERS if filters is None else filters)


# cass-operator's names for the Service kinds meta.services configures.
_SERVICES = {"dcService": "dcService", "seedService": "seedService", "allPodsService": "allpodsService",
             "additionalSeedService": "additionalSeedService", "nodePortService": "nodePortService"}


def _service_config(options: dict, kc_name: str, kc_namespace: str) -> dict:
    """spec.additionalServiceConfig: meta.services, and on the all-pods Service the two labels
    the operator always adds (it watches that Service's endpoints by them)."""
    services = (options.get("metadata") or {}).get("services") or {}
    out: dict = {}
    for ours, theirs in _SERVICES.items():
        tags = services.get(ours) or {}
        entry = {k: dict(v) for k, v in (("additionalLabels", tags.get("labels")),
                                         ("additionalAnnotations", tags.get("annotations"))) if v}
        if entry:
            out[theirs] = entry
    allpods = out.setdefault("allpodsService", {})
    allpods["additionalLabels"] = {**(allpods.get("additionalLabels") or {}),
                                   "k8ssandra.io/cluster-name": kc_name, "k8ssandra.io/cluster-namespace": kc_namespace}
    return out


METRICS_AGENT_VOLUME = "metrics-agent-config"
METRICS_AGENT_KEY = "metrics-collector.yaml"


def metrics_agent_config_name(cluster_name: str, dc_name: str) -> str:
    """The operator's `<clusterName>-<datacenterName>-metrics-agent-config`, cleaned up as a whole."""
    return cleanup_for_kubernetes(f"{cluster_name}-{dc_name}-metrics-agent-config")


def _metrics_agent_volume(config_map: str) -> dict:
    return {"name": METRICS_AGENT_VOLUME, "mountPath": "/opt/management-api/configs",
            "volumeSource": {"configMap": {"name": config_map,
                                           "items": [{"key": METRICS_AGENT_KEY, "path": METRICS_AGENT_KEY}]}}}


def _pod_template(options: dict, mcac: bool) -> dict:
    meta = options.get("metadata") or {}
    pods = meta.get("pods") or {}
    containers = copy.deepcopy(options.get("containers") or [])
    cassandra = next((c for c in containers if c.get("name") == "cassandra"), None)
    if cassandra is None:
        # The operator's UpdateCassandraContainer appends it after the user's containers.
        cassandra = {"name": "cassandra"}
        containers.append(cassandra)
    env = cassandra.setdefault("env", [])
    if mcac:
        env.append({"name": "METRIC_FILTERS", "value": _metric_filters(options)})
    if options.get("mgmtAPIHeap"):
        env.append({"name": "MANAGEMENT_API_HEAP_SIZE", "value": str(quantity_bytes(options["mgmtAPIHeap"]))})
    if not mcac:
        env.append({"name": "MGMT_API_DISABLE_MCAC", "value": "true"})
    if not env:
        del cassandra["env"]
    spec: dict = {"containers": containers}
    if options.get("initContainers"):
        spec["initContainers"] = copy.deepcopy(options["initContainers"])
    if options.get("podSecurityContext"):
        spec["securityContext"] = copy.deepcopy(options["podSecurityContext"])
    if options.get("podPriorityClassName"):
        spec["priorityClassName"] = options["podPriorityClassName"]
    volumes = ((options.get("extraVolumes") or {}).get("volumes")) or []
    if volumes:
        spec["volumes"] = copy.deepcopy(volumes)
    template: dict = {"spec": spec}
    pod_meta = {k: v for k, v in (("labels", pods.get("labels")), ("annotations", pods.get("annotations"))) if v}
    if pod_meta:
        template["metadata"] = pod_meta
    return template


def build_datacenters(kc: dict) -> list[DesiredDatacenter]:
    """Every datacenter's desired CassandraDatacenter, in spec order; all validation errors at once."""
    meta = kc.get("metadata") or {}
    kc_name, kc_namespace = meta.get("name", ""), meta.get("namespace") or ""
    spec = kc.get("spec") or {}
    cassandra = spec.get("cassandra")
    if not cassandra:
        raise UsageError(f"K8ssandraCluster {kc_name} has no spec.cassandra: nothing to reconcile")
    templates = cassandra.get("datacenters") or []
    if not templates:
        raise UsageError(f"K8ssandraCluster {kc_name} lists no datacenters in spec.cassandra.datacenters")
    cluster_name = cassandra.get("clusterName") or kc_name
    server_type = cassandra.get("serverType") or "cassandra"
    auth = spec.get("auth", True) is not False
    external_secrets = spec.get("secretsProvider") == "external"
    superuser = "" if external_secrets else (
        (cassandra.get("superuserSecretRef") or {}).get("name") or f"{cleanup_for_kubernetes(cluster_name)}-superuser")
    cluster_meta = cassandra.get("metadata") or {}

    errors: list[str] = []
    names = [((t.get("metadata") or {}).get("name") or "") for t in templates]
    for i, n in enumerate(names):
        if not n:
            errors.append(f"datacenter #{i + 1}: metadata.name is required")
        elif names.count(n) > 1 and names.index(n) == i:
            errors.append(f"datacenter {n} is listed more than once")
    if errors:
        raise UsageError("; ".join(errors))
    replication = _system_replication(kc, templates)

    out = []
    invalid: dict[str, list[str]] = {}  # message -> datacenters
    for idx, template in enumerate(templates):
        options = coalesce(cassandra, template)
        name = names[idx]
        mcac = bool(((options.get("telemetry") or {}).get("mcac") or {}).get("enabled"))
        problems = _validate(options, server_type, mcac)
        for p in problems:
            invalid.setdefault(p, []).append(name)
        if problems or invalid:
            continue
        major = parse_version(options["serverVersion"])[0]
        config = _apply_defaults(options.get("config") or {}, server_type, major, auth, idx == 0, replication)
        dc_meta = template.get("metadata") or {}
        labels = {
            "app.kubernetes.io/name": "k8ssandra-operator",
            "app.kubernetes.io/part-of": "k8ssandra",
            "app.kubernetes.io/component": "cassandra",
            "k8ssandra.io/cleaned-up-by": "k8ssandracluster-controller",
            "k8ssandra.io/cluster-name": kc_name,
            "k8ssandra.io/cluster-namespace": kc_namespace,
            **(dc_meta.get("labels") or {}),
            **(cluster_meta.get("labels") or {}),
        }
        annotations = dict(dc_meta.get("annotations") or {})
        if idx > 0:
            annotations[SKIP_USER_CREATION] = "true"
        annotations.update(cluster_meta.get("annotations") or {})
        if spec.get("externalDatacenters"):
            annotations = {SKIP_USER_CREATION: "true"}
        dc_spec: dict = {
            "clusterName": cluster_name,
            "serverType": server_type,
            "serverVersion": options["serverVersion"],
            "size": int(template.get("size") or 0),
            "config": _config_json(config, major),
            "storageConfig": copy.deepcopy(options["storageConfig"]),
            "superuserSecretName": superuser,
            "podTemplateSpec": _pod_template(options, mcac),
        }
        if template.get("stopped"):
            dc_spec["stopped"] = True  # false is Go's zero value: the operator omits it
        pvcs = ((options.get("extraVolumes") or {}).get("pvcs")) or []
        if pvcs:
            dc_spec["storageConfig"]["additionalVolumes"] = merge(
                dc_spec["storageConfig"].get("additionalVolumes") or [], pvcs, "additionalVolumes")
        # The metrics agent's configuration, mounted from the ConfigMap the operator writes beside it.
        agent_config = metrics_agent_config_name(cluster_name, template.get("datacenterName") or name)
        dc_spec["storageConfig"]["additionalVolumes"] = [
            *(dc_spec["storageConfig"].get("additionalVolumes") or []), _metrics_agent_volume(agent_config)]
        dc_spec["additionalServiceConfig"] = _service_config(options, kc_name, kc_namespace)
        optional = {
            "serverImage": options.get("serverImage"),
            "racks": options.get("racks"),
            "networking": options.get("networking"),
            "resources": options.get("resources"),
            "tolerations": options.get("tolerations"),
            "dseWorkloads": options.get("dseWorkloads"),
            "serviceAccountName": options.get("serviceAccount"),
            "readOnlyRootFilesystem": options.get("readOnlyRootFilesystem"),
            "allowMultipleNodesPerWorker": options.get("softPodAntiAffinity"),
            "managementApiAuth": options.get("managementApiAuth"),
            "cdc": template.get("cdc"),
            "datacenterName": template.get("datacenterName"),
            "additionalLabels": (options.get("metadata") or {}).get("commonLabels"),
            "additionalAnnotations": (options.get("metadata") or {}).get("commonAnnotations"),
        }
        dc_spec.update({k: copy.deepcopy(v) for k, v in optional.items() if v not in (None, "", [], {})})
        obj = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": dc_meta.get("namespace") or kc_namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": dc_spec,
        }
        obj["metadata"]["annotations"][HASH_ANNOTATION] = canonical_hash(obj)
        out.append(DesiredDatacenter(idx, template.get("k8sContext") or "", obj["metadata"]["namespace"], name, obj))
    if invalid:
        raise UsageError("; ".join(f"datacenter{'s' if len(dcs) > 1 else ''} {', '.join(dcs)}: {msg}"
                                   for msg, dcs in invalid.items()))
    return out
