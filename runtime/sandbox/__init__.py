"""Agent sandboxes (issue 7): images, devcontainer.json, backends (docker, netns), the runtime contract.

Pure Python run by `aileron launch` on the user's side: no Django, no ORM. One interface for every backend:

    backend = backends.get("docker" | "netns")
    running = backend.start(spec)        # SandboxSpec -> Running
    running.fileno() / read() / write() / resize(rows, cols) / wait() / stop()

`Running` is the agent's terminal as a byte stream: `aileron launch` owns the real PTY on the user's side and
relays between it and `Running`, which lets it show approval prompts that the agent can neither see as input
nor answer (see aileron_cli/launch.py).
"""
