"""A TCP relay per cluster that holds each new connection one round trip before relaying: the
TCP handshake (SYN, SYN-ACK) that toxiproxy does not delay. In front of toxiproxy's proxies,
a new connection then costs TCP + TLS, two round trips, as on a real network; data keeps
toxiproxy's delay. For the benchmark only (printed figures, never asserted).

The client's connect() returns at once (the kernel accepts for the relay), but its first bytes
(the TLS ClientHello) reach the server a round trip later, so its first answer comes two round
trips after it connected: the same wall time as a real handshake.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future


class HandshakeDelay:
    """`upstreams`: name -> port on 127.0.0.1. `ports[name]` is where its relay listens."""

    def __init__(self, upstreams: dict[str, int], rtt_ms: float):
        self.rtt = rtt_ms / 1000
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="handshake-delay", daemon=True)
        self._thread.start()
        started: Future = asyncio.run_coroutine_threadsafe(self._start(upstreams), self._loop)
        self._servers = started.result(timeout=10)

    async def _start(self, upstreams: dict[str, int]) -> list:
        servers = []
        for name, port in upstreams.items():
            server = await asyncio.start_server(lambda r, w, p=port: self._relay(r, w, p), "127.0.0.1", 0)
            self.ports[name] = server.sockets[0].getsockname()[1]
            servers.append(server)
        return servers

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        await asyncio.sleep(self.rtt)  # SYN out, SYN-ACK back
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
