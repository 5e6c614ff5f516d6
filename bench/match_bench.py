"""Match time per request over the full GitHub REST description, beside a linear regex scan (same run).

make github-spec && .venv/bin/python bench/match_bench.py
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

from connectors.matcher import Router
from connectors.openapi import routes_from_openapi
from connectors.tests.test_matcher import _concrete

SPEC = Path(__file__).resolve().parents[1] / ".cache" / "octokit" / "api.github.com.json"


def main() -> None:
    if not SPEC.exists():
        raise SystemExit(f"bench: {SPEC} is missing; run `make github-spec`")
    spec = json.loads(SPEC.read_text())
    start = time.perf_counter()
    routes = routes_from_openapi(spec, connector="github", hosts=("api.github.com",))
    router = Router(routes)
    compile_ms = (time.perf_counter() - start) * 1000
    requests = [(r.method, _concrete(r)) for r in routes]

    # Baseline: what a naive proxy addon does, one regex per route tried in order.
    scan = [(r.method, re.compile("^" + re.sub(r"\\{[^}/]+\\}", "([^/]+)", r.path) + "$"), r.action) for r in routes]

    def naive(method: str, path: str) -> str | None:
        for m, regex, action in scan:
            if m == method and regex.match(path):
                return action
        return None

    def timed(fn, rounds: int = 5) -> list[int]:  # type: ignore[no-untyped-def]
        samples = []
        for _ in range(rounds):
            for method, path in requests:
                t = time.perf_counter_ns()
                fn(method, path)
                samples.append(time.perf_counter_ns() - t)
        return samples

    ours = timed(lambda m, p: router.match(host="api.github.com", method=m, path=p))
    base = timed(naive, rounds=1)
    o50, b50 = statistics.median(ours) / 1000, statistics.median(base) / 1000
    o99 = statistics.quantiles(ours, n=100)[98] / 1000
    print(f"operations: {len(routes)}  compile: {compile_ms:.0f} ms")
    print(f"{'matcher':<34}{'median':>10}{'p99':>10}")
    print(f"{'compiled trie (ours)':<34}{o50:>8.1f}us{o99:>8.1f}us")
    print(f"{'linear regex scan (baseline)':<34}{b50:>8.1f}us")
    print(f"ratio baseline/ours: {b50 / o50:.1f}x")

    from connectors.package import build
    from connectors.registry import BUILTIN, installed, manifest

    builtin = json.dumps(manifest(installed(BUILTIN.parent / ".no-home"))).encode()
    full = build({"name": "github", "hosts": ["api.github.com"], "auth": {"scheme": "bearer"}}, spec)
    whole = json.dumps(manifest([full])).encode()
    print(
        f"manifest, built-in connectors: {len(builtin) / 1024:.0f} KiB ({len(json.loads(builtin)['actions'])} actions)"
    )
    print(f"manifest, whole GitHub description: {len(whole) / 1024:.0f} KiB ({len(full.actions)} actions)")


if __name__ == "__main__":
    main()
