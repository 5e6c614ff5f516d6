"""`--sandbox none` on a pseudo-terminal: the agent runs on this host, in a PTY that `aileron launch` owns.

No boundary at all (that is what docker and netns add); it exists so that the unsandboxed developer mode gets
the same terminal handling, and the same approval prompts, as the sandboxes.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios

from runtime.sandbox.spec import SandboxSpec


def set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _take_terminal() -> None:
    """In the child, after setsid(): make the PTY on stdin its controlling terminal (so /dev/tty works)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyProcess:
    """Running, for a process on a PTY whose master end we hold (LocalPty here, NetnsRunning for bwrap)."""

    process: subprocess.Popen[bytes]
    master: int

    def fileno(self) -> int:
        return self.master

    def read(self, size: int = 65536) -> bytes:
        try:
            return os.read(self.master, size)
        except OSError:  # EIO: every process holding the PTY's other end has gone
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except OSError:
                return
            view = view[written:]

    def resize(self, rows: int, columns: int) -> None:
        try:
            set_size(self.master, rows, columns)  # the kernel signals the PTY's foreground process group
        except OSError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class LocalPty(PtyProcess):
    """A process of this host on a PTY (`--sandbox none`)."""

    def __init__(self, spec: SandboxSpec) -> None:
        master, slave = pty.openpty()
        set_size(slave, spec.rows, spec.columns)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - the user's own agent command
                spec.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=spec.env,
                cwd=spec.workdir,
                start_new_session=True,  # its own session, with the PTY as its controlling terminal:
                preexec_fn=_take_terminal,  # noqa: PLW1509 - started before any thread of ours exists
                close_fds=True,
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.closed = False

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGHUP)
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.process.wait()
        if not self.closed:
            self.closed = True
            os.close(self.master)


class LocalBackend:
    name = "none"

    def available(self) -> str | None:
        return None

    def start(self, spec: SandboxSpec) -> LocalPty:
        return LocalPty(spec)
