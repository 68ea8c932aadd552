"""A bounded reachability probe, so offline machines fail fast instead of retrying for minutes."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse


def unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s host cannot be reached now, or None when a TCP connection opens.

    Never takes much longer than ``timeout``: the probe runs in a daemon thread because a
    stalled DNS lookup ignores the socket timeout.
    """
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}:{port} is unreachable ({type(exc).__name__})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return result[0] if result else f"{host}:{port} gave no answer in {timeout:g} s"
