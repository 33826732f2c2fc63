"""ClientCache: context name -> API client, built from the ClientConfigs of a namespace.

What k8ssandra-operator does at start-up: list ClientConfigs, read each one's
Secret (key `kubeconfig`), build one client for its context (`spec.contextName`,
else the ClientConfig's name; the last one wins on a duplicate) and keep it for
the whole run. The reconcile code asks this cache by context name and nothing else.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.clientconfigs import CLIENTCONFIG_GROUP, CLIENTCONFIG_VERSIONS
from k8sctl.errors import ClusterError, K8sctlError


@dataclass(frozen=True)
class BrokenClientConfig:
    name: str
    context: str
    reason: str


class ClientCache:
    """One API client per context, created once and reused for the whole run."""

    def __init__(self, local: kube.KubeClient, remotes: dict[str, kube.KubeClient] | None = None,
                 broken: list[BrokenClientConfig] | None = None):
        self._local = local
        self._remotes = dict(remotes or {})
        self.broken = list(broken or [])

    @classmethod
    def from_clientconfigs(cls, local: kube.KubeClient, namespace: str) -> ClientCache:
        items = _list_clientconfigs(local, namespace)
        remotes: dict[str, kube.KubeClient] = {}
        broken: list[BrokenClientConfig] = []
        secrets: dict[str, dict | None] = {}
        for cc in items:
            name = cc["metadata"]["name"]
            spec = cc.get("spec") or {}
            context = spec.get("contextName") or name
            secret_name = (spec.get("kubeConfigSecret") or {}).get("name") or ""
            try:
                if not secret_name:
                    raise ValueError("spec.kubeConfigSecret.name is empty")
                if secret_name not in secrets:
                    secrets[secret_name] = local.get_or_none(kube.SECRET, secret_name, namespace)
                secret = secrets[secret_name]
                if secret is None:
                    raise ValueError(f"Secret {namespace}/{secret_name} not found")
                raw = (secret.get("data") or {}).get("kubeconfig")
                if not raw:
                    raise ValueError(f"Secret {namespace}/{secret_name} has no 'kubeconfig' key")
                doc = yaml.safe_load(base64.b64decode(raw))
                if not isinstance(doc, dict):
                    raise ValueError(f"Secret {namespace}/{secret_name} does not hold a kubeconfig")
                kc.select_context(doc, context, f"the kubeconfig in Secret {secret_name}")
                client = kube.KubeClient(doc, context)
            except (ValueError, yaml.YAMLError, K8sctlError) as e:
                broken.append(BrokenClientConfig(name, context, " ".join(str(e).split())))
                continue
            old = remotes.pop(context, None)
            if old is not None:
                old.close()
            remotes[context] = client
        return cls(local, remotes, broken)

    def local(self) -> kube.KubeClient:
        return self._local

    def remote(self, context: str) -> kube.KubeClient:
        """The client of `context`; "" is the control plane itself."""
        if not context:
            return self._local
        try:
            return self._remotes[context]
        except KeyError:
            raise ClusterError(f"No known client for context-name {context}") from None

    def contexts(self) -> list[str]:
        return sorted(self._remotes)

    def close(self) -> None:
        for c in self._remotes.values():
            c.close()


def _list_clientconfigs(local: kube.KubeClient, namespace: str) -> list[dict]:
    for version in CLIENTCONFIG_VERSIONS:
        try:
            return local.list(kube.clientconfig_resource(version), namespace)
        except kube.NotFound:
            continue  # this version is not served; try the older one
    raise ClusterError(f"the ClientConfig CRD ({CLIENTCONFIG_GROUP}) is not installed in {local.context}: "
                       f"is k8ssandra-operator installed there?")
