"""The key channel's client side: one JSON request line to the data plane's unix socket, one JSON answer line.

The control plane's worker (key rotations) and the CLI speak it; the server is dataplane.keychannel, which also
documents the operations. Pure: no Django.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def request(path: Path, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(body).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))
