"""A network in front of the sandbox's API servers: toxiproxy (github.com/Shopify/toxiproxy/v2).

`sandbox up --rtt 100ms` (or `--proxy`, no added latency) starts one toxiproxy server on
127.0.0.1 with one TCP proxy per cluster (name = the cluster's context) in front of its API
server; the kubeconfigs the sandbox writes point at the proxies. A round-trip time is two
latency toxics of half of it, one per direction. TLS goes through untouched: the serving
certificates cover 127.0.0.1, which is where the proxies listen. Tests and benchmarks add and
remove faults through `Api` (toxiproxy's HTTP API, loopback only).

The server is built once from the Go module proxy (`gomod/toxiproxy/`) into
`<cache>/toxiproxy/toxiproxy-<version>/toxiproxy-server`, like the control plane
(`binaries.build_once`: a lock, a temporary folder, a rename).
"""
from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k8sctl.errors import SandboxError
from k8sctl_sandbox import binaries, processes

MODULE = "github.com/Shopify/toxiproxy/v2"
VERSION = binaries._required_version(binaries.GOMOD_DIR / "toxiproxy", MODULE)
PROCESS = "toxiproxy"
BINARY = "toxiproxy-server"
HOST = "127.0.0.1"  # the only address the API and the proxies listen on


def cache_root() -> Path:
    return binaries.default_cache_root().parent / "toxiproxy"


def cached_binary(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"toxiproxy-{VERSION}" / BINARY


def ensure(progress: Callable[[str], None] = lambda s: None, root: Path | None = None) -> Path:
    """The toxiproxy server binary: cached, or built once (a lock serializes parallel callers)."""
    target = cached_binary(root)
    if binaries._executable(target):
        return target
    if shutil.which("go") is None:
        raise SandboxError("Go is not installed: install Go >= 1.26 to build toxiproxy for --rtt/--proxy")

    def go_build(work: Path, out: Path, log: Path) -> None:
        progress(f"first run: building toxiproxy {VERSION} from Go modules into {target.parent} "
                 f"(under a minute, once); log: {log}")
        progress(f"go build toxiproxy-server {VERSION} (step 1 of 1)")
        binaries._go_build("toxiproxy", [f"{MODULE}/cmd/server"], str(out / BINARY), work,
                           ["-ldflags", "-s -w"], log, progress)
        if not binaries._executable(out / BINARY):
            raise SandboxError(f"go build did not produce {BINARY}; read {log}")

    if binaries.build_once(target.parent, lambda d: binaries._executable(d / BINARY), go_build, progress,
                           waiting=f"waiting for another k8sctl that is building toxiproxy into {target.parent}"):
        progress(f"built toxiproxy-server ({binaries.disk_usage(target) // 2**20} MB) into {target.parent}")
    return target


class Api:
    """toxiproxy's HTTP API on 127.0.0.1:`port`: proxies, and toxics (faults) on them."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.port = port
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            raise SandboxError(f"toxiproxy at {HOST}:{self.port} does not answer ({e}); is the sandbox running?") from None
        finally:
            conn.close()
        if resp.status >= 300:
            raise SandboxError(f"toxiproxy {method} {path}: {resp.status} {data.decode(errors='replace').strip()}")
        return json.loads(data) if data.strip() else None

    def version(self) -> str:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
        try:
            conn.request("GET", "/version")
            return conn.getresponse().read().decode().strip()
        finally:
            conn.close()

    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies")

    def create_proxy(self, name: str, listen_port: int, upstream_port: int) -> None:
        self._call("POST", "/proxies", {"name": name, "listen": f"{HOST}:{listen_port}",
                                        "upstream": f"{HOST}:{upstream_port}", "enabled": True})

    def set_enabled(self, name: str, enabled: bool) -> None:
        """A disabled proxy refuses new connections and closes open ones (a cluster gone from the network)."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, name: str, kind: str, attributes: dict[str, Any],
                  stream: str = "downstream", toxicity: float = 1.0) -> None:
        self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": kind, "stream": stream,
                                                        "toxicity": toxicity, "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{proxy}/toxics")


RTT_TOXICS = ("rtt-upstream", "rtt-downstream")


def set_rtt(api: Api, proxy: str, rtt_ms: float) -> None:
    """Half of `rtt_ms` each way (0: none), replacing any earlier round-trip toxics."""
    present = {t["name"] for t in api.toxics(proxy)}
    for name in RTT_TOXICS:
        if name in present:
            api.remove_toxic(proxy, name)
    if rtt_ms > 0:
        half = int(round(rtt_ms / 2))
        for name, stream in zip(RTT_TOXICS, ("upstream", "downstream")):
            api.add_toxic(proxy, name, "latency", {"latency": half, "jitter": 0}, stream=stream)


def start(run_dir: Path, log_dir: Path, upstreams: dict[str, int], rtt_ms: float, timeout: float,
          binary: Path) -> tuple[int, dict[str, int]]:
    """Start the server and one proxy per (name -> upstream port); return its API port and the
    proxies' listening ports. The caller's cleanup stops it with the sandbox's other processes."""
    api_port = processes.free_port()
    proc = processes.start(PROCESS, [str(binary), "-host", HOST, "-port", str(api_port)], run_dir, log_dir,
                           {"GOMAXPROCS": "2"})
    api = Api(api_port)
    processes.wait_ready("toxiproxy", lambda: api.version() is not None, [proc], timeout, interval=0.05)
    listening = {}
    for name, upstream in upstreams.items():
        port = processes.free_port()
        try:
            api.create_proxy(name, port, upstream)
        except SandboxError as e:
            if "address already in use" in str(e):
                raise SandboxError(f"toxiproxy could not listen on {HOST}:{port} for {name}: taken by another "
                                   f"process (a port race: run again)") from None
            raise
        set_rtt(api, name, rtt_ms)
        listening[name] = port
    return api_port, listening


def describe(api_port: int) -> list[dict[str, Any]]:
    """Each proxy: name, listen, upstream, enabled, its toxics (type, stream, attributes)."""
    rows = []
    for name, p in sorted(Api(api_port, timeout=2).proxies().items()):
        rows.append({"name": name, "listen": p["listen"], "upstream": p["upstream"], "enabled": p["enabled"],
                     "toxics": [{"name": t["name"], "type": t["type"], "stream": t["stream"],
                                 "attributes": t["attributes"]} for t in p.get("toxics", [])]})
    return rows
