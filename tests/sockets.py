"""Loopback servers for timeout and refusal tests, without a cluster."""
from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


class SilentServer:
    """A listener that accepts TCP connections (the kernel's backlog completes the handshake) and
    never answers: a server that hangs, for the connect or read timeout that follows."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._accepted = 0

    def url(self, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def attempts(self) -> int:
        """Connections made to it so far (those waiting in the backlog are taken and counted)."""
        self._sock.setblocking(False)
        try:
            while self._sock.accept():
                self._accepted += 1
        except BlockingIOError:
            pass
        return self._accepted


@contextlib.contextmanager
def silent_server() -> Iterator[SilentServer]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield SilentServer(sock)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed again): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
