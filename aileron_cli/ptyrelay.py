"""The launching terminal, owned by `aileron launch`: the agent's PTY relayed to it, and approvals asked in it.

The agent's terminal is a byte stream (`runtime.sandbox.spec.Running`); this relay copies the user's keystrokes
to it and its output to the user's screen. When one of the session's requests is held for approval, the relay
takes the terminal over: it shows the request, holds the agent's output back, and reads the decision from the
user's own keyboard. Those keystrokes go to `aileron`, never to the agent, and nothing the agent prints or
types can answer the prompt: the agent writes only to its own PTY, which this relay reads as display output.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from runtime.sandbox.spec import Running

CTRL_C = b"\x03"
ESC = b"\x1b"
BACKSPACES = (b"\x7f", b"\x08")
ENTERS = (b"\r", b"\n")
REVERSE, PLAIN = "\x1b[7m", "\x1b[0m"
Decide = Callable[[str, str, str], str]  # (approval id, "grant" | "reject", reason) -> a line to show


@dataclass
class Held:
    """One approval request shown (or waiting to be shown) in the terminal."""

    id: str
    action: str
    args: dict[str, Any]
    agent: str
    four_eyes: bool = False


def summary(held: Held, limit: int = 160) -> str:
    args = json.dumps(held.args, separators=(", ", ": "), ensure_ascii=True, default=str)
    if len(args) > limit:
        args = args[: limit - 1] + "…"
    # Agent-chosen text is shown, never interpreted: escape sequences were removed by json.dumps (ensure_ascii).
    return f"{held.action} {args}"


@dataclass
class Prompt:
    held: Held
    mode: str = "choice"  # choice | reason
    reason: bytearray = field(default_factory=bytearray)


class PtyRelay:
    def __init__(
        self,
        running: Running,
        *,
        decide: Decide,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
        approvals: queue.Queue[tuple[str, Held]] | None = None,
        cannot_decide: str = "",
    ) -> None:
        self.running = running
        self.decide = decide
        self.cannot_decide = cannot_decide  # why the person at this terminal may decide no approval, or ""
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.approvals: queue.Queue[tuple[str, Held]] = approvals if approvals is not None else queue.Queue()
        self.waiting: list[Held] = []
        self.prompt: Prompt | None = None
        self.held_output: list[bytes] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    # --- fed from the approvals feed's thread ----------------------------------------------------------------

    def notify(self, event: str, held: Held) -> None:
        """An approval event for this session (thread-safe): `created` to ask, anything else to withdraw."""
        self.approvals.put((event, held))
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    # --- the loop ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        saved = None
        if os.isatty(self.stdin_fd):
            saved = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd)
        previous = signal.signal(signal.SIGWINCH, self._on_resize)
        self._on_resize()
        try:
            return self._loop()
        finally:
            signal.signal(signal.SIGWINCH, previous)
            if saved is not None:
                termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, saved)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _loop(self) -> int:
        agent_fd = self.running.fileno()
        stdin_open = True
        while True:
            readers = [agent_fd, self.wake_r] + ([self.stdin_fd] if stdin_open else [])
            try:
                ready, _, _ = select.select(readers, [], [], 0.5)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
                self._take_events()
            if self.stdin_fd in ready:
                data = os.read(self.stdin_fd, 4096)
                if not data:
                    stdin_open = False
                elif self.prompt is not None:
                    self._keys(data)
                else:
                    self.running.write(data)
            if agent_fd in ready:
                output = self.running.read()
                if not output:
                    break
                if self.prompt is not None:
                    self.held_output.append(output)
                else:
                    self._show(output)
            elif not ready:
                code = self.running.wait(timeout=0)
                if code is not None and not self._readable(agent_fd):
                    break
        self._end_prompt(None)
        code = self.running.wait(timeout=10)
        return code if code is not None else 1

    @staticmethod
    def _readable(fd: int) -> bool:
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _show(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.stdout_fd, view) :]
            except BlockingIOError:
                select.select([], [self.stdout_fd], [], 1)

    def _say(self, text: str) -> None:
        self._show(text.replace("\n", "\r\n").encode("utf-8", "replace"))

    def _on_resize(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        try:
            size = os.get_terminal_size(self.stdout_fd)
        except OSError:
            return
        self.running.resize(size.lines, size.columns)

    # --- approvals --------------------------------------------------------------------------------------------

    def _take_events(self) -> None:
        while True:
            try:
                event, held = self.approvals.get_nowait()
            except queue.Empty:
                break
            if event == "created":
                asking = self.prompt.held.id if self.prompt is not None else None
                if held.id != asking and held.id not in {h.id for h in self.waiting}:
                    self.waiting.append(held)
            else:
                self.waiting = [h for h in self.waiting if h.id != held.id]
                if self.prompt is not None and self.prompt.held.id == held.id:
                    self._end_prompt(f"[aileron] {held.action}: {event} elsewhere.")
        self._ask_next()

    def _ask_next(self) -> None:
        while self.prompt is None and self.waiting:
            self._ask(self.waiting.pop(0))

    def _ask(self, held: Held) -> None:
        """Ask the person here to decide HELD; or, when they may not (four eyes, their role), say who will,
        and ask nothing: [g]rant is offered only where it can work."""
        agent = held.agent or "the agent"
        why_not = "four eyes: someone other than you must decide it" if held.four_eyes else self.cannot_decide
        if why_not:
            self._say(
                f"\n{REVERSE} aileron {PLAIN} {agent} is waiting for approval:\n  {summary(held)}\n"
                f"  You cannot decide it ({why_not}): an approver decides it on the web or with `aileron approval`;"
                f" {agent} waits meanwhile.\n"
            )
            return
        self.prompt = Prompt(held)
        self._say(
            f"\n{REVERSE} aileron {PLAIN} {agent} is waiting for approval:\n"
            f"  {summary(held)}\n"
            f"  [g]rant  [r]eject  [l]ater (decide on the web or with `aileron approval`) > "
        )

    def _keys(self, data: bytes) -> None:
        prompt = self.prompt
        assert prompt is not None  # noqa: S101
        for byte in (data[i : i + 1] for i in range(len(data))):
            if self.prompt is not prompt:
                return  # decided by an earlier key: the rest of a paste is dropped, never sent to the agent
            if prompt.mode == "choice":
                key = byte.lower()
                if key == b"g":
                    self._decide(prompt.held, "grant", "")
                elif key == b"r":
                    prompt.mode = "reason"
                    self._say("r\n  reason (Enter to send, Esc to go back) > ")
                elif key in (b"l", ESC, CTRL_C):
                    self._end_prompt(f"[aileron] {prompt.held.action}: left pending.")
            elif byte in ENTERS:
                reason = prompt.reason.decode("utf-8", "replace").strip()
                if reason:
                    self._decide(prompt.held, "reject", reason)
            elif byte in BACKSPACES:
                if prompt.reason:
                    del prompt.reason[-1]
                    self._show(b"\b \b")
            elif byte in (ESC, CTRL_C):
                prompt.mode, prompt.reason = "choice", bytearray()
                self._say("\n  [g]rant  [r]eject  [l]ater > ")
            elif byte >= b" ":
                prompt.reason += byte
                self._show(byte)

    def _decide(self, held: Held, verb: str, reason: str) -> None:
        try:
            line = self.decide(held.id, verb, reason)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the agent's request simply stays pending
            line = f"could not {verb}: {exc}"
        self._end_prompt(f"[aileron] {line}")

    def _end_prompt(self, message: str | None) -> None:
        if self.prompt is None:
            return
        self.prompt = None
        if message:
            self._say(f"\n{message}\n")
        for chunk in self.held_output:
            self._show(chunk)
        self.held_output.clear()
        self._ask_next()
