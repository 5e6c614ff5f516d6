"""Step 6, the response: the injected credential never reaches the agent, in headers or in a streamed body."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

from mitmproxy import http


class Redactor:
    """Replaces the credential in a streamed body, also across chunk boundaries, in each form it may take."""

    MARK = b"[redacted by aileron]"

    def __init__(self, *needles: bytes, on_chunk: Any = None) -> None:
        # Longest first, so a form that contains another (URL-encoded, say) is replaced whole.
        self.needles = sorted({n for n in needles if len(n) >= 4}, key=len, reverse=True)
        self.longest = max((len(n) for n in self.needles), default=0)
        self.carry = b""
        self.on_chunk = on_chunk
        self.count = 0

    def redact(self, data: bytes) -> bytes:
        for needle in self.needles:
            if needle in data:
                self.count += data.count(needle)
                data = data.replace(needle, self.MARK)
        return data

    def __call__(self, chunk: bytes) -> bytes:
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        data = self.redact(self.carry + chunk)
        self.carry = b""
        if chunk:
            # Hold back the longest tail that could begin a needle; release it with the next chunk or the end.
            for n in range(min(self.longest - 1, len(data)), 0, -1):
                tail = data[-n:]
                if any(needle.startswith(tail) for needle in self.needles):
                    self.carry, data = tail, data[:-n]
                    break
        return data


def secret_forms(secret: bytes, scheme: str) -> tuple[bytes, ...]:
    """The forms an upstream might echo the injected credential in."""
    forms = [secret, urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode()]
    if scheme == "basic":
        forms.append(base64.b64encode(secret))
    return tuple(forms)


def redact_headers(flow: http.HTTPFlow, response: http.Response, redactor: Redactor) -> None:
    """Redact the response's headers; a body that will be redacted is re-framed with chunks."""
    fields = [(name, redactor.redact(value)) for name, value in response.headers.fields]
    if fields != list(response.headers.fields):
        response.headers.fields = tuple(fields)
    has_body = flow.request.method != "HEAD" and response.status_code not in (204, 304)
    if has_body and "content-length" in response.headers:
        # Redaction may change the body's length: frame it with chunks instead.
        del response.headers["content-length"]
        response.headers["transfer-encoding"] = "chunked"
