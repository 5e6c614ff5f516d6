"""Byte relays that carry a sandbox's proxy connections: the sandbox's only way out, and nothing else.

A sandbox has no network interface but loopback. On the host, `HostRelay` listens on a unix socket in a private
folder and relays each connection to the data plane's proxy; the folder is mounted into the sandbox, where the
inside relay (`python3 relay.py --listen 127.0.0.1:PORT --socket /run/aileron/proxy.sock`) listens on the
sandbox's own loopback, where HTTPS_PROXY points, and relays each connection to that socket. Bytes are relayed
as they are: TLS and the proxy's authentication stay end to end between the agent's client and the proxy.

`relay.py --connect HOST:PORT` is the other way out, for raw TCP the organization allows as a `host:port` rule
(SSH to a git host, a database): it asks the proxy named by HTTPS_PROXY for a tunnel to HOST:PORT, with the
session's token, and relays its standard input and output through it, as ssh's ProxyCommand expects. The proxy
decides and audits; without a rule it refuses, and this prints its reason in one line and exits 1.

Standard library only, and Python 3.9+ syntax at run time: the backends run this very file inside the sandbox
with whatever python3 is there (the base image's, or the host's for the netns backend).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

CHUNK = 65536
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close reaches the other side (the proxy sees the client's EOF)
    except (ConnectionError, OSError):
        writer.close()


async def _relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, connect: Connect) -> None:
    try:
        upstream_reader, upstream_writer = await connect()
    except OSError:
        client_writer.close()  # the client sees the connection close: its proxy is unreachable
        return
    try:
        await asyncio.gather(_pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer))
    finally:
        for writer in (client_writer, upstream_writer):
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


async def _serve(listener: socket.socket, connect: Connect, stopped: asyncio.Event) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a handler always runs in a task
        tasks.add(task)
        try:
            await _relay(reader, writer, connect)
        finally:
            tasks.discard(task)

    if listener.family == socket.AF_UNIX:
        server = await asyncio.start_unix_server(handle, sock=listener)
    else:
        server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await stopped.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class HostRelay:
    """On the host: a unix socket (in a folder only this user can enter) relayed to the proxy's host:port."""

    def __init__(self, socket_path: Path, target_host: str, target_port: int) -> None:
        self.socket_path = Path(socket_path)
        self.target_host = target_host
        self.target_port = target_port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> None:
        """Listen at once (a sandbox started after this returns can connect); relay in a daemon thread."""
        folder = self.socket_path.parent
        info = folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{folder} must belong to this user and be private (0700)")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(128)
        listener.setblocking(False)
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(self.target_host, self.target_port)

        async def main() -> None:
            self._stopped = asyncio.Event()
            ready.set()
            await _serve(listener, connect, self._stopped)

        ready = threading.Event()
        self._thread = threading.Thread(
            target=loop.run_until_complete, args=(main(),), name=f"aileron-relay {self.socket_path}", daemon=True
        )
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        """Close the socket and every relayed connection; idempotent."""
        loop, thread, stopped = self._loop, self._thread, self._stopped
        self._loop = self._thread = self._stopped = None
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        if thread is not None:
            thread.join(10)
        if loop is not None and not loop.is_closed() and not loop.is_running():
            loop.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def __enter__(self) -> HostRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def inside_listener(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    return listener


def serve_inside(listener: socket.socket, socket_path: str) -> None:
    """Relay each connection on the sandbox's loopback to the mounted proxy socket, until killed."""

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(socket_path)

    async def main() -> None:
        await _serve(listener, connect, asyncio.Event())

    asyncio.run(main())


def _detach() -> None:
    """The relay child must not hold the agent's terminal: its output would never end, and Ctrl-C would hit it."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class TunnelRefused(Exception):
    """The proxy did not open the tunnel; the text says why, in one line."""


# A host name, an IPv4 address or a bracketed IPv6 one, then a port: nothing else reaches the CONNECT line.
_DESTINATION = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?|\[[0-9A-Fa-f:.]{2,45}\]):[0-9]{1,5}")


def open_tunnel(destination: str, proxy_url: str, *, timeout: float = 30.0) -> socket.socket:
    """A socket through the proxy to DESTINATION (host:port), the session's token taken from PROXY_URL.

    Neither the URL nor the token is ever part of an error: they end up in ssh's and git's output."""
    if not _DESTINATION.fullmatch(destination):
        raise TunnelRefused(f"{destination[:100]!r} is not HOST:PORT")
    proxy = urllib.parse.urlsplit(proxy_url)
    try:
        port = proxy.port or 80
    except ValueError:
        raise TunnelRefused("HTTPS_PROXY's port is not a number from 1 to 65535") from None
    if not proxy.hostname or proxy.scheme not in ("http", ""):
        raise TunnelRefused(f"HTTPS_PROXY is not an http:// proxy URL (its scheme: {proxy.scheme[:10] or 'none'})")
    user = urllib.parse.unquote(proxy.username or "aileron")
    token = urllib.parse.unquote(proxy.password or "")
    try:
        sock = socket.create_connection((proxy.hostname, port), timeout=timeout)
    except OSError as exc:
        raise TunnelRefused(f"cannot reach the proxy at {proxy.hostname}:{port}: {exc.strerror or exc}") from None
    try:
        return _tunnel(sock, destination, user, token)
    except OSError as exc:  # a timeout included: the proxy never answered the CONNECT
        sock.close()
        raise TunnelRefused(f"the proxy did not answer the CONNECT to {destination}: {exc.strerror or exc}") from None


def _tunnel(sock: socket.socket, destination: str, user: str, token: str) -> socket.socket:
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    sock.sendall(
        f"CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\nProxy-Authorization: Basic {auth}\r\n"
        "X-Aileron-Tunnel: tcp\r\n\r\n".encode()  # raw TCP asked for: without a rule, a refusal, not a TLS tunnel
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)  # one byte at a time: nothing of the tunnel itself is read past the head
        if not chunk or len(head) > 65536:
            sock.close()
            raise TunnelRefused("the proxy closed the connection before answering")
        head += chunk
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) >= 2 and parts[1].startswith("2"):
        sock.settimeout(None)
        return sock
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = min(int(value), 65536)
    body = b""
    with contextlib.suppress(OSError):
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    sock.close()
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    why = str(problem.get("detail") or problem.get("title") or "") if isinstance(problem, dict) else ""
    why = " ".join(why.split())[:300]  # one line
    raise TunnelRefused(f"the proxy refused {destination}: {status_line[9:].strip()}" + (f" ({why})" if why else ""))


def connect_stdio(destination: str, proxy_url: str) -> int:
    """Relay standard input and output through a tunnel to DESTINATION (ssh's ProxyCommand); its exit code."""
    try:
        sock = open_tunnel(destination, proxy_url)
    except TunnelRefused as exc:
        print(f"aileron: {exc}", file=sys.stderr)
        return 1
    return relay_stdio(sock)


def relay_stdio(sock: socket.socket) -> int:
    """Relay standard input to `sock` and `sock` to standard output until the far end closes; 0."""

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while True:
                data = os.read(0, CHUNK)
                if not data:
                    break
                sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    with contextlib.suppress(OSError):
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    sock.close()
    return 0


FORWARDED_AT_ONCE = 32  # a session's proxy connections are limited too: one forwarder must not take them all


def forward(
    listener: socket.socket,
    destination: str,
    proxy_url: str,
    *,
    report: Callable[[str], None],
    at_once: int = FORWARDED_AT_ONCE,
) -> None:
    """Tunnel each connection `listener` accepts through the proxy to DESTINATION, until killed: a client that
    cannot speak through a ProxyCommand (a database's) connects to the listener instead. A refusal closes that
    connection and is reported in one line; beyond `at_once` open ones, a new connection is closed at once."""
    listener.setblocking(True)
    slots = threading.BoundedSemaphore(at_once)
    while True:
        client, _ = listener.accept()
        if not slots.acquire(blocking=False):
            report(  # said before the close: whoever sees the connection end can read why
                f"aileron: {at_once} connections to {destination} are open through this forwarder; one more was closed"
            )
            client.close()
            continue
        threading.Thread(target=_forward_one, args=(client, destination, proxy_url, report, slots), daemon=True).start()


def _forward_one(
    client: socket.socket,
    destination: str,
    proxy_url: str,
    report: Callable[[str], None],
    slots: threading.BoundedSemaphore,
) -> None:
    try:
        _forward_through(client, destination, proxy_url, report)
    finally:
        slots.release()


def _forward_through(client: socket.socket, destination: str, proxy_url: str, report: Callable[[str], None]) -> None:
    try:
        far = open_tunnel(destination, proxy_url)
    except TunnelRefused as exc:
        report(f"aileron: {exc}")
        client.close()
        return

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(CHUNK):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(far, client), daemon=True)
    back.start()
    pump(client, far)
    back.join()
    client.close()
    far.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", help="HOST:PORT on the sandbox's loopback")
    parser.add_argument("--socket", help="the proxy's unix socket, mounted into the sandbox")
    parser.add_argument(
        "--connect", metavar="HOST:PORT", help="relay standard input and output through the proxy to HOST:PORT"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...: run it once listening")
    args = parser.parse_args(argv)
    if args.connect:
        proxy_url = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
        if not proxy_url:
            print("aileron: HTTPS_PROXY is not set: run this inside an aileron session", file=sys.stderr)
            return 2
        return connect_stdio(args.connect, proxy_url)
    if not args.listen or not args.socket:
        parser.error("--listen and --socket are required (or --connect HOST:PORT)")
    host, _, port = args.listen.rpartition(":")
    listener = inside_listener(host, int(port))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("ready", flush=True)  # the docker backend starts the agent once it reads this
        serve_inside(listener, args.socket)
        return 0
    # Listening before the command starts, so its first connection cannot race the relay. The command replaces
    # this process (its exit code is the sandbox's); the relay lives on in a child that the sandbox's end kills.
    if os.fork() == 0:
        _detach()
        try:
            serve_inside(listener, args.socket)
        finally:
            os._exit(0)
    listener.close()
    try:
        os.execvp(command[0], command)  # noqa: S606 - the agent's own command, inside its sandbox
    except OSError as exc:
        print(f"aileron: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
