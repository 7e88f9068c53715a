"""A peer that accepts connections and never answers: a hung webhook receiver or channel API."""

from __future__ import annotations

import contextlib
import socket
import threading


class Hung:
    """Accepts connections, reads, never answers: a webhook receiver or channel API that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which holds the port
        self.sock.close()
        for conn in self.connections:
            conn.close()
