"""Token usage and cost read from Anthropic, OpenAI and Gemini responses, whole or streamed."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from dataplane.usage import MAX_JSON_BYTES, PriceTable, Usage, UsageParser, provider_for


def parse(provider: str, body: bytes, content_type: str, *, chunk: int = 0, request_model: str | None = None) -> Any:
    parser = UsageParser(provider=provider, content_type=content_type, request_model=request_model)
    if chunk:
        for i in range(0, len(body), chunk):
            parser.feed(body[i : i + chunk])
    else:
        parser.feed(body)
    return parser.result()


def sse(*events: tuple[str | None, Any]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        payload = data if isinstance(data, str) else json.dumps(data)
        out += f"data: {payload}\n\n".encode()
    return out


# --- captured-shape payloads -----------------------------------------------------------------------------

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello! How can I help?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 9,
        "service_tier": "standard",
    },
}

ANTHROPIC_STREAM = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-opus-4-5-20251101",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 1024,
                    "output_tokens": 2,
                },
            },
        },
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Here is the usage"}},
    ),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

OPENAI_CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The image shows a wooden boardwalk.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def _chat_chunk(
    delta: dict[str, Any], finish: str | None = None, usage: Any = None, choices: bool = True
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4.1-mini-2025-04-14",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
        "usage": usage,
    }


OPENAI_CHAT_STREAM = sse(
    (None, _chat_chunk({"role": "assistant", "content": ""})),
    (None, _chat_chunk({"content": "Hello"})),
    (None, _chat_chunk({"content": " there"})),
    (None, _chat_chunk({}, finish="stop")),
    (
        None,
        _chat_chunk(
            {},
            usage={
                "prompt_tokens": 2048,
                "completion_tokens": 12,
                "total_tokens": 2060,
                "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            choices=False,
        ),
    ),
    (None, "[DONE]"),
)

OPENAI_RESPONSE = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "model": "gpt-5-2025-08-07",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "In a peaceful grove...", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 123,
    },
}

_response_in_progress = {**OPENAI_RESPONSE, "status": "in_progress", "output": [], "usage": None}
OPENAI_RESPONSES_STREAM = sse(
    ("response.created", {"type": "response.created", "sequence_number": 0, "response": _response_in_progress}),
    ("response.in_progress", {"type": "response.in_progress", "sequence_number": 1, "response": _response_in_progress}),
    (
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
        },
    ),
    (
        "response.completed",
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                **OPENAI_RESPONSE,
                "usage": {
                    "input_tokens": 1500,
                    "input_tokens_details": {"cached_tokens": 1000},
                    "output_tokens": 300,
                    "output_tokens_details": {"reasoning_tokens": 256},
                    "total_tokens": 1800,
                },
            },
        },
    ),
)

GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {"parts": [{"text": "A haiku about usage."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1200,
        "candidatesTokenCount": 40,
        "totalTokenCount": 1340,
        "cachedContentTokenCount": 1000,
        "thoughtsTokenCount": 100,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "aWB8aKnEEqGDz7IPq8ijqAs",
}

GEMINI_STREAM = sse(
    (
        None,
        {
            "candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r1",
        },
    ),
    (
        None,
        {
            "candidates": [
                {"content": {"parts": [{"text": " end."}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 20, "totalTokenCount": 28},
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r1",
        },
    ),
)


# --- the formats ---------------------------------------------------------------------------------------


def test_it_reads_an_anthropic_message() -> None:
    usage = parse("anthropic", json.dumps(ANTHROPIC_MESSAGE).encode(), "application/json")
    assert usage == Usage(
        "anthropic", "claude-sonnet-4-5-20250929", 12, 9, cache_read_tokens=2000, cache_write_tokens=1000
    )


def test_it_reads_an_anthropic_stream_with_the_cumulative_output_count_of_message_delta() -> None:
    usage = parse("anthropic", ANTHROPIC_STREAM, "text/event-stream; charset=utf-8", chunk=7)
    assert usage == Usage("anthropic", "claude-opus-4-5-20251101", 472, 89, cache_read_tokens=1024)


def test_a_message_delta_that_repeats_input_counts_replaces_them() -> None:
    stream = ANTHROPIC_STREAM.replace(
        b'"usage": {"output_tokens": 89}',
        b'"usage": {"output_tokens": 90, "input_tokens": 500, "cache_read_input_tokens": 0}',
    )
    usage = parse("anthropic", stream, "text/event-stream")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (500, 90, 0)


def test_it_reads_an_openai_chat_completion_and_counts_cached_input_apart() -> None:
    usage = parse("openai", json.dumps(OPENAI_CHAT).encode(), "application/json")
    assert usage == Usage("openai", "gpt-4o-2024-08-06", 1117 - 1024, 46, cache_read_tokens=1024)


def test_it_reads_the_usage_chunk_of_an_openai_chat_stream() -> None:
    usage = parse("openai", OPENAI_CHAT_STREAM, "text/event-stream", chunk=64)
    assert usage == Usage("openai", "gpt-4.1-mini-2025-04-14", 512, 12, cache_read_tokens=1536)


def test_a_chat_stream_without_include_usage_has_no_usage() -> None:
    stream = sse((None, _chat_chunk({"content": "Hello"})), (None, _chat_chunk({}, finish="stop")), (None, "[DONE]"))
    assert parse("openai", stream, "text/event-stream") is None


def test_it_reads_an_openai_response() -> None:
    usage = parse("openai", json.dumps(OPENAI_RESPONSE).encode(), "application/json")
    assert usage == Usage("openai", "gpt-5-2025-08-07", 36, 87)


def test_it_reads_response_completed_of_an_openai_responses_stream() -> None:
    usage = parse("openai", OPENAI_RESPONSES_STREAM, "text/event-stream", chunk=100)
    assert usage == Usage("openai", "gpt-5-2025-08-07", 500, 300, cache_read_tokens=1000)


def test_openai_cache_writes_are_counted_apart_from_input() -> None:
    body = {
        **OPENAI_CHAT,
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 60},
        },
    }
    usage = parse("openai", json.dumps(body).encode(), "application/json")
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (30, 10, 60)


def test_it_reads_gemini_generate_content_with_thoughts_as_output() -> None:
    usage = parse("gemini", json.dumps(GEMINI_RESPONSE).encode(), "application/json; charset=UTF-8")
    assert usage == Usage("gemini", "gemini-2.5-flash", 200, 140, cache_read_tokens=1000)


def test_it_reads_the_last_usage_of_a_gemini_sse_stream() -> None:
    usage = parse("gemini", GEMINI_STREAM, "text/event-stream", chunk=33)
    assert usage == Usage("gemini", "gemini-2.5-pro", 8, 20)


def test_it_reads_a_gemini_stream_sent_as_one_json_array() -> None:
    events = [json.loads(line[6:]) for line in GEMINI_STREAM.decode().splitlines() if line.startswith("data: ")]
    usage = parse("gemini", json.dumps(events, indent=2).encode(), "application/json", chunk=50)
    assert usage == Usage("gemini", "gemini-2.5-pro", 8, 20)


def test_the_request_model_names_a_response_that_does_not() -> None:
    body = {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}}
    usage = parse("gemini", json.dumps(body).encode(), "application/json", request_model="gemini-2.0-flash")
    assert usage is not None and usage.model == "gemini-2.0-flash"


def test_a_stream_with_crlf_line_ends_and_no_final_blank_line_still_counts() -> None:
    stream = ANTHROPIC_STREAM.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    usage = parse("anthropic", stream, "text/event-stream", chunk=5)
    assert usage is not None and usage.output_tokens == 89


def test_a_stream_labelled_as_json_is_recognised_by_its_first_bytes() -> None:
    assert parse("openai", OPENAI_CHAT_STREAM, "application/json").output_tokens == 12


def test_a_compressed_json_body_handed_over_by_mistake_is_decoded() -> None:
    usage = parse("openai", gzip.compress(json.dumps(OPENAI_CHAT).encode()), "application/json")
    assert usage is not None and usage.output_tokens == 46


@pytest.mark.parametrize(
    ("provider", "stream"),
    [("anthropic", ANTHROPIC_STREAM), ("openai", OPENAI_CHAT_STREAM), ("openai", OPENAI_RESPONSES_STREAM)],
)
def test_a_stream_split_at_every_byte_position_reads_the_same(provider: str, stream: bytes) -> None:
    whole = parse(provider, stream, "text/event-stream")
    assert whole is not None
    for cut in range(len(stream) + 1):
        parser = UsageParser(provider=provider, content_type="text/event-stream")
        parser.feed(stream[:cut])
        parser.feed(stream[cut:])
        assert parser.result() == whole, cut


def test_a_stream_fed_byte_by_byte_reads_the_same() -> None:
    parser = UsageParser(provider="anthropic", content_type="text/event-stream")
    for i in range(len(ANTHROPIC_STREAM)):
        parser.feed(ANTHROPIC_STREAM[i : i + 1])
    assert parser.result() == parse("anthropic", ANTHROPIC_STREAM, "text/event-stream")


def test_a_json_body_over_the_buffer_bound_still_yields_its_usage() -> None:
    body = {
        **OPENAI_CHAT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * (3 * MAX_JSON_BYTES)}}],
    }
    parser = UsageParser(provider="openai", content_type="application/json")
    raw = json.dumps(body).encode()
    for i in range(0, len(raw), 65536):
        parser.feed(raw[i : i + 65536])
    assert len(parser._body) <= MAX_JSON_BYTES and len(parser._tail) <= 2 * 256 * 1024 + 65536
    assert parser.result() == Usage("openai", "gpt-4o-2024-08-06", 93, 46, cache_read_tokens=1024)


def test_an_overlong_sse_line_is_dropped_without_unbounded_buffering() -> None:
    huge = b"data: " + b"y" * (3 * 1024 * 1024) + b"\n\n"
    parser = UsageParser(provider="openai", content_type="text/event-stream")
    for i in range(0, len(huge), 65536):
        parser.feed(huge[i : i + 65536])
        assert len(parser._partial) <= 1024 * 1024 + 65536
    parser.feed(OPENAI_CHAT_STREAM)
    assert parser.result() is not None and parser.result().output_tokens == 12  # type: ignore[union-attr]


def test_error_bodies_and_usage_free_responses_have_no_usage() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert parse("anthropic", json.dumps(error).encode(), "application/json") is None
    assert parse("openai", b"", "application/json") is None
    assert parse("gemini", b"<html>502 Bad Gateway</html>", "text/html") is None


@pytest.mark.parametrize("provider", ["anthropic", "openai", "gemini", "other"])
@pytest.mark.parametrize("content_type", ["text/event-stream", "application/json", ""])
def test_garbage_never_raises(provider: str, content_type: str) -> None:
    rng = random.Random(f"{provider}{content_type}")
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(40)] + [
        b"data: {\n\n",
        b'data: {"usage": 5}\n\n',
        b'data: {"usage": {"prompt_tokens": "many", "completion_tokens": -3}}\n\n',
        b'data: {"usageMetadata": [1, 2]}\n\n',
        b'data: {"type": "message_start", "message": null}\n\n',
        b'data: {"type": "message_delta", "usage": {"output_tokens": 1e400}}\n\n',
        b'{"usage": {"input_tokens": true, "output_tokens": 1.5}}',
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        b"\x1f\x8b\x08\x00garbage",
        b'{"usage": {"input_tokens": 1' + b"[" * 100_000,
        b"data: " + b"[" * 200_000 + b"usage\n\n",
    ]
    for sample in samples:
        parser = UsageParser(provider=provider, content_type=content_type)
        for i in range(0, len(sample), 13):
            parser.feed(sample[i : i + 13])
        result = parser.result()
        assert result is None or isinstance(result, Usage)


def test_malformed_counts_are_ignored_not_trusted() -> None:
    body = {"model": "gpt-4o", "usage": {"prompt_tokens": -5, "completion_tokens": "12"}}
    usage = parse("openai", json.dumps(body).encode(), "application/json")
    assert usage is None or (usage.input_tokens >= 0 and usage.output_tokens == 0)


def test_only_the_billed_llm_actions_have_a_provider() -> None:
    assert provider_for("anthropic", "create-message") == "anthropic"
    assert provider_for("openai", "create-chat-completion") == "openai"
    assert provider_for("openai", "create-response") == "openai"
    assert provider_for("gemini", "generate-content") == "gemini"
    assert provider_for("gemini", "stream-generate-content") == "gemini"
    assert provider_for("anthropic", "count-tokens") is None
    assert provider_for("openai", "list-models") is None
    assert provider_for("github", "create-message") is None


def test_the_action_ids_exist_in_the_builtin_connectors() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2] / "connectors" / "builtin"
    for connector, action in [
        ("anthropic", "create-message"),
        ("openai", "create-chat-completion"),
        ("openai", "create-response"),
        ("gemini", "generate-content"),
        ("gemini", "stream-generate-content"),
    ]:
        spec = tomllib.loads((root / connector / "connector.toml").read_text())
        assert action in {a["id"] for a in spec["actions"]}, (connector, action)


def test_usage_serialises_to_a_plain_dict() -> None:
    usage = Usage("openai", "gpt-4o", 1, 2, cost_usd=0.5)
    assert usage.as_dict() == {
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": 0.5,
    }


# --- prices --------------------------------------------------------------------------------------------


def test_the_built_in_table_prices_each_family_by_its_longest_prefix() -> None:
    table = PriceTable.load(None, with_catalog=False)
    sonnet = Usage("anthropic", "claude-sonnet-4-5-20250929", 1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert table.cost(sonnet) == pytest.approx(3 + 15 + 0.3 + 3.75)
    assert table.cost(Usage("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 0)) == pytest.approx(0.15)
    assert table.cost(Usage("openai", "gpt-4o-2024-08-06", 1_000_000, 0)) == pytest.approx(2.5)
    assert table.cost(Usage("gemini", "models/gemini-2.5-flash-lite", 0, 1_000_000)) == pytest.approx(0.4)
    assert table.cost(Usage("anthropic", "claude-opus-4-5@20251101", 0, 1_000_000)) == pytest.approx(25)


def test_an_unknown_or_missing_model_costs_none_not_a_guess() -> None:
    table = PriceTable.load(None)
    assert table.cost(Usage("openai", "gpt-9-turbo", 10, 10)) is None
    assert table.cost(Usage("anthropic", "claude-nonesuch-1", 10, 10)) is None
    assert table.cost(Usage("openai", None, 10, 10)) is None
    built_in = PriceTable.load(None, with_catalog=False)
    assert built_in.cost(Usage("openai", "gpt-5.9", 10, 10)) is None  # not gpt-5's price
    assert built_in.cost(Usage("anthropic", "claude-opus-4-7", 10, 10)) is None  # not claude-opus-4's price


# The catalog (genai-prices 0.2.5, pinned) is what prices a model the built-in table does not know, such as
# claude-opus-5-5, Claude Code's default model: $4 input, $20 output, $0.20 cache read, $5 cache write per MTok.
OPUS_5_5 = Usage("anthropic", "claude-opus-5-5", 1_000_000, 1_000_000, 1_000_000, 1_000_000)


def test_the_catalog_prices_what_the_built_in_table_does_not_know_with_cache_tokens_at_their_own_price() -> None:
    assert PriceTable.load(None, with_catalog=False).cost(OPUS_5_5) is None
    table = PriceTable.load(None)
    assert table.cost(OPUS_5_5) == pytest.approx(4 + 20 + 0.2 + 5)
    assert table.cost(Usage("anthropic", "claude-opus-5-5-20261001", 0, 1_000_000)) == pytest.approx(20)
    assert table.cost(Usage("gemini", "models/gemini-2.5-flash", 1_000_000, 0, 1_000_000)) == pytest.approx(0.3 + 0.03)
    assert table.cost(Usage("openai", "gpt-5.1", 2_000_000, 0, 1_000_000)) == pytest.approx(2.5 + 0.125)


def test_the_catalog_prices_long_prompts_at_their_tier_which_the_built_in_table_cannot() -> None:
    long = Usage("anthropic", "claude-sonnet-4-5-20250929", 300_000, 0)  # over the 200k-token threshold
    assert PriceTable.load(None, with_catalog=False).cost(long) == pytest.approx(0.3 * 3)
    assert PriceTable.load(None).cost(long) == pytest.approx(0.3 * 6)


def test_the_operators_table_beats_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"claude-opus-5-5": {"input": 1, "output": 1}}))
    assert PriceTable.load(path).cost(OPUS_5_5) == pytest.approx(1 + 1 + 1 + 1)
    assert PriceTable.load(path).cost(Usage("openai", "gpt-5.1", 1_000_000, 0)) == pytest.approx(1.25)


def test_without_the_catalog_the_built_in_table_still_prices_and_nothing_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # `import genai_prices` raises ImportError
    table = PriceTable.load(None)
    table.prepare()
    assert table.cost(Usage("anthropic", "claude-haiku-4-5", 1_000_000, 0)) == pytest.approx(1)
    assert table.cost(OPUS_5_5) is None
    assert table.catalog is not None and "genai-prices cannot be imported" in (table.catalog.error or "")
    assert "the built-in table prices what it knows" in caplog.text


def test_a_catalog_failure_on_one_model_falls_back_to_the_built_in_price(monkeypatch: pytest.MonkeyPatch) -> None:
    table = PriceTable.load(None)
    assert table.catalog is not None and table.catalog.ready()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the catalog")

    monkeypatch.setattr(table.catalog, "_calc", broken)
    assert table.cost(Usage("anthropic", "claude-haiku-4-5", 1_000_000, 0)) == pytest.approx(1)


@pytest.mark.parametrize("with_catalog", [True, False])
def test_a_price_file_overrides_and_extends_the_defaults(tmp_path: Path, with_catalog: bool) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"gpt-4o": {"input": 1, "output": 2}, "acme-llm": {"input": 4, "output": 8, "cache_read": 1}})
    )
    table = PriceTable.load(path, with_catalog=with_catalog)
    assert table.cost(Usage("openai", "gpt-4o-2024-08-06", 1_000_000, 1_000_000, 1_000_000)) == pytest.approx(1 + 2 + 1)
    assert table.cost(Usage("openai", "acme-llm-large", 500_000, 0, 1_000_000)) == pytest.approx(2 + 1)
    assert table.cost(Usage("anthropic", "claude-haiku-4-5", 1_000_000, 0)) == pytest.approx(1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must map model-name prefixes"),
        ('{"m": 5}', "must be an object"),
        ('{"m": {"input": 1}}', "m.output must be a non-negative number"),
        ('{"m": {"input": -1, "output": 1}}', "m.input must be a non-negative number"),
        ('{"m": {"input": 1, "output": 1, "cached": 1}}', "unknown fields"),
        ('{"m": {"input": "1", "output": 1}}', "m.input must be a non-negative number"),
        ('{"": {"input": 1, "output": 1}}', "may not be empty"),
    ],
)
def test_a_bad_price_file_is_a_one_line_value_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        PriceTable.load(path)
    assert "\n" not in str(raised.value)


def test_a_missing_price_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the price table"):
        PriceTable.load(tmp_path / "absent.json")


def test_a_damaged_event_does_not_stop_the_rest_of_the_stream_being_read() -> None:
    stream = b'data: {"usage": ' + b"[" * 100_000 + b'\n\ndata: {"usage": broken\n\n' + OPENAI_CHAT_STREAM
    assert parse("openai", stream, "text/event-stream", chunk=4096).output_tokens == 12
