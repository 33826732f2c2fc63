"""Faults on a sandbox started with a network (`up --proxy` or `--rtt`): toxiproxy's HTTP API,
per cluster (a proxy is named after its cluster's context). Every fault added through `Faults`
is removed when its `with` block ends, so a failing test leaves the network as it found it."""
from __future__ import annotations

from k8sctl_sandbox import cluster, toxiproxy


class Faults:
    def __init__(self, state: cluster.SandboxState):
        if state.toxiproxy_port is None:
            raise ValueError(f"the sandbox in {state.directory} has no proxies: start it with --proxy or --rtt")
        self.api = toxiproxy.Api(state.toxiproxy_port)
        self._added: list[tuple[str, str]] = []
        self._disabled: list[str] = []

    def __enter__(self) -> Faults:
        return self

    def __exit__(self, *exc) -> None:
        self.clear()

    def _add(self, context: str, name: str, kind: str, attributes: dict, stream: str) -> str:
        self.api.add_toxic(context, name, kind, attributes, stream=stream)
        self._added.append((context, name))
        return name

    def reset_peer(self, context: str, after_ms: int = 0, stream: str = "upstream") -> str:
        """Every connection to `context` is reset (TCP RST) `after_ms` after it sends data."""
        return self._add(context, f"reset-{stream}", "reset_peer", {"timeout": after_ms}, stream)

    def timeout(self, context: str, after_ms: int = 0, stream: str = "upstream") -> str:
        """Data to `context` stops; the connection is closed after `after_ms` (0: never)."""
        return self._add(context, f"timeout-{stream}", "timeout", {"timeout": after_ms}, stream)

    def latency(self, context: str, ms: int, stream: str = "downstream") -> str:
        """`ms` more on every chunk of one direction (on top of the sandbox's round-trip time)."""
        return self._add(context, f"latency-{stream}", "latency", {"latency": ms, "jitter": 0}, stream)

    def bandwidth(self, context: str, kb_per_s: int, stream: str = "downstream") -> str:
        return self._add(context, f"bandwidth-{stream}", "bandwidth", {"rate": kb_per_s}, stream)

    def remove(self, context: str, name: str) -> None:
        self.api.remove_toxic(context, name)
        self._added.remove((context, name))

    def disconnect(self, context: str) -> None:
        """The proxy closes its connections and refuses new ones: the cluster is off the network."""
        self.api.set_enabled(context, False)
        self._disabled.append(context)

    def clear(self) -> None:
        for context, name in reversed(self._added):
            try:
                self.api.remove_toxic(context, name)
            except Exception:  # already gone: removed by the test itself
                pass
        self._added.clear()
        for context in self._disabled:
            self.api.set_enabled(context, True)
        self._disabled.clear()
