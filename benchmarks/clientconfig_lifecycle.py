#!/usr/bin/env python3
"""`clientconfig list --check` over 20 ClientConfigs vs checking them one by one; rotate's window.

A fresh sandbox of 3 clusters (0: control plane, 1 and 2: data planes). 20 ClientConfigs: 18
healthy (9 per data plane), 1 whose token is rejected (401), and 1 whose server accepts TCP and
never answers (a loopback listener: the per-cluster --timeout is what ends it). Every API server
is reached through a loopback relay that delays each packet by RTT/2 each way (--rtt, default
100 ms, multi-region), so round trips cost what they cost between regions.

Figures (printed, never asserted): wall time and requests of one `list --check` against `verify
NAME` run for each ClientConfig in turn; for `rotate` (token Secret), the seconds from minting
the new token until the old one is rejected (401), i.e. the window in which both are valid.
Usage: python benchmarks/clientconfig_lifecycle.py [--rtt 0.1] [--timeout 3s] [--rotations 3]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from k8sctl import kube
from k8sctl import kubeconfig as kc
from k8sctl.apis import clientconfig as api
from k8sctl.cli import app
from k8sctl.clientconfigs import clientconfig_manifest
from k8sctl_sandbox import binaries, cluster, crds_and_identity

NS = crds_and_identity.OPERATOR_NAMESPACE


class Relay:
    """Loopback TCP relays that delay every chunk by `delay` seconds in each direction."""

    def __init__(self, delay: float):
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def add(self, port: int) -> int:
        return asyncio.run_coroutine_threadsafe(self._listen(port), self.loop).result()

    async def _listen(self, upstream_port: int) -> int:
        async def handle(reader, writer):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _pipe(self, reader, writer):
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((0, None))
        try:
            await sender
        except (ConnectionError, OSError):
            pass


def black_hole() -> tuple[socket.socket, int]:
    """A loopback port that accepts connections and never answers (a hung API server)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, s.getsockname()[1]


def via(doc: dict, relay_port: int) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay_port}"
    return doc


def renamed(doc: dict, context: str) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["contexts"][0]["name"] = doc["current-context"] = context
    return doc


def put(admin: kube.KubeClient, name: str, doc: dict) -> None:
    admin.apply(kube.SECRET, {"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": f"{name}-config", "namespace": NS,
                                           "labels": {"app.kubernetes.io/managed-by": "k8sctl"}},
                              "data": {"kubeconfig": base64.b64encode(kc.dump(doc).encode()).decode()}}, force=True)
    admin.apply(api.resource("v1beta1"), clientconfig_manifest(name, NS, "v1beta1", name, f"{name}-config"))


def invoke(argv: list[str]) -> tuple[float, int, object]:
    kube.STATS.reset()
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, argv)
    return time.perf_counter() - t0, kube.STATS.requests, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt", type=float, default=0.1, help="round-trip time added to every API server (seconds)")
    ap.add_argument("--timeout", default="3s", help="per-cluster check timeout")
    ap.add_argument("--rotations", type=int, default=3)
    args = ap.parse_args()
    bins = binaries.ensure(assets_dir=os.environ.get("KUBEBUILDER_ASSETS") or None)
    relay = Relay(args.rtt / 2)
    hole, hole_port = black_hole()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sb"
        state = cluster.up(d, 3, bins)
        try:
            crds_and_identity.install_all(state)
            admins = [kube.KubeClient(kc.read_file(Path(c.kubeconfig)), c.context, stats=kube.RequestStats())
                      for c in state.clusters]
            relayed = {i: relay.add(int(c.server.rsplit(":", 1)[1])) for i, c in enumerate(state.clusters)}
            # The control plane through the relay too.
            control = via(kc.read_file(Path(state.clusters[0].kubeconfig)), relayed[0])
            control_path = Path(tmp) / "control-plane.yaml"
            kc.write_private(control_path, kc.dump(control))
            base = {}
            for i in (1, 2):
                c = state.clusters[i]
                r = CliRunner().invoke(app, ["create-clientconfig", "--src-kubeconfig", c.kubeconfig,
                                             "--in-cluster-kubeconfig", c.in_cluster_kubeconfig, "--dest-kubeconfig",
                                             state.clusters[0].kubeconfig, "--name", f"seed-{i}", "-o", "json"])
                assert r.exit_code == 0, r.output
                secret = admins[0].get(kube.SECRET, f"seed-{i}-config", NS)
                base[i] = via(api.parse_stored_kubeconfig(secret, "seed", c.context), relayed[i])
                admins[0].delete(api.resource("v1beta1"), f"seed-{i}", NS)
                admins[0].delete(kube.SECRET, f"seed-{i}-config", NS)
            names = []
            for n in range(18):
                name = f"dc-{n:02d}"
                put(admins[0], name, renamed(base[1 + n % 2], name))
                names.append(name)
            rejected = renamed(base[1], "rejected")
            rejected["users"][0]["user"]["token"] = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"  # not a token of it
            put(admins[0], "rejected", rejected)
            hung = renamed(base[1], "hung")
            hung["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{hole_port}"
            put(admins[0], "hung", hung)
            names += ["rejected", "hung"]

            conn = ["--kubeconfig", str(control_path), "-n", NS]
            all_wall, all_reqs, r = invoke(["clientconfig", "list", "--check", "--timeout", args.timeout,
                                            "-o", "json", *conn])
            listed = json.loads(r.stdout)["clientConfigs"]
            failed = [x["name"] for x in listed if not x["health"]["ok"]]
            slowest = max(x["health"]["seconds"] for x in listed if x["health"]["ok"])
            one_walls, one_reqs = [], 0
            for name in names:
                wall, reqs, r = invoke(["clientconfig", "verify", name, "--timeout", args.timeout, "-o", "json",
                                        *conn])
                one_walls.append(wall)
                one_reqs += reqs
            print(f"20 ClientConfigs (18 healthy, 2 broken: {', '.join(sorted(failed))}), RTT {args.rtt * 1000:.0f} ms, "
                  f"per-cluster timeout {args.timeout}")
            print(f"{'':<34}{'wall s':>10}{'requests':>10}")
            print(f"{'list --check (all at once)':<34}{all_wall:>10.2f}{all_reqs:>10}")
            print(f"{'verify NAME, one by one (sum)':<34}{sum(one_walls):>10.2f}{one_reqs:>10}")
            print(f"{'  of which the hung cluster':<34}{one_walls[-1]:>10.2f}")
            print(f"in list --check: slowest healthy check {slowest:.2f}s, hung check "
                  f"{next(x['health']['seconds'] for x in listed if x['name'] == 'hung'):.2f}s, load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

            # Rotate's window: one healthy ClientConfig, directly (no relay), several times.
            c = state.clusters[1]
            r = CliRunner().invoke(app, ["create-clientconfig", "--src-kubeconfig", c.kubeconfig,
                                         "--in-cluster-kubeconfig", c.in_cluster_kubeconfig, "--dest-kubeconfig",
                                         state.clusters[0].kubeconfig, "--name", "rot", "-o", "json"])
            assert r.exit_code == 0, r.output
            windows, walls, deleted = [], [], []
            for _ in range(args.rotations):
                wall, reqs, r = invoke(["clientconfig", "rotate", "rot", "-o", "json", "--kubeconfig",
                                        state.clusters[0].kubeconfig, "-n", NS])
                rot = json.loads(r.stdout)["rotations"][0]
                assert rot["action"] == "rotated" and rot["revoked"], r.output
                windows.append(rot["bothValidSeconds"])
                deleted.append(rot["revokedAfterSeconds"])
                walls.append(wall)
            print(f"rotate (token Secret, loopback, no relay), {args.rotations} runs:")
            print(f"  new token minted -> old token Secret deleted: {', '.join(f'{w:.2f}s' for w in deleted)}")
            print(f"  new token minted -> old token rejected (401), both valid: "
                  f"{', '.join(f'{w:.2f}s' for w in windows)} (kube-apiserver caches token authentications 10 s)")
            print(f"  rotate wall: {', '.join(f'{w:.2f}s' for w in walls)}")
            for a in admins:
                a.close()
        finally:
            hole.close()
            cluster.down(d)


if __name__ == "__main__":
    main()
