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

Each client has the control-plane client's timeout (`--request-timeout`) and is a
`RunClient`: once its cluster has proved unreachable, the rest of the run does not
wait for it again.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from k8sctl import kube
from k8sctl.apis import clientconfig as api
from k8sctl.errors import ClusterError, K8sctlError


class RunClient(kube.KubeClient):
    """The client of one data-plane cluster for one run: once that cluster has proved unreachable
    (no HTTP answer: refused, TLS failed, or no answer within the request timeout), every later
    request to it fails at once with the same cause instead of waiting again. A dead cluster then
    costs a run about one timeout, not one per request (a LIST per datacenter, the superuser
    copy's read, ...), and the other clusters' work goes on meanwhile.

    A connection reset alone is not proof: the server was reached, and an idempotent request was
    already retried by kube.py; only one that was retried and still reset counts. The error says
    whether anything was sent to be written to the cluster by this run: when not, nothing was
    written there."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._down: kube.Unreachable | None = None
        self._writes_sent = 0  # write requests (not dry runs) sent so far: each may have landed

    @property
    def unreachable(self) -> kube.Unreachable | None:
        """The failure that proved the cluster unreachable in this run, if any."""
        return self._down

    def preconnect(self, count: int = 1) -> kube.Unreachable | None:
        if self._down is None:
            self._down = super().preconnect(count)  # every connection timed out: no second wait
        return self._down

    def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None,
                content_type: str = "application/json", timeout: Any = None) -> Any:
        down = self._down
        if down is None:
            write = method != "GET" and not (query and query.get("dryRun"))
            if write:
                self._writes_sent += 1
            try:
                return super().request(method, path, body, query=query, content_type=content_type,
                                       timeout=timeout)
            except kube.Unreachable as e:
                # A reset of an idempotent request was already retried by kube.py (within its budget).
                if e.cause != kube.RESET_CAUSE or kube.is_idempotent(method, content_type):
                    self._down = down = e
                else:
                    raise
        # The same cause for every request of the run, each saying (again) what was written.
        written = "" if self._writes_sent else "; nothing was written to this cluster"
        raise kube.Unreachable(f"{down}{written}", down.cause) from None


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
        # The control plane's timeout (--request-timeout) and retry deadline bound every data plane's too.
        return RunClient(doc, context, timeout=self._local.timeout, deadline=self._local.deadline, trusted=False,
                         source=f"the kubeconfig of ClientConfig {cc['metadata']['name']}")

    def close(self) -> None:
        for c in self._remotes.values():
            c.close()
