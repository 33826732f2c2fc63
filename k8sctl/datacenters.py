"""K8ssandraCluster -> CassandraDatacenter objects, the way k8ssandra-operator builds them.

Pure: no cluster, no IO. Follows the operator's Coalesce/NewDatacenter (see
README, "How reconcile builds a CassandraDatacenter"). Out of scope, as for the
operator's other controllers: Stargate, Reaper, Medusa, telemetry ConfigMaps,
seeds, keyspace replication, decommissioning.
"""
from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from k8sctl.apis import k8ssandracluster as k8c
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
    agent_config: dict | None = None  # the metrics agent ConfigMap the datacenter mounts

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
        items = [copy.deepcopy(i) for i in cluster]
        index = {i.get(item_key): n for n, i in enumerate(items) if isinstance(i, dict)}
        for item in dc:
            k = item.get(item_key) if isinstance(item, dict) else None
            if k is not None and k in index:
                merged = merge(items[index[k]], item)
                # An env var is a value or a source, never both (the API server rejects both).
                if key == "env" and "valueFrom" in item:
                    merged.pop("value", None)
                items[index[k]] = merged
            else:
                items.append(copy.deepcopy(item))
        return items
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

# K8ssandraCluster jvmOptions field -> "section/key" of cass-config, per server: (Cassandra 3.11,
# Cassandra 4+ and HCD, DSE 6.8+); None: not passed on for that server (the operator's cass-config
# struct tags in apis/k8ssandra/v1alpha1/cassandraconfig_types.go, v1.32.5).
_J3, _JS, _J11, _J8 = "jvm-options/", "jvm-server-options/", "jvm11-server-options/", "jvm8-server-options/"


def _in_both(key_3_11: str | None, key_later: str) -> tuple[str | None, str, str]:
    """jvm-options/<key_3_11> for Cassandra 3.11 (None: not there); jvm-server-options/<key_later> for the others."""
    return (_J3 + key_3_11 if key_3_11 else None), _JS + key_later, _JS + key_later


_JVM_ROUTES: dict[str, tuple[str | None, str | None, str | None]] = {
    "heap_initial_size": _in_both("initial_heap_size", "initial_heap_size"),
    "heap_max_size": _in_both("max_heap_size", "max_heap_size"),
    "vm_enable_assertions": _in_both("enable_assertions", "enable_assertions"),
    "vm_enable_thread_priorities": _in_both("use_thread_priorities", "use_thread_priorities"),
    "vm_enable_non_root_thread_priority": (_J3 + "thread_priority_policy_42", None, None),
    "vm_heap_dump_on_out_of_memory_error": _in_both("heap_dump_on_out_of_memory_error", "heap_dump_on_out_of_memory_error"),
    "vm_per_thread_stack_size": _in_both("per_thread_stack_size", "per_thread_stack_size"),
    "vm_string_table_size": _in_both("string_table_size", "string_table_size"),
    "vm_always_pre_touch": _in_both("always_pre_touch", "always_pre_touch"),
    "vm_disable_biased_locking": _in_both("use_biased_locking", "use-biased-locking"),
    "vm_use_tlab": _in_both("use_tlb", "use_tlb"),
    "vm_resize_tlab": _in_both("resize_tlb", "resize_tlb"),
    "vm_disable_perf_shared_mem": _in_both("perf_disable_shared_mem", "perf_disable_shared_mem"),
    "vm_prefer_ipv4": _in_both("java_net_prefer_ipv4_stack", "java_net_prefer_ipv4_stack"),
    "vm_use_numa": _in_both(None, "use_numa"),
    "vm_print_heap_histogram_on_out_of_memory_error": _in_both(None, "print_heap_histogram_on_out_of_memory_error"),
    "vm_exit_on_out_of_memory_error": _in_both(None, "exit_on_out_of_memory_error"),
    "vm_crash_on_out_of_memory_error": _in_both(None, "crash_on_out_of_memory_error"),
    "vm_guaranteed_safepoint_interval_ms": _in_both(None, "guaranteed-safepoint-interval"),
    "netty_eventloop_maxpendingtasks": _in_both(None, "io_netty_eventloop_maxpendingtasks"),
    "netty_try_reflection_set_accessible": (None, _J11 + "io_netty_try_reflection_set_accessible", _J8 + "io_netty_try_reflection_set_accessible"),
    "nio_maxcachedbuffersize": _in_both(None, "jdk_nio_maxcachedbuffersize"),
    "nio_align_direct_memory": _in_both(None, "page-align-direct-memory"),
    "jdk_allow_attach_self": (None, _J11 + "jdk_attach_allow_attach_self", _J8 + "jdk_attach_allow_attach_self"),
    "cassandra_available_processors": _in_both("cassandra_available_processors", "cassandra_available_processors"),
    "cassandra_metrics_reporter_config_file": _in_both("cassandra_metrics_reporter_config_file", "cassandra_metrics_reporter_config_file"),
    "cassandra_ring_delay_ms": _in_both("cassandra_ring_delay_ms", "cassandra_ring_delay_ms"),
    "cassandra_triggers_directory": _in_both("cassandra_triggers_dir", "cassandra_triggers_dir"),
    "cassandra_write_survey": _in_both("cassandra_write_survey", "cassandra_write_survey"),
    "cassandra_disable_auth_caches_remote_configuration": _in_both("cassandra_disable_auth_caches_remote_configuration", "cassandra_disable_auth_caches_remote_configuration"),
    "cassandra_force_default_indexing_page_size": _in_both("cassandra_force_default_indexing_page_size", "cassandra_force_default_indexing_page_size"),
    "cassandra_force_3_0_protocol_version": (_J3 + "cassandra_force_3_0_protocol_version", None, None),
    "cassandra_expiration_date_overflow_policy": _in_both(None, "cassandra_expiration_date_overflow_policy"),
    "cassandra_max_hint_ttl_seconds": _in_both(None, "cassandra_max_hint_ttl"),
    "gc": (_J3 + "garbage_collector", _J11 + "garbage_collector", _J8 + "garbage_collector"),
    "gc_cms_heap_size_young_generation": (_J3 + "heap_size_young_generation", None, None),
    "gc_cms_survivor_ratio": (_J3 + "survivor_ratio", None, None),
    "gc_cms_max_tenuring_threshold": (_J3 + "max_tenuring_threshold", None, None),
    "gc_cms_initiating_occupancy_fraction": (_J3 + "cms_initiating_occupancy_fraction", None, None),
    "gc_cms_wait_duration_ms": (_J3 + "cms_wait_duration", None, None),
    "gc_g1_rset_updating_pause_time_percent": (_J3 + "g1r_set_updating_pause_time_percent", _J11 + "g1r_set_updating_pause_time_percent", _J8 + "g1r_set_updating_pause_time_percent"),
    "gc_g1_max_gc_pause_ms": (_J3 + "max_gc_pause_millis", _J11 + "max_gc_pause_millis", _J8 + "max_gc_pause_millis"),
    "gc_g1_initiating_heap_occupancy_percent": (_J3 + "initiating_heap_occupancy_percent", _J11 + "initiating_heap_occupancy_percent", _J8 + "initiating_heap_occupancy_percent"),
    "gc_g1_parallel_threads": (_J3 + "parallel_gc_threads", _J11 + "parallel_gc_threads", _J8 + "parallel_gc_threads"),
    "gc_g1_conc_threads": (_J3 + "conc_gc_threads", _J11 + "conc_gc_threads", _J8 + "conc_gc_threads"),
    "gc_print_details": (_J3 + "print_gc_details", None, None),
    "gc_print_date_stamps": (_J3 + "print_gc_date_stamps", None, None),
    "gc_print_heap": (_J3 + "print_heap_at_gc", None, None),
    "gc_print_tenuring_distribution": (_J3 + "print_tenuring_distribution", None, None),
    "gc_print_application_stopped_time": (_J3 + "print_gc_application_stopped_time", None, None),
    "gc_print_promotion_failure": (_J3 + "print_promotion_failure", None, None),
    "gc_print_flss_statistics": (_J3 + "print_flss_statistics", None, None),
    "gc_print_use_log_file": (_J3 + "log_gc", None, None),
    "gc_print_use_log_file_rotation": (_J3 + "use_gc_log_file_rotation", None, None),
    "gc_print_number_of_log_files": (_J3 + "number_of_gc_log_files", None, None),
    "gc_print_log_file_size": (_J3 + "gc_log_file_size", None, None),
    "jmx_port": _in_both("jmx-port", "jmx-port"),
    "jmx_connection_type": _in_both("jmx-connection-type", "jmx-connection-type"),
    "jmx_remote_ssl": _in_both("jmx-remote-ssl", "jmx-remote-ssl"),
    "jmx_remote_ssl_opts": _in_both("jmx-remote-ssl-opts", "jmx-remote-ssl-opts"),
    "jmx_remote_ssl_require_client_auth": _in_both(None, "jmx-remote-ssl-require-client-auth"),
    "debug_unlock_commercial_features": _in_both("unlock_commercial_features", "unlock_commercial_features"),
    "debug_enable_flight_recorder": _in_both("flight_recorder", "flight_recorder"),
    "debug_listen_remote_debuggers": _in_both("agent_lib_jdwp", "agent_lib_jdwp"),
    "debug_disable_contended_annotations": _in_both(None, "restrict-contended"),
    "debug_non_safepoints": _in_both(None, "debug-non-safepoints"),
    "debug_unlock_diagnostic_vm_options": _in_both(None, "unlock-diagnostic-vm-options"),
    "debug_log_compilation": _in_both(None, "log_compilation"),
    "debug_preserve_frame_pointer": _in_both(None, "preserve-frame-pointer"),
}
# List fields, the same for every server.
_JVM_LISTS = {"additionalOptions": "cassandra-env-sh/additional-jvm-opts",
              "additionalJvm11ServerOptions": "jvm11-server-options/additional-jvm-opts",
              "additionalJvm8ServerOptions": "jvm8-server-options/additional-jvm-opts",
              "additionalJvmServerOptions": "jvm-server-options/additional-jvm-opts"}
# Kubernetes quantities, written as integers (bytes).
_JVM_QUANTITIES = {"heap_initial_size", "heap_max_size", "vm_per_thread_stack_size", "vm_string_table_size",
                   "nio_maxcachedbuffersize", "gc_cms_heap_size_young_generation", "gc_print_log_file_size"}


def _config_json(config: dict, server_type: str, major: int) -> dict:
    """spec.config as cass-operator's config builder reads it."""
    out: dict = {}
    if config.get("cassandraYaml"):
        out["cassandra-yaml"] = copy.deepcopy(config["cassandraYaml"])
    if config.get("dseYaml"):
        out["dse-yaml"] = copy.deepcopy(config["dseYaml"])
    jvm = dict(config.get("jvmOptions") or {})
    # The operator's HandleDeprecatedJvmOptions: heapSize and heapNewGenSize fill the specific keys when unset
    # (the young generation size is CMS's, a Cassandra 3.11 option: dropped for later versions).
    if jvm.get("heapSize") is not None:
        jvm.setdefault("heap_initial_size", jvm["heapSize"])
        jvm.setdefault("heap_max_size", jvm["heapSize"])
    if jvm.get("heapNewGenSize") is not None:
        jvm.setdefault("gc_cms_heap_size_young_generation", jvm["heapNewGenSize"])
    column = 2 if server_type == "dse" else 0 if (server_type == "cassandra" and major == 3) else 1
    for name, value in jvm.items():
        target = _JVM_LISTS[name] if name in _JVM_LISTS else (_JVM_ROUTES.get(name) or (None, None, None))[column]
        if target is None or value is None or value == []:
            continue
        section, key = target.split("/")
        out.setdefault(section, {})[key] = (quantity_bytes(value) if name in _JVM_QUANTITIES
                                            else list(value) if name in _JVM_LISTS else value)
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


SYSTEM_LOGGER = "server-system-logger"
_VECTOR_RESOURCES = {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def _vector(options: dict) -> dict | None:
    """telemetry.vector when enabled, else None."""
    vector = (options.get("telemetry") or {}).get("vector") or {}
    return vector if vector.get("enabled") is True else None


def _system_logger_resources(options: dict, pod_template: dict) -> dict | None:
    """With Vector: its resources (or the operator's defaults); a server-system-logger container's own win."""
    logger: dict = next((c for c in pod_template["spec"]["containers"] if c.get("name") == SYSTEM_LOGGER), {})
    resources = logger.get("resources") or {}
    if resources.get("limits") or resources.get("requests"):
        return copy.deepcopy(resources)
    vector = _vector(options)
    return copy.deepcopy(vector.get("resources") or _VECTOR_RESOURCES) if vector is not None else None


def vector_config_name(cluster_name: str, dc_name: str) -> str:
    """The operator's `<cleaned-up clusterName>-<datacenterName>-cass-vector` (its vector.toml)."""
    return cleanup_for_kubernetes(f"{cleanup_for_kubernetes(cluster_name)}-{dc_name}-cass-vector")


METRICS_AGENT_VOLUME = "metrics-agent-config"
METRICS_AGENT_KEY = "metrics-collector.yaml"


def metrics_agent_config_name(cluster_name: str, dc_name: str) -> str:
    """The operator's `<clusterName>-<datacenterName>-metrics-agent-config`, cleaned up as a whole."""
    return cleanup_for_kubernetes(f"{cluster_name}-{dc_name}-metrics-agent-config")


def _metrics_agent_volume(config_map: str) -> dict:
    return {"name": METRICS_AGENT_VOLUME, "mountPath": "/opt/management-api/configs",
            "volumeSource": {"configMap": {"name": config_map,
                                           "items": [{"key": METRICS_AGENT_KEY, "path": METRICS_AGENT_KEY}]}}}


def _relabel(source: str, regex: str, replacement: str | None = None, action: str | None = None) -> dict:
    out = {"sourceLabels": [source], "regex": regex}
    if replacement is not None:
        out |= {"targetLabel": "should_drop", "replacement": replacement}
    if action:
        out["action"] = action
    return out


# The operator's default metrics agent configuration (pkg/telemetry/cassandra_agent): drop table
# metrics except the ones its dashboards use.
_KEPT_TABLE_METRICS = ("live_ss_table_count", "live_disk_space_used", "memtable.*", "all_memtables.*",
                       "compaction_bytes_written", "pending_compactions", "read_.*", "write_.*", "range.*",
                       "coordinator_.*", "dropped_mutations")
DEFAULT_AGENT_CONFIG = {"relabels": [
    _relabel("table", ".+", "true"),
    *(_relabel("__name__", f"org_apache_cassandra_metrics_table_{m}", "false") for m in _KEPT_TABLE_METRICS),
    _relabel("should_drop", "true", action="drop"),
]}


class _GoYamlDumper(yaml.SafeDumper):
    """YAML as sigs.k8s.io/yaml writes it: sorted keys, lists not indented, double quotes where quoting is needed."""

    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


@functools.lru_cache(maxsize=64)
def _agent_yaml(agent_json: str) -> str:
    """The agent configuration as the operator marshals it. Pure-Python YAML costs ~10 ms per
    document, and datacenters mostly share one configuration: made once per distinct one."""
    return yaml.dump(json.loads(agent_json), Dumper=_GoYamlDumper, sort_keys=True, default_flow_style=False,
                     width=float("inf"))


def metrics_agent_config_map(kc: dict, options: dict, dc_name: str, namespace: str) -> dict:
    """The ConfigMap the operator writes beside each datacenter for its metrics agent (MCAC or not):
    its default configuration merged with spec telemetry.cassandra, the cleaned-up-by labels and
    the cluster's common labels and annotations, and the operator's own resource hash."""
    meta = kc.get("metadata") or {}
    cassandra = (kc.get("spec") or {}).get("cassandra") or {}
    agent = merge(DEFAULT_AGENT_CONFIG, (options.get("telemetry") or {}).get("cassandra") or {})
    text = _agent_yaml(json.dumps(agent, sort_keys=True))
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": metrics_agent_config_name(cassandra.get("clusterName") or meta["name"], dc_name),
                       "namespace": namespace,
                       **_common_meta(kc, cleaned_up_by_labels(meta["name"], meta.get("namespace") or ""))},
          "data": {METRICS_AGENT_KEY: text}}
    # The operator hashes the ConfigMap before it has any annotation but the common ones (nil without them).
    common = ((cassandra.get("metadata") or {}).get("commonAnnotations"))
    cm["metadata"]["annotations"][HASH_ANNOTATION] = config_map_hash(cm, None if common is None else dict(common))
    return cm


def _spew_map(d: dict | None) -> str:
    """go-spew's `%#v` of a map[string]string's value: sorted keys, strings as they are; nil as <nil>."""
    return "<nil>" if d is None else "map[" + " ".join(f"{k}:{d[k]}" for k in sorted(d)) + "]"


def config_map_hash(cm: dict, annotations: dict | None) -> str:
    """The operator's `k8ssandra.io/resource-hash` of a ConfigMap it creates: base64(sha256) of go-spew's
    `%#v` of the Go *v1.ConfigMap (name, namespace, labels, `annotations`, data set; every other field
    of ObjectMeta as in k8s.io/apimachinery v0.35, the operator v1.32.5's). Checked against the
    operator's own annotation (tests/integration/test_fidelity.py); a ConfigMap is a small fixed
    struct, unlike a CassandraDatacenter (README, "Reconcile fidelity")."""
    meta = cm["metadata"]
    text = ("(*v1.ConfigMap){TypeMeta:(v1.TypeMeta){Kind:(string) APIVersion:(string)} ObjectMeta:(v1.ObjectMeta){"
            f"Name:(string){meta['name']} GenerateName:(string) Namespace:(string){meta['namespace']} "
            "SelfLink:(string) UID:(types.UID) ResourceVersion:(string) Generation:(int64)0 "
            "CreationTimestamp:(v1.Time){Time:(time.Time){wall:(uint64)0 ext:(int64)0 loc:(*time.Location)<nil>}} "
            "DeletionTimestamp:(*v1.Time)<nil> DeletionGracePeriodSeconds:(*int64)<nil> "
            f"Labels:(map[string]string){_spew_map(meta.get('labels'))} "
            f"Annotations:(map[string]string){_spew_map(annotations)} "
            "OwnerReferences:([]v1.OwnerReference)<nil> Finalizers:([]string)<nil> "
            "ManagedFields:([]v1.ManagedFieldsEntry)<nil>} "
            f"Immutable:(*bool)<nil> Data:(map[string]string){_spew_map(cm.get('data'))} "
            "BinaryData:(map[string][]uint8)<nil>}")
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# --- the superuser Secret -------------------------------------------------------

SUPERUSER_PASSWORD_CHARACTERS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUPERUSER_PASSWORD_LENGTH = 20


def superuser_secret_name(kc: dict) -> str | None:
    """spec.cassandra.superuserSecretRef.name, else `<cleaned-up clusterName>-superuser`; None with external secrets."""
    spec = kc.get("spec") or {}
    if spec.get("secretsProvider") == "external":
        return None
    cassandra = spec.get("cassandra") or {}
    return ((cassandra.get("superuserSecretRef") or {}).get("name")
            or f"{cleanup_for_kubernetes(cassandra.get('clusterName') or kc['metadata']['name'])}-superuser")


def _common_meta(kc: dict, labels: dict) -> dict:
    cluster_meta = (((kc.get("spec") or {}).get("cassandra") or {}).get("metadata")) or {}
    return {"labels": {**(cluster_meta.get("commonLabels") or {}), **labels},
            "annotations": dict(cluster_meta.get("commonAnnotations") or {})}


def superuser_secret(kc: dict, password: str) -> dict:
    """The cluster-wide superuser Secret the operator creates in the control plane (even with auth
    off: cass-operator would otherwise make one per datacenter): username = its name, owned by the
    K8ssandraCluster, labelled for replication to the datacenters' clusters."""
    meta = kc["metadata"]
    name = superuser_secret_name(kc)
    if name is None:
        raise ValueError("no superuser Secret with secretsProvider external: the caller checks first")
    labels = {"k8ssandra.io/replicated-by": "k8ssandracluster-controller",
              "k8ssandra.io/cluster-name": meta["name"], "k8ssandra.io/cluster-namespace": meta.get("namespace") or ""}
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": meta.get("namespace") or "", **_common_meta(kc, labels)},
           "data": {"username": _b64(name), "password": _b64(password)}}
    # The operator's replication stamps it (on the source and each copy): written here, nothing to add.
    out["metadata"]["annotations"][HASH_ANNOTATION] = secret_data_hash(out["data"])
    if meta.get("uid"):
        out["metadata"]["ownerReferences"] = [{"apiVersion": k8c.API_VERSION, "kind": k8c.KIND,
                                               "name": meta["name"], "uid": meta["uid"], "controller": True,
                                               "blockOwnerDeletion": True}]
    return out


def replicated_superuser_secret(source: dict, kc: dict, namespace: str) -> dict:
    """The copy of the control plane's superuser Secret in a datacenter's cluster, labelled as the
    operator's ReplicatedSecret controller labels its copies; same data, no owner."""
    meta = kc["metadata"]
    src = source["metadata"]
    labels = {**(src.get("labels") or {}),
              "k8ssandra.io/replicated-secret-name": f"{meta.get('namespace') or ''}.{meta['name']}"}
    annotations = {k: v for k, v in (src.get("annotations") or {}).items() if not k.startswith("cassandra.datastax.com/")}
    annotations[HASH_ANNOTATION] = secret_data_hash(source.get("data") or {})
    return {"apiVersion": "v1", "kind": "Secret", "type": source.get("type") or "Opaque",
            "metadata": {"name": src["name"], "namespace": namespace, "labels": labels, "annotations": annotations},
            "data": dict(source.get("data") or {})}


def secret_data_hash(data: dict[str, str]) -> str:
    """The operator's `k8ssandra.io/resource-hash` of a replicated Secret: base64(sha256) of go-spew's
    `%#v` of its data, a map[string][]byte (sorted keys, bytes in decimal). Reproducible, unlike the
    datacenter's: a Secret's data is one map, not a tree of Go structs."""
    raw = {k: base64.b64decode(v) for k, v in data.items()}
    text = "(map[string][]uint8)map[" + " ".join(
        f"{k}:[{' '.join(str(b) for b in raw[k])}]" for k in sorted(raw)) + "]"
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def cleaned_up_by_labels(kc_name: str, kc_namespace: str) -> dict:
    return {"k8ssandra.io/cleaned-up-by": "k8ssandracluster-controller",
            "k8ssandra.io/cluster-name": kc_name, "k8ssandra.io/cluster-namespace": kc_namespace}


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
    vector = _vector(options)
    if vector is not None:
        # Vector runs as cass-operator's system logger: after cassandra, as UpdateLoggerContainer appends it.
        logger = next((c for c in containers if c.get("name") == SYSTEM_LOGGER), None)
        if logger is None:
            logger = {"name": SYSTEM_LOGGER}
            containers.append(logger)
        if vector.get("image"):
            logger["image"] = vector["image"]
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


def datacenter_contexts(kc: dict) -> list[str]:
    """The k8sContext of each datacenter of a K8ssandraCluster ("" for the control plane), read
    straight from the spec: known before the datacenters are built."""
    dcs = ((kc.get("spec") or {}).get("cassandra") or {}).get("datacenters") or []
    return [str((dc or {}).get("k8sContext") or "") for dc in dcs if isinstance(dc, dict)]


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
            "config": _config_json(config, server_type, major),
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
        dc_name = template.get("datacenterName") or name
        volumes = dc_spec["storageConfig"].get("additionalVolumes") or []
        if _vector(options) is not None:
            # Vector's configuration (the operator writes that ConfigMap; k8sctl does not: README).
            volumes.append({"name": "vector-config", "mountPath": "/etc/vector",
                            "volumeSource": {"configMap": {"name": vector_config_name(cluster_name, dc_name)}}})
        # The metrics agent's configuration, mounted from the ConfigMap written beside the datacenter.
        volumes.append(_metrics_agent_volume(metrics_agent_config_name(cluster_name, dc_name)))
        dc_spec["storageConfig"]["additionalVolumes"] = volumes
        logger_resources = _system_logger_resources(options, dc_spec["podTemplateSpec"])
        if logger_resources:
            dc_spec["systemLoggerResources"] = logger_resources
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
        obj: dict[str, Any] = {
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
        agent = metrics_agent_config_map(kc, options, template.get("datacenterName") or name, obj["metadata"]["namespace"])
        out.append(DesiredDatacenter(idx, template.get("k8sContext") or "", obj["metadata"]["namespace"], name, obj,
                                     agent))
    if invalid:
        raise UsageError("; ".join(f"datacenter{'s' if len(dcs) > 1 else ''} {', '.join(dcs)}: {msg}"
                                   for msg, dcs in invalid.items()))
    return out
