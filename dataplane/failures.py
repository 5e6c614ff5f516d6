"""An unexpected exception inside the addon, described for the log and the audit record without a credential."""

from __future__ import annotations

import traceback
from pathlib import Path

from dataplane.redaction import Redactor, secret_forms

ERROR_LIMIT = 500


def describe(exc: BaseException, *, secret: bytes | None = None, scheme: str = "") -> str:
    """`Type: message (at file:line in function)`, bounded, with any form of `secret` replaced."""
    try:
        return _describe(exc, secret=secret, scheme=scheme)
    except Exception:  # describing a failure must not fail in turn: the type alone says something
        return type(exc).__name__


def _describe(exc: BaseException, *, secret: bytes | None, scheme: str) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    text = f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT] + where
    if secret:
        raw = text.encode("utf-8", "surrogateescape")
        for form in sorted(secret_forms(secret, scheme), key=len, reverse=True):
            raw = raw.replace(form, Redactor.MARK)
        text = raw.decode("utf-8", "replace")
    return text


def frames(exc: BaseException) -> str:
    """Where it happened, for the operator's log: file, line and code of each frame, not the message."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()
