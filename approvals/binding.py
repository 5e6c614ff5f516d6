"""What a grant is bound to: the SHA-256 of one exact request. Pure (no Django): the data plane may use it too.

A grant applies to a request only if every part below is byte-identical: the organization, the session, the
method, the host, the normalized path, the query (its pairs sorted, so their order alone does not matter), the
SHA-256 of the body and the credential that would be injected. Change one argument and the hash changes: the
request needs an approval of its own.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse


def sorted_query(query: str) -> str:
    """The query with its pairs sorted (blank values kept, encoding normalized); '' for none."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode(sorted(pairs), quote_via=urllib.parse.quote)


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_hash(
    *,
    organization_id: str,
    session_id: str,
    method: str,
    host: str,
    path: str,
    query: str,
    body_sha256: str,
    credential_id: str,
) -> str:
    """Hex SHA-256 over a canonical JSON array of the request's parts (no separator ambiguity)."""
    parts = [
        "aileron.approval.v1",
        str(organization_id),
        str(session_id),
        method.upper(),
        host.lower().rstrip("."),
        path,
        sorted_query(query),
        body_sha256.lower(),
        str(credential_id),
    ]
    canonical = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
