"""Runs the credential service with its local key channel: `python -m dataplane.credserver`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from dataplane.attestation import AttestationError, SoftwareProvider, dataplane_config
from dataplane.control import ControlPlane
from dataplane.credentials import DEFAULT_TTL_SECONDS, CredentialService
from dataplane.keychannel import ChannelError, serve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--api", required=True, help="Control plane base URL.")
    parser.add_argument("--service-token-file", required=True, type=Path)
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_SECONDS)
    args = parser.parse_args()
    try:
        token = args.service_token_file.read_text().strip()
    except OSError as exc:
        print(f"credential service: cannot read the service token: {exc.strerror}", file=sys.stderr)
        return 2
    # A fresh key per start: a master key sealed to an earlier process (or for another one) opens nowhere.
    channel_key = x25519.X25519PrivateKey.generate()
    try:
        provider = SoftwareProvider(
            public_key=channel_key.public_key().public_bytes_raw(), config=dataplane_config(ttl_seconds=args.ttl)
        )
    except (AttestationError, OSError) as exc:
        print(f"credential service: cannot measure the data plane: {exc}", file=sys.stderr)
        return 2
    control = ControlPlane(args.api, token)
    service = CredentialService(control, ttl=args.ttl)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(serve(service, args.socket, provider=provider, private_key=channel_key))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    print(f"credential service listening on {args.socket} (attestation: software, {provider.measurement})", flush=True)
    try:
        asyncio.run(run())
    except ChannelError as exc:
        print(f"credential service: {exc}", file=sys.stderr)
        return 2
    finally:
        service.close_all()
        control.close()
        with contextlib.suppress(FileNotFoundError):
            args.socket.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
