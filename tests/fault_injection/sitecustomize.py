"""Test-only: makes the proxy's auth stripping raise for a request carrying `X-Aileron-Test-Fault`.

On PYTHONPATH of a test's `aileron service` only (tests/test_proxy_internal_errors.py), to force an unexpected
exception inside the real addon; it patches the step before dataplane.proxy imports it.
"""

from __future__ import annotations

from typing import Any

import dataplane.inject

_strip_auth = dataplane.inject.strip_auth


def _faulty_strip_auth(request: Any, connector: Any, present: set[bytes]) -> None:
    if b"x-aileron-test-fault" in present:
        raise KeyError(b"x-api-key")
    _strip_auth(request, connector, present)


dataplane.inject.strip_auth = _faulty_strip_auth
