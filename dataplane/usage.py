"""LLM token usage and cost, read from the responses of the Anthropic, OpenAI and Gemini APIs. Imports no Django.

The proxy feeds each LLM response's body to a `UsageParser` as it streams past; `result()` gives the tokens
the provider reported, normalised across providers so one set of prices (`PriceTable`) prices them all:

- `input_tokens` are the input tokens billed at the full input price: cache reads and cache writes are counted
  apart (Anthropic reports them apart already; OpenAI's `prompt_tokens`/`input_tokens` and Gemini's
  `promptTokenCount` include them, so they are subtracted);
- `output_tokens` include reasoning ("thinking") tokens, which every provider bills as output.

Formats: Anthropic Messages, OpenAI Chat Completions and Responses, Gemini generateContent and
streamGenerateContent, each as one JSON body or as a server-sent event stream. A parser never raises and
keeps a bounded amount of the body: a partial line for streams, at most 1 MiB (then a head and a tail) for JSON.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("aileron.prices")

PROVIDERS = ("anthropic", "openai", "gemini")

# Which connector actions are billed LLM calls (connectors/builtin/*/connector.toml). Token counting and
# model listing are not: their responses carry no usage worth recording.
_LLM_ACTIONS: dict[tuple[str, str], str] = {
    ("anthropic", "create-message"): "anthropic",
    ("openai", "create-chat-completion"): "openai",
    ("openai", "create-response"): "openai",
    ("gemini", "generate-content"): "gemini",
    ("gemini", "stream-generate-content"): "gemini",
}

MAX_JSON_BYTES = 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
_HEAD_BYTES = 64 * 1024
_TAIL_BYTES = 256 * 1024
_MAX_DECOMPRESSED = 16 * 1024 * 1024


def provider_for(connector: str, action: str) -> str | None:
    """The provider of an LLM connector's billed call (anthropic, openai, gemini); None for any other action."""
    return _LLM_ACTIONS.get((connector, action))


@dataclass(slots=True)
class Usage:
    """Tokens one LLM response used. See the module docstring for what each count includes."""

    provider: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(value: Any) -> int | None:
    """A token count as the provider sent it, or None for anything that is not a non-negative integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _model(value: Any) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= 256 else None


class _Tally:
    """What has been read so far. Later reports replace earlier ones: streams send cumulative counts."""

    def __init__(self, provider: str, request_model: str | None) -> None:
        self.provider = provider
        self.model: str | None = None
        self.request_model = request_model
        self.input: int | None = None
        self.output: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None

    def seen(self) -> bool:
        return self.input is not None or self.output is not None

    def set_model(self, value: Any) -> None:
        model = _model(value)
        if model is not None:
            self.model = model

    # --- per provider ---------------------------------------------------------------------------------

    def anthropic(self, usage: dict[str, Any]) -> None:
        """Messages `usage`: input excludes the cache; message_delta repeats only the counts it updates."""
        for attr, key in (
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
        ):
            value = _count(usage.get(key))
            if value is not None:
                setattr(self, attr, value)

    def openai(self, usage: dict[str, Any]) -> None:
        """Chat Completions (`prompt_tokens`) or Responses (`input_tokens`): input includes the cache."""
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            total_in, out = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
            details = _dict(usage.get("prompt_tokens_details"))
        else:
            total_in, out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
            details = _dict(usage.get("input_tokens_details"))
        if total_in is None and out is None:
            return
        cached = _count(details.get("cached_tokens")) or 0
        written = _count(details.get("cache_write_tokens")) or 0
        self.input = max(0, (total_in or 0) - cached - written)
        self.output = out or 0
        self.cache_read, self.cache_write = cached, written

    def gemini(self, metadata: dict[str, Any]) -> None:
        """`usageMetadata`: the prompt count includes cached content; thoughts are billed as output."""
        prompt = _count(metadata.get("promptTokenCount"))
        candidates = _count(metadata.get("candidatesTokenCount"))
        if prompt is None and candidates is None:
            return
        cached = _count(metadata.get("cachedContentTokenCount")) or 0
        tool_prompt = _count(metadata.get("toolUsePromptTokenCount")) or 0
        thoughts = _count(metadata.get("thoughtsTokenCount")) or 0
        self.input = max(0, (prompt or 0) + tool_prompt - cached)
        self.output = (candidates or 0) + thoughts
        self.cache_read, self.cache_write = cached, 0

    # --- one decoded JSON value: a whole body, one stream event, or an element of a JSON array stream ----

    def take(self, value: Any) -> None:
        if isinstance(value, list):
            for item in value:  # streamGenerateContent without alt=sse: one array of responses
                self.take(item)
            return
        if not isinstance(value, dict):
            return
        if isinstance(value.get("usageMetadata"), dict):
            self.gemini(value["usageMetadata"])
            self.set_model(value.get("modelVersion"))
            return
        kind = value.get("type")
        if kind == "message_start":
            message = _dict(value.get("message"))
            self.set_model(message.get("model"))
            self.anthropic(_dict(message.get("usage")))
            return
        if kind == "message_delta":
            self.anthropic(_dict(value.get("usage")))
            return
        nested = value.get("response")
        if isinstance(nested, dict) and isinstance(nested.get("usage"), dict):  # Responses stream events
            self.set_model(nested.get("model"))
            self.openai(nested["usage"])
            return
        usage = value.get("usage")
        if not isinstance(usage, dict):
            if self.model is None:
                self.set_model(value.get("model") or value.get("modelVersion"))
            return
        self.set_model(value.get("model"))
        if self.provider == "anthropic" or (
            self.provider not in ("openai", "gemini")
            and ("cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage)
        ):
            self.anthropic(usage)
        else:
            self.openai(usage)

    def usage(self) -> Usage | None:
        if not self.seen():
            return None
        return Usage(
            provider=self.provider,
            model=self.model or self.request_model,
            input_tokens=self.input or 0,
            output_tokens=self.output or 0,
            cache_read_tokens=self.cache_read or 0,
            cache_write_tokens=self.cache_write or 0,
        )


_USAGE_KEY = re.compile(rb'"(usage|usageMetadata)"\s*:\s*\{')
_MODEL_KEY = re.compile(rb'"(model|modelVersion)"\s*:\s*"([^"\\]{1,256})"')


class UsageParser:
    """Reads the usage out of one response body, fed incrementally; works for SSE streams and plain JSON."""

    def __init__(self, *, provider: str, content_type: str, request_model: str | None = None) -> None:
        self._tally = _Tally(provider, _model(request_model))
        content_type = (content_type or "").lower()
        self._mode: str | None = "sse" if "event-stream" in content_type else None
        self._broken = False
        # SSE state
        self._partial = bytearray()
        self._skipping_line = False
        self._event: list[bytes] = []
        self._event_size = 0
        # JSON state
        self._body = bytearray()
        self._overflowed = False
        self._tail = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        try:
            if self._mode is None:
                self._mode = self._sniff(chunk)
            if self._mode == "sse":
                self._feed_sse(chunk)
            else:
                self._feed_json(chunk)
        except Exception:  # noqa: BLE001 - a usage reader must never break the response it watches
            self._broken = True

    def result(self) -> Usage | None:
        try:
            if self._mode == "sse":
                if self._partial and not self._skipping_line:
                    self._line(bytes(self._partial))
                self._partial.clear()
                self._dispatch()
            elif self._mode == "json":
                self._finish_json()
            return self._tally.usage()
        except Exception:  # noqa: BLE001
            return self._tally.usage() if self._tally.seen() else None

    # --- SSE -----------------------------------------------------------------------------------------

    @staticmethod
    def _sniff(chunk: bytes) -> str:
        start = chunk.lstrip()[:6]
        return "sse" if start.startswith((b"data:", b"event:", b"id:", b":")) else "json"

    def _feed_sse(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._extend_partial(chunk[start:])
                return
            piece = chunk[start:end]
            if self._skipping_line:
                self._skipping_line = False  # the end of a line too long to keep: dropped with it
            elif self._partial:
                self._partial += piece
                self._line(bytes(self._partial))
                self._partial.clear()
            else:
                self._line(piece)
            start = end + 1

    def _extend_partial(self, data: bytes) -> None:
        if self._skipping_line:
            return
        if len(self._partial) + len(data) > MAX_LINE_BYTES:
            self._partial.clear()
            self._skipping_line = True
            return
        self._partial += data

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch()
            return
        if line.startswith(b"data:"):
            data = line[5:]
            if data.startswith(b" "):
                data = data[1:]
            self._event_size += len(data) + 1
            if self._event_size > MAX_LINE_BYTES:
                self._event.clear()
                return
            self._event.append(data)
        # event:, id:, retry: and comments say nothing about usage

    def _dispatch(self) -> None:
        event, self._event, self._event_size = self._event, [], 0
        if not event:
            return
        data = b"\n".join(event)
        if b"usage" not in data:  # most events are content deltas: don't decode them
            if self._tally.model is None and b'"model' in data:
                self._take_json(data)
            return
        self._take_json(data)

    def _take_json(self, data: bytes) -> None:
        if data.strip() == b"[DONE]":
            return
        try:
            self._tally.take(json.loads(data))
        except (ValueError, RecursionError):
            pass  # a damaged event; the next one may still carry the usage

    # --- JSON ----------------------------------------------------------------------------------------

    def _feed_json(self, chunk: bytes) -> None:
        if not self._overflowed:
            if len(self._body) + len(chunk) <= MAX_JSON_BYTES:
                self._body += chunk
                return
            self._overflowed = True
            self._tail = bytearray(self._body[-_TAIL_BYTES:])
            del self._body[_HEAD_BYTES:]  # keep the head: the model is named near the top
        self._tail += chunk
        if len(self._tail) > 2 * _TAIL_BYTES:
            del self._tail[: len(self._tail) - _TAIL_BYTES]

    def _finish_json(self) -> None:
        body = bytes(self._body)
        if not self._overflowed and body[:2] in (b"\x1f\x8b", b"\x78\x9c", b"\x78\xda", b"\x78\x01"):
            body = self._inflate(body)
        if not self._overflowed:
            try:
                self._tally.take(json.loads(body))
                return
            except (ValueError, RecursionError):
                pass
        self._salvage(body, bytes(self._tail))

    @staticmethod
    def _inflate(body: bytes) -> bytes:
        """A compressed body handed over by mistake: decode it, within a bound."""
        try:
            if body[:2] == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=io.BytesIO(body)) as handle:
                    return handle.read(_MAX_DECOMPRESSED)
            return zlib.decompressobj().decompress(body, _MAX_DECOMPRESSED)
        except (OSError, EOFError, zlib.error):
            return body

    def _salvage(self, head: bytes, tail: bytes) -> None:
        """A body too large (or not quite JSON): decode just its last usage object and the model's name."""
        decoder = json.JSONDecoder()
        text_source = tail or head
        found = list(_USAGE_KEY.finditer(text_source))
        if not found:
            return
        match = found[-1]
        try:
            usage, _ = decoder.raw_decode(text_source[match.end() - 1 :].decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return
        envelope: dict[str, Any] = {match.group(1).decode(): usage}
        for found_model in [*_MODEL_KEY.finditer(head), *_MODEL_KEY.finditer(tail)]:
            envelope.setdefault(found_model.group(1).decode(), found_model.group(2).decode("utf-8", "replace"))
        self._tally.take(envelope)


# --- prices --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. Cache prices default to the input price when the provider charges none apart."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


def _p(inp: float, out: float, read: float | None = None, write: float | None = None) -> Price:
    return Price(inp, out, read, write)


# List prices, USD per 1M tokens, for the standard tier and prompts under any long-context threshold (longer
# prompts and batch discounts are not modelled). A model that matches none of these prefixes costs None, not
# a guess: add it with AILERON_PRICE_TABLE. Prefixes are chosen so a newer model does not inherit an older one's
# price (claude-opus-4-7 matches no entry here; claude-opus-4-5-20251101 matches claude-opus-4-5).
DEFAULT_PRICES: dict[str, Price] = {
    # Anthropic: cache writes (5-minute) at 1.25x input, cache reads at 0.1x.
    "claude-opus-4-6": _p(5, 25, 0.5, 6.25),
    "claude-opus-4-5": _p(5, 25, 0.5, 6.25),
    "claude-opus-4-1": _p(15, 75, 1.5, 18.75),
    "claude-opus-4-0": _p(15, 75, 1.5, 18.75),
    "claude-opus-4-20250514": _p(15, 75, 1.5, 18.75),
    "claude-sonnet-4-6": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4-5": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4-0": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4-20250514": _p(3, 15, 0.3, 3.75),
    "claude-3-7-sonnet": _p(3, 15, 0.3, 3.75),
    "claude-haiku-4-5": _p(1, 5, 0.1, 1.25),
    "claude-3-5-haiku": _p(0.8, 4, 0.08, 1),
    "claude-3-haiku": _p(0.25, 1.25, 0.03, 0.3),
    # OpenAI: cached input at the discounted rate; no separate charge for writing the cache.
    "gpt-5.1": _p(1.25, 10, 0.125),
    "gpt-5": _p(1.25, 10, 0.125),
    "gpt-5-mini": _p(0.25, 2, 0.025),
    "gpt-5-nano": _p(0.05, 0.4, 0.005),
    "gpt-4.1": _p(2, 8, 0.5),
    "gpt-4.1-mini": _p(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _p(0.1, 0.4, 0.025),
    "gpt-4o": _p(2.5, 10, 1.25),
    "gpt-4o-2024-05-13": _p(5, 15),
    "gpt-4o-mini": _p(0.15, 0.6, 0.075),
    "o4-mini": _p(1.1, 4.4, 0.275),
    "o3": _p(2, 8, 0.5),
    "o3-mini": _p(1.1, 4.4, 0.55),
    "o1": _p(15, 60, 7.5),
    "o1-mini": _p(1.1, 4.4, 0.55),
    # Gemini: context-cache reads discounted; cache storage is billed by the hour and not modelled.
    "gemini-3-pro": _p(2, 12, 0.2),
    "gemini-2.5-pro": _p(1.25, 10, 0.125),
    "gemini-2.5-flash": _p(0.3, 2.5, 0.03),
    "gemini-2.5-flash-lite": _p(0.1, 0.4, 0.01),
    "gemini-2.0-flash": _p(0.1, 0.4, 0.025),
    "gemini-2.0-flash-lite": _p(0.075, 0.3),
}

_BOUNDARY = ("-", "@", ":", "/")  # what may follow a prefix: a dated or variant suffix, never ".1"


def _normalise_model(model: str) -> str:
    model = model.strip().lower()
    for prefix in ("models/", "publishers/google/models/"):
        if model.startswith(prefix):
            model = model[len(prefix) :]
    return model


def _price_from_json(name: str, value: Any, source: Path) -> Price:
    if not isinstance(value, dict):
        raise ValueError(f"{source}: the price of {name!r} must be an object with input and output")
    unknown = set(value) - {"input", "output", "cache_read", "cache_write"}
    if unknown:
        raise ValueError(f"{source}: the price of {name!r} has unknown fields {sorted(unknown)}")

    def number(key: str) -> float:
        raw = value.get(key)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw < 0:
            raise ValueError(f"{source}: {name}.{key} must be a non-negative number of USD per 1M tokens")
        return float(raw)

    def optional(key: str) -> float | None:
        return None if value.get(key) is None else number(key)

    return Price(number("input"), number("output"), optional("cache_read"), optional("cache_write"))


class Catalog:
    """Prices from genai-prices, the catalog pydantic maintains (tiers by prompt length, cache prices, price
    changes by date), read from the snapshot the installed package ships: never fetched at run time.

    Importing it takes ~0.3 s and ~30 MB, so a proxy process pays only once it sees an LLM call: `prepare()`
    starts the import on a thread when one is identified, and `cost()` waits for it (once, if ever)."""

    # Our provider names to the catalog's.
    PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._calc: Callable[..., Any] | None = None
        self._usage: Callable[..., Any] | None = None
        self.version: str | None = None
        self.error: str | None = None

    def prepare(self) -> None:
        """Start loading the catalog in the background (idempotent; after the first call, no lock is taken)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="aileron-prices", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            import genai_prices  # noqa: PLC0415 - deliberately lazy: see the class docstring
        except Exception as exc:  # a broken install must leave the built-in table in charge, not break pricing
            self.error = f"genai-prices cannot be imported: {exc}"
            log.warning("LLM prices: %s; the built-in table prices what it knows", self.error)
            return
        self._calc, self._usage, self.version = genai_prices.calc_price, genai_prices.Usage, genai_prices.__version__

    def ready(self, timeout: float | None = None) -> bool:
        """Whether the catalog is loaded, waiting for an import under way at most `timeout` seconds."""
        if self._calc is not None:
            return True
        self.prepare()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._calc is not None

    def cost(self, usage: Usage) -> float | None:
        """The catalog's price of this response, or None where it has no price for the model."""
        provider = self.PROVIDERS.get(usage.provider)
        # Runs on the proxy's event loop: wait for the import (started when the request was identified) at most
        # briefly, once per process; past that, this response is priced by the built-in table.
        if not usage.model or provider is None or not self.ready(timeout=2):
            return None
        calc, usage_of = self._calc, self._usage
        if calc is None or usage_of is None:
            return None
        model = _normalise_model(usage.model)
        # The catalog counts cache reads and writes inside input_tokens (the providers' own convention before
        # our normalisation; see the module docstring).
        counted = usage_of(
            input_tokens=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        try:
            priced = calc(counted, model_ref=model, provider_id=provider)
        except LookupError:
            return None  # a model the catalog does not know
        except Exception as exc:  # never let a catalog bug lose the audit record: fall back, say so
            log.warning("LLM prices: genai-prices failed on %s/%s: %s", provider, model, exc)
            return None
        total = float(priced.total_price)
        return round(total, 10) if math.isfinite(total) and total >= 0 else None


class PriceTable:
    """What one LLM response cost, in USD. In order, the first that prices the model decides:

    1. the operator's own table (AILERON_PRICE_TABLE): negotiated prices, private models;
    2. the genai-prices catalog (`Catalog`), which is kept current by its maintainers;
    3. the built-in table (DEFAULT_PRICES), should the catalog be missing or not know the model.

    Tables match by model-name prefix, the longest matching prefix winning."""

    def __init__(
        self, prices: dict[str, Price], *, overrides: dict[str, Price] | None = None, catalog: Catalog | None = None
    ) -> None:
        self.prices = {_normalise_model(k): v for k, v in prices.items()}
        self.overrides = {_normalise_model(k): v for k, v in (overrides or {}).items()}
        self.catalog = catalog

    @classmethod
    def load(cls, path: Path | None, *, with_catalog: bool = True) -> PriceTable:
        """The built-in prices under the catalog, both under a JSON file if one is named (AILERON_PRICE_TABLE).

        The file maps model-name prefixes to prices: {"my-model": {"input": 1, "output": 2, "cache_read": 0.1}}.
        """
        catalog = Catalog() if with_catalog else None
        if path is None:
            return cls(dict(DEFAULT_PRICES), catalog=catalog)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read the price table {path}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"the price table {path} is not valid JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the price table must map model-name prefixes to prices")
        overrides: dict[str, Price] = {}
        for name, value in data.items():
            if not name.strip():
                raise ValueError(f"{path}: a model-name prefix may not be empty")
            overrides[name] = _price_from_json(name, value, Path(path))
        return cls(dict(DEFAULT_PRICES), overrides=overrides, catalog=catalog)

    def prepare(self) -> None:
        """An LLM call is under way: have the catalog ready by the time its response is priced."""
        if self.catalog is not None:
            self.catalog.prepare()

    def price_for(self, model: str | None) -> Price | None:
        """The price a table gives this model (the operator's, else the built-in), without the catalog."""
        return _lookup(self.overrides, model) or _lookup(self.prices, model)

    def cost(self, usage: Usage) -> float | None:
        """The response's cost in USD, or None for a model nobody prices (never a guess)."""
        price = _lookup(self.overrides, usage.model)
        if price is None and self.catalog is not None:
            cost = self.catalog.cost(usage)
            if cost is not None:
                return cost
        if price is None:
            price = _lookup(self.prices, usage.model)
        if price is None:
            return None
        read = price.cache_read if price.cache_read is not None else price.input
        write = price.cache_write if price.cache_write is not None else price.input
        total = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
        )
        return round(total / 1_000_000, 10)


def _lookup(prices: dict[str, Price], model: str | None) -> Price | None:
    if not model or not prices:
        return None
    wanted = _normalise_model(model)
    best: str | None = None
    for prefix in prices:
        if wanted == prefix or (wanted.startswith(prefix) and wanted[len(prefix)] in _BOUNDARY):
            if best is None or len(prefix) > len(best):
                best = prefix
    return prices[best] if best is not None else None
