"""Attestation of the data plane: a report binding its code, its config and a fresh key, checked before a key is sent.

The credential service makes a fresh X25519 key pair each time it starts. Before a user's CLI hands it a master
key, the CLI sends a random nonce and gets back a `Report`: the provider's name, a measurement (SHA-256 over the
data plane's code and config), the public key, the nonce, a time, and provider-specific evidence. The CLI
verifies the report against the measurement it computes from its own installed copy, then HPKE-seals the master
key to the reported public key (`vaults.crypto.master_key_seal`), so only the process that made the report can
open it.

What the software provider (v4's) proves, honestly: nothing against a malicious host. Its evidence is a plain
statement, signed by nothing; whoever controls the machine can make one for any code. What it gives is the
shape: the key channel is bound to a fresh key and to the code hash, so a data plane started from a different
checkout than the CLI's (an upgrade half done, a stray edit) is caught, a sealed master key is useless to any
other process or any later start, and a hardware provider is a drop-in:

- SEV-SNP: `report(nonce)` asks the guest's /dev/sev-guest for an attestation report whose 64-byte REPORT_DATA
  is `report_data(public_key, nonce)` padded with zeros, and ships the report and the VCEK certificate as the
  evidence; the measurement is the launch digest. `verify` checks the ARK -> ASK -> VCEK chain (AMD's KDS),
  the report's signature under the VCEK, REPORT_DATA against the reported key and the nonce, the TCB and
  policy bits, and the launch digest against the expected measurement.
- TDX: `report` gets a TD quote through configfs-tsm (or the quote generation service) with the same
  REPORT_DATA; `verify` checks the quote's chain to Intel's SGX/TDX root through the PCS collateral, the TCB
  status, and MRTD/RTMRs against the expected measurement.

Either registers with `register("sev-snp", factory)` and is chosen by name where the software provider is
today. The expected measurement then comes from a reproducible build of the data-plane image, not from the
CLI's own files. Imports no Django.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# What the data plane runs: its packages (with the connectors' built-in data) and the pure modules it imports.
MEASURED_PACKAGES = ("dataplane", "connectors", "aileron_shared")
MEASURED_FILES = ("vaults/crypto.py", "vaults/rotation.py", "policies/engine.py")
_SKIPPED_PARTS = frozenset({"tests", "__pycache__", "migrations"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")

NONCE_BYTES = 32
PUBLIC_KEY_BYTES = 32
MAX_AGE_SECONDS = 300.0
MAX_CLOCK_SKEW_SECONDS = 60.0
KEY_CHANNEL_VERSION = 2  # 2: attested, sealed master-key delivery

_MEASUREMENT_DOMAIN = b"aileron data-plane measurement v1\x00"
_SOFTWARE_STATEMENT = "aileron software attestation v1: unsigned, proves nothing against the host"


class AttestationError(Exception):
    """A report is malformed, or does not prove what it must. The message is one line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise AttestationError(f"malformed attestation report: {field} is not base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise AttestationError(f"malformed attestation report: {field} is not base64") from None


def report_data(public_key: bytes, nonce: bytes) -> bytes:
    """What a report's evidence commits to: sha256(public key || nonce). (The key has a fixed length.)"""
    return hashlib.sha256(public_key + nonce).digest()


@dataclass(frozen=True, slots=True)
class Report:
    provider: str
    measurement: str  # hex
    public_key: bytes  # raw X25519, fresh per data-plane start
    nonce: bytes
    issued_at: float  # unix seconds
    evidence: bytes  # provider-specific: a statement (software), a signed hardware report and its certificates

    def to_json(self) -> dict[str, Any]:
        """A JSON object (as a dict) for the key channel."""
        return {
            "provider": self.provider,
            "measurement": self.measurement,
            "public_key": _b64(self.public_key),
            "nonce": _b64(self.nonce),
            "issued_at": self.issued_at,
            "evidence": _b64(self.evidence),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> Report:
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError:
                raise AttestationError("malformed attestation report: not JSON") from None
        if not isinstance(data, Mapping):
            raise AttestationError("malformed attestation report: not an object")
        provider, measurement, issued_at = data.get("provider"), data.get("measurement"), data.get("issued_at")
        if not isinstance(provider, str) or not provider:
            raise AttestationError("malformed attestation report: no provider")
        if not isinstance(measurement, str) or not measurement:
            raise AttestationError("malformed attestation report: no measurement")
        if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
            raise AttestationError("malformed attestation report: issued_at is not a time")
        return cls(
            provider=provider,
            measurement=measurement,
            public_key=_unb64(data.get("public_key"), "public_key"),
            nonce=_unb64(data.get("nonce"), "nonce"),
            issued_at=float(issued_at),
            evidence=_unb64(data.get("evidence"), "evidence"),
        )


class Provider(Protocol):
    """Makes reports (on the data plane, for its own key) and verifies them (in the CLI)."""

    name: str

    def report(self, nonce: bytes) -> Report: ...

    def verify(self, report: Report, *, nonce: bytes, expected_measurement: str) -> None:
        """Return if the report proves the expected code holds the reported key for this nonce; else raise
        AttestationError."""
        ...


# --- measurement ---------------------------------------------------------------------------------------


def code_root() -> Path:
    """The folder holding the `dataplane` package: a checkout, or site-packages."""
    return Path(__file__).resolve().parent.parent


def measured_files(root: Path) -> Iterator[tuple[str, Path]]:
    """The measured files as (posix path relative to root, path), in sorted path order."""
    found: dict[str, Path] = {}
    for package in MEASURED_PACKAGES:
        folder = root / package
        if not (folder / "__init__.py").is_file():
            raise AttestationError(f"cannot measure the data plane: no package {package} under {root}")
        for path in folder.rglob("*"):
            relative = path.relative_to(root)
            if (
                not path.is_file()
                or _SKIPPED_PARTS.intersection(relative.parts)
                or any(part.startswith(".") for part in relative.parts)
                or path.name.endswith(_SKIPPED_SUFFIXES)
            ):
                continue
            found[relative.as_posix()] = path
    for name in MEASURED_FILES:
        if (root / name).is_file():  # policies/engine.py arrives with the policy engine
            found[name] = root / name
    for name in sorted(found):
        yield name, found[name]


def _canonical(config: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise AttestationError(f"the measured config is not plain JSON: {exc}") from None


def measure(config: Mapping[str, Any], *, root: Path | None = None) -> str:
    """SHA-256, hex, over the data plane's files (each path and content, length-prefixed) and a canonical config."""
    digest = hashlib.sha256(_MEASUREMENT_DOMAIN)
    for name, path in measured_files(root or code_root()):
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    canonical = _canonical(config)
    digest.update(len(canonical).to_bytes(8, "big") + canonical)
    return digest.hexdigest()


def dataplane_config(*, ttl_seconds: float) -> dict[str, Any]:
    """The config a credential service is measured with: what changes what it does with a master key."""
    return {"key_channel": KEY_CHANNEL_VERSION, "session_ttl_seconds": float(ttl_seconds)}


def expected_measurement(*, ttl_seconds: float | None = None, root: Path | None = None) -> str:
    """What this installation's credential service should report (the CLI's side), default TTL unless told."""
    if ttl_seconds is None:
        from dataplane.credentials import DEFAULT_TTL_SECONDS

        ttl_seconds = DEFAULT_TTL_SECONDS
    return measure(dataplane_config(ttl_seconds=ttl_seconds), root=root)


# --- the software provider -----------------------------------------------------------------------------


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise AttestationError(f"an attestation nonce is {NONCE_BYTES} bytes")


class SoftwareProvider:
    """v4's provider: the measurement is computed here, the evidence is an unsigned statement of it.

    On the data plane: `SoftwareProvider(public_key=…, config=…)` measures the code once, at start. In the CLI:
    `SoftwareProvider()` only verifies.
    """

    name = "software"

    def __init__(
        self,
        *,
        public_key: bytes | None = None,
        config: Mapping[str, Any] | None = None,
        root: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self.public_key = public_key
        self.clock = clock
        self.max_age = max_age
        self.measurement: str | None = None
        if public_key is not None:
            if len(public_key) != PUBLIC_KEY_BYTES:
                raise AttestationError("the attested key must be a raw X25519 public key")
            self.measurement = measure(config or {}, root=root)

    @staticmethod
    def _statement(measurement: str, public_key: bytes, nonce: bytes, issued_at: float) -> bytes:
        return json.dumps(
            {
                "statement": _SOFTWARE_STATEMENT,
                "measurement": measurement,
                "report_data": report_data(public_key, nonce).hex(),
                "issued_at": issued_at,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def report(self, nonce: bytes) -> Report:
        if self.public_key is None or self.measurement is None:
            raise AttestationError("this provider was made to verify, not to report: it holds no key")
        _check_nonce(nonce)
        issued_at = round(self.clock(), 3)
        evidence = self._statement(self.measurement, self.public_key, nonce, issued_at)
        return Report(self.name, self.measurement, self.public_key, nonce, issued_at, evidence)

    def verify(self, report: Report, *, nonce: bytes, expected_measurement: str) -> None:
        if report.provider != self.name:
            raise AttestationError(f"the report comes from provider {report.provider!r}, not {self.name!r}")
        _check_nonce(nonce)
        if not hmac.compare_digest(report.nonce, nonce):
            raise AttestationError("the report answers another nonce (a replayed report?)")
        if len(report.public_key) != PUBLIC_KEY_BYTES:
            raise AttestationError("the reported key is not a raw X25519 public key")
        expected_evidence = self._statement(report.measurement, report.public_key, nonce, report.issued_at)
        if not hmac.compare_digest(report.evidence, expected_evidence):
            raise AttestationError("the evidence does not commit to this report's key, nonce and measurement")
        now = self.clock()
        if report.issued_at > now + MAX_CLOCK_SKEW_SECONDS or now - report.issued_at > self.max_age:
            raise AttestationError("the report is not fresh (check both machines' clocks)")
        if not hmac.compare_digest(report.measurement.encode(), expected_measurement.encode()):
            raise AttestationError(
                f"the data plane measures {report.measurement[:16]}…, this installation expects "
                f"{expected_measurement[:16]}… (its code or config differs from this installation's)"
            )


# --- registry ------------------------------------------------------------------------------------------

_PROVIDERS: dict[str, Callable[..., Provider]] = {"software": SoftwareProvider}


def register(name: str, factory: Callable[..., Provider]) -> None:
    """Make a provider (e.g. "sev-snp", "tdx") available by name."""
    _PROVIDERS[name] = factory


def provider_by_name(name: str, **options: Any) -> Provider:
    """A provider by name, made with the given options (none: a verifier)."""
    try:
        factory = _PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(_PROVIDERS))
        raise AttestationError(f"unknown attestation provider {name!r} (known: {known})") from None
    return factory(**options)
