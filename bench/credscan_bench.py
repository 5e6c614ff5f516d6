"""The outbound credential scan's cost per request: median µs at 1, 10 and 100 credentials.

    .venv/bin/python bench/credscan_bench.py [--runs 2000]

Each request is what an agent typically sends: a dozen headers, a path with a query, and a JSON body of about
2 KiB (and one of 64 KiB), nothing found (the common case, and the one every request pays). The matcher is
built once per set of credentials (its build time is shown too); a scan is one Aho-Corasick pass per reading.
Every timed request is new to the matcher (its own request id header, path and body), so no figure comes from
the matcher's memory of inputs already read clean; the last column is a request seen before (headers, host and
path remembered), as a kept-alive client's next request mostly is.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time

from dataplane.credscan import Matcher, scan_request

HEADERS = [
    (b"Host", b"api.github.com"),
    (b"User-Agent", b"claude-cli/2.1.328 (external, cli)"),
    (b"Accept", b"application/json"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Authorization", b"Bearer placeholder"),
    (b"Content-Type", b"application/json"),
    (b"anthropic-version", b"2023-06-01"),
    (b"x-stainless-lang", b"js"),
    (b"x-stainless-runtime", b"node"),
    (b"x-stainless-retry-count", b"0"),
    (b"Connection", b"keep-alive"),
    (b"Content-Length", b"2048"),
]
TARGET = b"/v1/messages?beta=true&client=cli%20session"


def body(size: int) -> bytes:
    message = {"role": "user", "content": "Refactor the parser; keep the \\u00e9 escapes and 50% of the tests. " * 40}
    text = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [message] * 200})
    return text.encode()[:size]


def credentials(count: int) -> list[bytes]:
    kinds = ("ghp_", "sk-ant-api03-", "sk_live_", "xoxb-", "AIza")
    return [(kinds[i % len(kinds)] + secrets.token_urlsafe(30)).encode() for i in range(count)]


def median_us(run: object, runs: int) -> float:
    samples = []
    for i in range(runs):
        start = time.perf_counter_ns()
        run(i)  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def fresh(count: int, small: bytes, large: bytes) -> list[tuple[list[tuple[bytes, bytes]], bytes, bytes, bytes]]:
    """`count` requests, each with headers, a path and bodies no other has (so none is remembered as clean)."""
    out = []
    for _ in range(count):
        mark = secrets.token_hex(8).encode()
        fields = [*HEADERS, (b"x-request-id", mark)]
        out.append((fields, TARGET + b"&n=" + mark, mark + small[len(mark) :], mark + large[len(mark) :]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    small, large = body(2048), body(64 * 1024)
    print(
        f"{'credentials':>11} {'forms':>6} {'build ms':>9} {'head µs':>8} {'+2 KiB body µs':>15} {'+64 KiB µs':>11}"
        f" {'seen before µs':>15}"
    )
    for count in (1, 10, 100):
        start = time.perf_counter()
        matcher = Matcher(credentials(count))
        build_ms = (time.perf_counter() - start) * 1000
        forms = len(matcher._automaton)
        if scan_request(matcher, target=TARGET, fields=HEADERS, body=large) is not None:
            raise SystemExit("a clean request matched: the figures would not be the common case")
        runs = args.runs
        new = fresh(runs, small, large)
        head = median_us(
            lambda i, m=matcher, n=new: scan_request(m, host=b"api.github.com", target=n[i][1], fields=n[i][0]),
            runs,
        )
        new = fresh(runs, small, large)
        with_small = median_us(
            lambda i, m=matcher, n=new: scan_request(
                m, host=b"api.github.com", target=n[i][1], fields=n[i][0], body=n[i][2]
            ),
            runs,
        )
        new = fresh(max(100, runs // 10), small, large)
        with_large = median_us(
            lambda i, m=matcher, n=new: scan_request(
                m, host=b"api.github.com", target=n[i][1], fields=n[i][0], body=n[i][3]
            ),
            max(100, runs // 10),
        )
        again = median_us(
            lambda _, m=matcher: scan_request(m, host=b"api.github.com", target=TARGET, fields=HEADERS, body=small),
            runs,
        )
        print(
            f"{count:>11} {forms:>6} {build_ms:>9.1f} {head:>8.1f} {with_small:>15.1f} {with_large:>11.1f}"
            f" {again:>15.1f}"
        )


if __name__ == "__main__":
    main()
