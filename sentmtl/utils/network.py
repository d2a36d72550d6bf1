"""Failing fast without a network: offline flags and a short reachability probe (no long client retry loops)."""

import os
import socket

_FALSE = ("", "0", "false", "no", "off")


def offline_flag(*names: str) -> str | None:
    """The first of these environment variables set to a true value (e.g. `HF_HUB_OFFLINE=1`), or None."""
    return next((name for name in names if os.environ.get(name, "").strip().lower() not in _FALSE), None)


def unreachable(host: str, port: int = 443, timeout: float = 5.0) -> str | None:
    """Why `host:port` cannot be reached within `timeout` seconds, or None when it can."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return str(err)
    return None
