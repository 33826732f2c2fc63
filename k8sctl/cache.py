"""ClientCache: context name -> API client, built from the ClientConfigs of a namespace.

What k8ssandra-operator does at start-up: list ClientConfigs, read each one's
Secret (key `kubeconfig`) and build one client for its context
(`spec.contextName`, else the ClientConfig's name), kept for the whole run.
Two differences, both deliberate:
- clients are built only for the contexts a run asks for (`require`, or the
  first `remote`), so an unrelated broken or hostile ClientConfig cannot affect
  it, and no Secret is read that the run does not need;
- a stored kubeconfig is untrusted data: it is never given to the kubernetes
  package's loader, and one that asks for more than inline credentials is broken;
- two ClientConfigs naming the same context are a conflict and neither is used
  (the operator silently keeps the last one).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from k8sctl import kube
from k8sctl.apis import clientconfig as api
from k8sctl.errors import ClusterError, K8sctlError


@dataclass(frozen=True)
class UnusableClientConfig:
    name: str
    context: str
    reason: str


class ClientCache:
    """One API client per context, created on first need and reused for the whole run."""

    def __init__(self, local: kube.KubeClient, clientconfigs: list[dict] | None = None,
                 namespace: str = "", remotes: dict[str, kube.KubeClient] | None = None):
        self._local = local
        self._namespace = namespace
        self._remotes = dict(remotes or {})
        self._lock = threading.Lock()
        self._failed: dict[str, UnusableClientConfig] = {}
        self._by_context: dict[str, dict] = {}
        # context -> names of the ClientConfigs that claim it, where more than one does
        self._conflicts: dict[str, list[str]] = {}
        for cc in clientconfigs or []:
            context, name = api.context_of(cc), cc["metadata"]["name"]
            if context in self._conflicts:
                self._conflicts[context].append(name)
            elif context in self._by_context:
                self._conflicts[context] = [self._by_context.pop(context)["metadata"]["name"], name]
            else:
                self._by_context[context] = cc

    @classmethod
    def from_clientconfigs(cls, local: kube.KubeClient, namespace: str) -> ClientCache:
        """List the ClientConfigs of `namespace` (one request); no Secret is read yet."""
        return cls(local, api.list_clientconfigs(local, namespace), namespace)

    @property
    def broken(self) -> list[UnusableClientConfig]:
        """ClientConfigs found unusable so far: conflicts, and those a run needed and could not use."""
        with self._lock:
            out = list(self._failed.values())
        for context, names in self._conflicts.items():
            out += [UnusableClientConfig(name, context, self._conflict_reason(context, name)) for name in names]
        return out

    def _conflict_reason(self, context: str, name: str) -> str:
        others = ", ".join(n for n in self._conflicts[context] if n != name)
        return (f"its context {context!r} is also named by ClientConfig {others}; neither is used: give each a "
                f"distinct spec.contextName")

    def local(self) -> kube.KubeClient:
        return self._local

    def contexts(self) -> list[str]:
        """Contexts with exactly one ClientConfig (their clients may not be built yet)."""
        return sorted(set(self._by_context) | set(self._remotes))

    def remote(self, context: str) -> kube.KubeClient:
        """The client of `context`; "" is the control plane itself."""
        if not context:
            return self._local
        with self._lock:
            client = self._remotes.get(context)
        if client is not None:
            return client
        if context in self._failed or context not in self._by_context:
            raise ClusterError(self._no_client(context))
        try:
            client = self._build(self._by_context[context], context)
        except K8sctlError as e:
            with self._lock:
                self._failed[context] = UnusableClientConfig(self._by_context[context]["metadata"]["name"], context,
                                                           " ".join(str(e).split()))
            raise ClusterError(self._no_client(context)) from None
        with self._lock:
            self._remotes.setdefault(context, client)
            return self._remotes[context]

    def require(self, contexts: Iterable[str], connections: int = 0) -> None:
        """Build the clients of `contexts` at once (their Secrets read in parallel), each with
        `connections` connections opened ahead; fail before anything is written when one has no
        usable ClientConfig."""
        needed = sorted({c for c in contexts if c})
        errors: dict[str, str] = {}

        def build(context: str) -> None:
            try:
                client = self.remote(context)
            except ClusterError as e:
                errors[context] = str(e)
                return
            if connections:
                client.preconnect(connections)

        if len(needed) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(needed))) as pool:
                list(pool.map(build, needed))
        else:
            for c in needed:
                build(c)
        if errors:
            raise ClusterError(errors[min(errors)])

    def _no_client(self, context: str) -> str:
        broken = self._failed.get(context)
        if broken:
            why = f" (ClientConfig {broken.name} is broken: {broken.reason})"
        elif context in self._conflicts:
            why = f" (ClientConfigs {', '.join(self._conflicts[context])} both name it: give each a distinct spec.contextName)"
        else:
            why = ""
        known = ", ".join(c for c in self.contexts() if c not in self._failed) or "none"
        return (f"No known client for context-name {context}{why}. Known contexts: {known} "
                f"(and \"\" for the control plane)")

    def _build(self, cc: dict, context: str) -> kube.KubeClient:
        doc = api.read_stored_kubeconfig(self._local, cc, self._namespace or cc["metadata"].get("namespace", ""))
        return kube.KubeClient(doc, context, trusted=False, source=f"the kubeconfig of ClientConfig "
                                                                    f"{cc['metadata']['name']}")

    def close(self) -> None:
        for c in self._remotes.values():
            c.close()
