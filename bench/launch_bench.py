"""Time from `aileron launch` to the agent's first command (issue #7), per sandbox backend, cold and warm.

    .venv/bin/python bench/launch_bench.py [--runs 5] [--backends none,netns,docker] [--json]

One real `aileron service` (tests/proxy_world.py: a user with a personal token, connectors, credentials). Each
run is the whole startup sequence a user waits for: the CLI starts, checks the backend and the image, unlocks
the passphrase (Argon2id), has the data plane attest itself, delivers the sealed key, mints the session and its
CA, starts the relay and the sandbox, and the agent's first command (`echo FIRST-COMMAND`) prints. The clock
stops when that line reaches the launching process's output, and the session is ended as usual afterwards.

    cold    the first run after dropping the kernel's page cache (root only; else said so and skipped), so
            the image's and the CLI's files come from disk
    warm    the median of the following runs

The `--sandbox none` row is the same sequence without a sandbox: the difference is what the sandbox costs.
The `docker-byo` row is docker with a bring-your-own image (the base without Python, the venv and the
commands, named in customizations.aileron.image): its CLI and shims come from the toolbox.

The `claude`, `codex` and `gemini` rows run the real agent CLI in the docker sandbox (the base image built with
`build-base --with ...`, as the tests build it) with a one-line prompt; the clock stops when the agent's first
LLM request reaches the fake provider through the proxy, whose answer (a final text) lets the agent exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.proxy_world import World, proxy_world  # noqa: E402
from tests.service import BIN  # noqa: E402

MARK = "FIRST-COMMAND"
# The real agents: the command `aileron launch` runs, and the LLM path that stops the clock.
AGENT_RUNS = {
    "claude": (["claude", "--model", "claude-sonnet-4-5", "-p", "say hi"], "/v1/messages"),
    "codex": (["codex", "exec", "-m", "gpt-4.1", "say hi"], "/v1/responses"),
    "gemini": (["gemini", "-m", "gemini-2.5-flash", "-y", "-p", "say hi"], ":streamGenerateContent"),
}


class FirstLlmRequest:
    """A fake-provider responder that notes when the current run's first LLM request arrives and answers every
    LLM request with a final text, so the agent exits."""

    def __init__(self) -> None:
        self.path = ""
        self.at: float | None = None

    def __call__(self, received: Any) -> Any:
        from tests.test_real_agents_e2e import anthropic_reply, gemini_reply, responses_reply

        if not self.path or self.path not in received.path or received.method != "POST":
            return None
        if self.at is None:
            self.at = time.perf_counter()
        if self.path == "/v1/messages":
            text = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": "hi"}
            return anthropic_reply(
                [
                    {"type": "content_block_start", "index": 0, "content_block": text},
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    {"type": "content_block_stop", "index": 0},
                ],
                "end_turn",
                "claude-sonnet-4-5",
            )
        if self.path == "/v1/responses":
            content = [{"type": "output_text", "text": "hi", "annotations": []}]
            item = {"type": "message", "id": "m", "role": "assistant", "status": "completed", "content": content}
            return responses_reply(item, "gpt-4.1")
        return gemini_reply({"text": "hi"})


FIRST_LLM = FirstLlmRequest()


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)  # noqa: S607
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


BYO_TAG = "aileron-bench/byo:1"


def byo_project(folder: Path) -> Path:
    """A project whose devcontainer names a BYO image made here: the base without Python or aileron."""
    import io

    from runtime.sandbox.image import base_image_tag, engine

    dockerfile = f"FROM {base_image_tag()}\nUSER root\nRUN rm -rf /usr/bin/python3* /opt/aileron /usr/local/bin/*\n"
    engine().images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=BYO_TAG, network_mode="none", rm=True)
    project = folder / "byo-project"
    (project / ".devcontainer").mkdir(parents=True)
    project.chmod(0o755)
    (project / ".devcontainer" / "devcontainer.json").write_text(
        json.dumps({"customizations": {"aileron": {"image": BYO_TAG}}}), encoding="utf-8"
    )
    return project


def one_launch(world: World, backend: str, project: Path) -> float:
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "dumb"}
    sandbox = "docker" if backend in AGENT_RUNS else backend.split("-", 1)[0]
    argv = [str(BIN / "aileron"), "launch", "--sandbox", sandbox, "--dir", str(project), "--name", "bench"]
    agent = AGENT_RUNS.get(backend)
    argv += ["--", *(agent[0] if agent else ["bash", "-c", f"echo {MARK}"])]
    FIRST_LLM.path, FIRST_LLM.at = (agent[1] if agent else ""), None
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603
        argv, env=env, cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None  # noqa: S101
    seen = b""
    elapsed = None
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        if elapsed is None and MARK.encode() in seen:
            elapsed = time.perf_counter() - started
    _, err = process.communicate(timeout=60)
    if agent:
        elapsed = FIRST_LLM.at - started if FIRST_LLM.at is not None else None
    if process.returncode != 0 or elapsed is None:
        raise SystemExit(f"bench: launch --sandbox {backend} failed ({process.returncode}): {err.decode()[-500:]}")
    return elapsed


def measure(world: World, backend: str, runs: int, project: Path, *, cold: bool) -> dict[str, Any]:
    cold_ok = cold and drop_caches()
    first = one_launch(world, backend, project)
    warm = [one_launch(world, backend, project) for _ in range(runs)]
    return {
        "backend": backend,
        "cold_s": round(first, 3) if cold_ok else None,
        "first_s": round(first, 3),
        "warm_median_s": round(statistics.median(warm), 3),
        "warm_min_s": round(min(warm), 3),
        "warm_max_s": round(max(warm), 3),
        "runs": runs,
    }


def available(backend: str) -> str | None:
    if backend == "netns" and shutil.which("bwrap") is None:
        return "bubblewrap is not installed"
    if backend in ("docker", "docker-byo", *AGENT_RUNS):
        from tests.docker_engine import docker_available

        reason = docker_available()
        if reason:
            return reason
        from runtime.sandbox.image import base_image_tag, engine, local_image

        image = local_image(engine(), base_image_tag())
        if image is None:
            return f"{base_image_tag()} is not built (aileron sandbox build-base)"
        if backend in AGENT_RUNS:
            from runtime.sandbox.agents import BY_COMMAND, LABEL_AGENTS, agents_in

            name = BY_COMMAND[backend].name
            if name not in agents_in((image.labels or {}).get(LABEL_AGENTS)):
                return f"{backend} is not in {base_image_tag()} (aileron sandbox build-base --with {name})"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Warm runs per backend [5].")
    parser.add_argument(
        "--backends",
        default="none,netns,docker,docker-byo,claude,codex,gemini",
        help="Comma-separated, in order; claude, codex and gemini are real agents in the docker sandbox.",
    )
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("--no-cold", action="store_true", help="Do not drop the page cache before each backend.")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="aileron-launch-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        project.chmod(0o755)
        with proxy_world(Path(tmp) / "world") as world:
            world.upstream.responders.insert(0, FIRST_LLM)
            for backend in args.backends.split(","):
                reason = available(backend)
                if reason:
                    skipped[backend] = reason
                    continue
                print(f"bench: {backend} …", file=sys.stderr)
                where = byo_project(Path(tmp)) if backend == "docker-byo" else project
                rows.append(measure(world, backend, args.runs, where, cold=not args.no_cold))
                if backend == "docker-byo":
                    from runtime.sandbox.image import engine

                    engine().images.remove(BYO_TAG, force=True)
    if args.json:
        print(json.dumps({"rows": rows, "skipped": skipped}, indent=2))
        return 0
    base = next((r["warm_median_s"] for r in rows if r["backend"] == "none"), None)
    print("aileron launch -> the agent's first command, or a real agent's first LLM request (seconds; 2 cores)")
    print(f"  {'backend':10} {'cold':>7} {'warm p50':>9} {'min':>7} {'max':>7} {'vs none':>8}")
    for r in rows:
        cold = f"{r['cold_s']:.3f}" if r["cold_s"] is not None else "n/a"
        ratio = f"{r['warm_median_s'] / base:.2f}x" if base else "-"
        print(
            f"  {r['backend']:10} {cold:>7} {r['warm_median_s']:>9.3f} {r['warm_min_s']:>7.3f}"
            f" {r['warm_max_s']:>7.3f} {ratio:>8}"
        )
    for name, reason in skipped.items():
        print(f"  {name}: skipped ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
