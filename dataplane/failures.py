"""An unexpected exception inside the addon, described for the log and the audit record without a credential."""

from __future__ import annotations

import traceback
from pathlib import Path

from dataplane.credscan import Matcher

ERROR_LIMIT = 500


def describe(exc: BaseException, *, scan: Matcher | None = None) -> str:
    """`Type: message (at file:line in function)`, bounded, with any form of any credential of `scan` replaced."""
    try:
        return _describe(exc, scan=scan)
    except Exception:  # describing a failure must not fail in turn: the type alone says something
        return type(exc).__name__


def _describe(exc: BaseException, *, scan: Matcher | None) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    text = f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT] + where
    if scan:
        raw, _ = scan.redact(text.encode("utf-8", "surrogateescape"))
        text = raw.decode("utf-8", "replace")
    return text


def frames(exc: BaseException) -> str:
    """Where it happened, for the operator's log: file, line and code of each frame, not the message."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()
