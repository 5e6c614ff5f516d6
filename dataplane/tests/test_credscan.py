"""The credential scan: every encoding, every alignment, every chunk boundary, headers and outbound requests."""

from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.parse
import zlib

import brotli
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from dataplane import credscan
from dataplane.credscan import MARK, Matcher, StreamRedactor, matcher_for, redact_headers, scan_request

SECRET = b"ghp_Zq8/xY+3kL0pQ.rs~T_9vW-uN2mB7cD"  # has '/', '+', '.', '~' and '-': every escaping differs
OTHER = b"sk-live-0123456789abcdefABCDEF"

secrets_st = st.binary(min_size=12, max_size=64)
surround_st = st.binary(max_size=40)


def encodings(secret: bytes, prefix: bytes = b"", suffix: bytes = b"") -> dict[str, bytes]:
    """The secret inside surrounding bytes, in every encoding an upstream or an agent might use."""
    whole = prefix + secret + suffix
    text = secret.decode("latin-1")
    out = {
        "plain": whole,
        "quote": urllib.parse.quote(whole, safe="").encode(),
        "quote-default": urllib.parse.quote(whole).encode(),
        "quote_plus": urllib.parse.quote_plus(whole).encode(),
        "quote-lower": re.sub(
            r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(whole, safe="")
        ).encode(),
        "every-byte-percent": (prefix + "".join(f"%{b:02x}" for b in secret).encode() + suffix),
        "base64": base64.b64encode(whole),
        "base64-unpadded": base64.b64encode(whole).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(whole),
        "base64url-unpadded": base64.urlsafe_b64encode(whole).rstrip(b"="),
        "hex": whole.hex().encode(),
        "HEX": whole.hex().upper().encode(),
        "json": json.dumps(text).encode(),
        "json-native": json.dumps(text, ensure_ascii=False).encode(),
        "json-slash": json.dumps(text).replace("/", "\\/").encode(),
        "json-every-char": ("".join(f"\\u{ord(c):04x}" for c in text)).encode(),
    }
    return out


# --- forms ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5])
def test_a_base64_core_is_in_the_encoding_whatever_precedes_the_token(offset):
    prefix = b"x" * offset
    for suffix in (b"", b"a", b"ab", b"abc"):
        encoded = base64.b64encode(prefix + SECRET + suffix)
        assert any(core in encoded for core in credscan.base64_cores(SECRET)), (offset, suffix)
        url = base64.urlsafe_b64encode(prefix + SECRET + suffix)
        assert any(core in url for core in credscan.base64_cores(SECRET)), (offset, suffix)


@pytest.mark.parametrize("user", [b"", b"u", b"ab", b"alice", b"x-access-token", b"api"])
def test_http_basic_user_token_and_token_colon_are_found(user):
    matcher = Matcher([SECRET])
    header = b"Basic " + base64.b64encode(user + b":" + SECRET)
    assert matcher.first(header) == 0
    assert matcher.first(b"Basic " + base64.b64encode(SECRET + b":")) == 0


@pytest.mark.parametrize("name", sorted(encodings(SECRET)))
def test_every_encoding_is_found_and_redacted(name):
    matcher = Matcher([OTHER, SECRET])
    data = encodings(SECRET, b"before ", b" after")[name]
    assert matcher.first(data) == 1
    redacted, count = matcher.redact(data)
    assert count >= 1 and MARK in redacted
    assert matcher.first(redacted) is None


@settings(max_examples=200, deadline=None)
@given(secret=secrets_st, prefix=surround_st, suffix=surround_st, name=st.sampled_from(sorted(encodings(SECRET))))
def test_any_secret_in_any_encoding_with_anything_around_it_is_found(secret, prefix, suffix, name):
    matcher = Matcher([secret])
    assume(matcher.first(MARK) is None)  # a "secret" that the mark itself spells out
    data = encodings(secret, prefix, suffix)[name]
    assert matcher.first(data) == 0
    assert matcher.first(matcher.redact(data)[0]) is None


def test_short_derived_forms_are_left_out_so_ordinary_data_does_not_match():
    assert credscan.secret_forms(b"abc") == frozenset()
    assert all(len(f) >= credscan.MIN_DERIVED or f == b"abcd" for f in credscan.secret_forms(b"abcd"))


def test_the_matcher_never_shows_its_plaintexts():
    assert SECRET.decode() not in repr(Matcher([SECRET]))


def test_a_matcher_is_built_once_per_set_of_credentials():
    first = matcher_for([SECRET, OTHER])
    assert matcher_for([OTHER, SECRET]) is first
    assert matcher_for([SECRET]) is not first


def test_it_tells_which_credential_it_found():
    matcher = Matcher([SECRET, OTHER])
    assert matcher.first(b"x" + base64.b64encode(b"::" + OTHER)) == 1
    assert matcher.first(b"nothing here") is None


# --- streaming redaction ----------------------------------------------------------------------------------


def stream(redactor: StreamRedactor, chunks: list[bytes]) -> bytes:
    return b"".join(redactor(c) for c in [*chunks, b""])


@pytest.mark.parametrize("name", sorted(encodings(SECRET)))
def test_a_body_split_at_every_byte_never_shows_the_secret(name):
    matcher = Matcher([SECRET])
    body = encodings(SECRET, b'{"echo": "', b'", "more": 1}')[name]
    for cut in range(1, len(body)):
        out = stream(StreamRedactor(matcher), [body[:cut], body[cut:]])
        assert matcher.first(out) is None, cut
        assert MARK in out


@settings(max_examples=200, deadline=None)
@given(
    secret=secrets_st,
    prefix=surround_st,
    suffix=surround_st,
    name=st.sampled_from(sorted(encodings(SECRET))),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
# UTF-8 bytes that a JSON writer escaped one character per byte (\u00c2\u0080, not \u0080)
@example(secret=b"\x00" * 9 + b"\xc2\x80\x00", prefix=b"", suffix=b"", name="json", cuts=[])
def test_any_chunking_of_any_encoding_is_redacted(secret, prefix, suffix, name, cuts):
    matcher = Matcher([secret])
    assume(matcher.first(MARK) is None)
    body = encodings(secret, prefix, suffix)[name] * 2
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if body[a:b]]
    redactor = StreamRedactor(matcher)
    out = stream(redactor, chunks)
    assert matcher.first(out) is None
    assert redactor.count >= 1  # two adjacent copies are one redacted place


def test_a_body_without_a_credential_passes_unchanged_and_is_not_held_back():
    matcher = Matcher([SECRET])
    redactor = StreamRedactor(matcher)
    assert redactor(b"data: hello\n\n") == b"data: hello\n\n"  # nothing could begin a form: nothing held
    assert redactor(b"data: ghp_") == b"data: "  # may begin the secret: held until the next chunk
    assert redactor(b"zzz\n\n") == b"ghp_zzz\n\n"
    assert redactor(b"") == b""


def test_the_end_of_the_stream_releases_a_partial_form():
    redactor = StreamRedactor(Matcher([SECRET]))
    assert redactor(b"tail " + SECRET[:10]) == b"tail "
    assert redactor(b"") == SECRET[:10]


def test_a_form_followed_by_the_start_of_another_is_redacted_and_the_start_held():
    matcher = Matcher([SECRET])
    redactor = StreamRedactor(matcher)
    first = redactor(b"a" + SECRET + SECRET[:5])
    assert first == b"a" + MARK
    assert redactor(SECRET[5:] + b"!") == MARK + b"!"


# --- headers ----------------------------------------------------------------------------------------------


def test_every_response_header_is_redacted_location_and_set_cookie_included():
    matcher = Matcher([SECRET])
    b64 = base64.b64encode(b"x:" + SECRET)
    fields = (
        (b"Location", b"https://evil.example/?t=" + urllib.parse.quote(b64, safe="").encode()),
        (b"Set-Cookie", b"s=" + base64.urlsafe_b64encode(SECRET).rstrip(b"=") + b"; Path=/"),
        (b"X-Echo", b"Bearer " + SECRET),
        (b"X-" + SECRET.hex().encode(), b"1"),
        (b"Content-Type", b"application/json"),
    )
    redacted, count = redact_headers(matcher, fields)
    assert count == 4
    assert redacted[-1] == (b"Content-Type", b"application/json")
    assert all(matcher.first(n) is None and matcher.first(v) is None for n, v in redacted)


# --- outbound scan ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(encodings(SECRET)))
def test_a_request_carrying_the_secret_anywhere_is_found(name):
    matcher = Matcher([OTHER, SECRET])
    data = encodings(SECRET, b"k=", b"&z=1")[name]
    assert scan_request(matcher, fields=[(b"X-Note", data)]) == credscan.Found(1, "header X-Note")
    assert scan_request(matcher, target=b"/p?" + data) is not None
    assert scan_request(matcher, body=b'{"a": "' + data + b'"}') == credscan.Found(1, "body")


def test_mixed_escapes_are_read_decoded():
    matcher = Matcher([SECRET])
    half = len(SECRET) // 2
    mixed = SECRET[:half] + "".join(f"%{b:02X}" for b in SECRET[half:]).encode()
    assert scan_request(matcher, target=b"/?q=" + mixed) == credscan.Found(0, "query")
    json_mixed = SECRET[:half] + "".join(f"\\u{b:04x}" for b in SECRET[half:]).encode()
    assert scan_request(matcher, body=json_mixed) == credscan.Found(0, "body")
    assert scan_request(matcher, body=json.dumps({"x": json_mixed.decode()}).encode()) == credscan.Found(0, "body")
    b64_in_query = urllib.parse.quote(base64.b64encode(b"u:" + SECRET)).encode()
    assert scan_request(matcher, target=b"/x?auth=" + b64_in_query) == credscan.Found(0, "query")


def test_it_says_where_without_the_value():
    matcher = Matcher([SECRET])
    assert scan_request(matcher, target=b"/" + SECRET.hex().encode()) == credscan.Found(0, "path")
    assert scan_request(matcher, host=SECRET.hex().encode() + b".evil.example") == credscan.Found(0, "host")
    split = SECRET.hex()[:40] + "." + SECRET.hex()[40:]
    assert scan_request(matcher, host=split.encode() + b".evil.example") == credscan.Found(0, "host")
    assert scan_request(matcher, fields=[(b"x-" + SECRET.hex().encode(), b"1")]) == credscan.Found(0, "a header's name")


def test_a_clean_request_is_not_found_and_an_empty_matcher_finds_nothing():
    matcher = Matcher([SECRET])
    fields = [(b"Authorization", b"Bearer placeholder"), (b"Content-Type", b"application/json")]
    assert scan_request(matcher, target=b"/repos/a/b?per_page=100", fields=fields, body=b'{"x": "%41\\u0041"}') is None
    assert scan_request(Matcher([]), body=SECRET) is None


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
    ],
)
def test_a_compressed_body_is_scanned_decoded(encoding, encode):
    matcher = Matcher([SECRET])
    body = credscan.decode_body(encode(b"x" * 100 + SECRET), encoding)
    assert scan_request(matcher, body=body) == credscan.Found(0, "body")


def test_a_body_that_decodes_beyond_the_limit_or_in_an_unknown_encoding_is_undecodable():
    with pytest.raises(credscan.Undecodable):
        credscan.decode_body(gzip.compress(b"\0" * 10_000), "gzip", limit=1000)
    with pytest.raises(credscan.Undecodable):
        credscan.decode_body(b"whatever", "compress")
    with pytest.raises(credscan.Undecodable):
        credscan.decode_body(b"not gzip", "gzip")


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_every_member_of_a_multi_member_body_is_scanned_not_only_the_first(encoding, encode):
    # Python's gzip, Go's compress/gzip and zcat read every member: so does the scan.
    body = credscan.decode_body(encode(b"hi ") + encode(b"x" * 10) + encode(SECRET), encoding)
    assert scan_request(Matcher([SECRET]), body=body) == credscan.Found(0, "body")


def test_many_members_are_still_bounded_and_trailing_garbage_is_undecodable():
    with pytest.raises(credscan.Undecodable):
        credscan.decode_body(gzip.compress(b"\0" * 600) + gzip.compress(b"\0" * 600), "gzip", limit=1000)
    with pytest.raises(credscan.Undecodable):
        credscan.decode_body(gzip.compress(b"hi") + b"not a member", "gzip")
    assert credscan.decode_body(gzip.compress(b"hi") + b"\0" * 8, "gzip") == b"hi"


def test_inputs_remembered_clean_never_hide_a_credential_and_the_memory_is_bounded() -> None:
    from dataplane import credscan, exfil

    secret = b"sk-remembered-" + b"q7" * 12
    matcher = credscan.Matcher([secret])
    assert exfil.redact_value(matcher, b"accept: application/json") == (b"accept: application/json", 0)
    assert matcher.known_clean(b"accept: application/json")
    assert exfil.redact_value(matcher, b"accept: application/json") == (b"accept: application/json", 0)
    redacted, count = exfil.redact_value(matcher, b"accept: application/json " + secret)
    assert count and secret not in redacted
    # a host read once as text is still read across its labels when it is a host
    split = secret[:10] + b"." + secret[10:]
    exfil.redact_value(matcher, split)
    assert exfil.redact_value(matcher, split, host=True)[0] == credscan.MARK
    for n in range(credscan.CLEAN_MEMO + 10):
        matcher.note_clean(b"value %d" % n)
    assert len(matcher._clean) <= credscan.CLEAN_MEMO
    matcher.note_clean(b"x" * (credscan.CLEAN_MAX + 1))
    assert not matcher.known_clean(b"x" * (credscan.CLEAN_MAX + 1))
    assert credscan.scan_request(matcher, target=b"/a?" + secret) is not None


# --- audit records ------------------------------------------------------------------------------------------

_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["api.github.com", "/repos/a/b", "%2F", "\\u0041", 'say "hi"', "a.b.c"]),
)


def _record_st(secret: bytes) -> st.SearchStrategy[dict[str, object]]:
    forms = [v.decode("latin-1") for v in encodings(secret, b"k=", b"&").values()]
    split_host = secret.hex()[:20] + "." + secret.hex()[20:] + ".example.com"
    leaf = st.one_of(_texts, st.sampled_from([*forms, split_host]), st.integers(), st.none(), st.booleans())
    values = st.recursive(
        leaf,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_texts, inner, max_size=3)),
        max_leaves=8,
    )
    keys = st.one_of(st.sampled_from(["host", "path", "reason", "args", "error"]), _texts)
    return st.dictionaries(keys, values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_an_audit_record_read_whole_is_scrubbed_exactly_as_field_by_field(data: st.DataObject) -> None:
    from dataplane import exfil

    record = data.draw(_record_st(SECRET))
    matcher = Matcher([SECRET, OTHER])
    field_by_field = {
        exfil._redact_text(matcher, str(k)): exfil._scrub(matcher, v, key=str(k))  # noqa: SLF001
        for k, v in record.items()
    }
    assert exfil.scrub_record(matcher, record) == field_by_field
    if exfil._clean_whole(matcher, record):  # noqa: SLF001 - the fast path found nothing: nor did the slow one
        assert field_by_field == {str(k): v for k, v in record.items()} or any(not isinstance(k, str) for k in record)


def _split_host(secret: bytes) -> str:
    return secret.hex()[:20] + "." + secret.hex()[20:] + ".example.com"


@pytest.mark.parametrize(
    "record",
    [
        {"host": _split_host(SECRET)},  # only a host is read across its labels
        {"args": {"host": _split_host(SECRET)}, "path": "/x"},
        {"reason": f"%{SECRET[0]:02X}" + SECRET.decode()[1:]},  # escaped in part
        {"error": 'said "' + SECRET.decode() + '"'},  # a quote: the line is not verbatim
        {"args": {SECRET.hex(): 1}},  # a key
        {"args": [[[[[[[[[[{"deep": base64.b64encode(b"u:" + SECRET).decode()}]]]]]]]]]]},
    ],
)
def test_an_audit_record_holding_a_credential_is_redacted_wherever_it_is(record: dict[str, object]) -> None:
    from dataplane import exfil

    matcher = Matcher([SECRET])
    assert not exfil._clean_whole(matcher, record)  # noqa: SLF001
    scrubbed = json.dumps(exfil.scrub_record(matcher, record)).encode()
    assert matcher.first(scrubbed) is None and MARK.decode() in scrubbed.decode()
    clean = {"host": "api.github.com", "path": "/repos/a/b", "args": {"q": ["x"]}, "reason": "%41 ok"}
    assert exfil._clean_whole(matcher, clean) and exfil.scrub_record(matcher, clean) is clean  # noqa: SLF001


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_headers_read_together_are_redacted_exactly_as_one_by_one(data: st.DataObject) -> None:
    from dataplane import exfil

    forms = list(encodings(SECRET, b"k=", b"&").values())
    part = st.one_of(st.binary(max_size=20), st.sampled_from([*forms, b"%", b"\\u00", b"\\", b"%4"]))
    field = st.tuples(part, st.lists(part, max_size=3).map(b"".join))
    fields = data.draw(st.lists(field, max_size=6))
    matcher = Matcher([SECRET, OTHER])
    one_by_one = []
    count = 0
    for name, value in fields:
        name, n = exfil.redact_value(matcher, name)
        value, v = exfil.redact_value(matcher, value)
        one_by_one.append((name, value))
        count += n + v
    together, found = exfil._redact_fields(matcher, fields)  # noqa: SLF001
    assert list(together) == one_by_one and found == count


def _gzip_with(*, name: bytes = b"", comment: bytes = b"", extra: bytes = b"", data: bytes = b"{}") -> bytes:
    flags = (0x04 if extra else 0) | (0x08 if name else 0) | (0x10 if comment else 0)
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if extra:
        head += len(extra).to_bytes(2, "little") + extra
    if name:
        head += name + b"\0"
    if comment:
        head += comment + b"\0"
    deflate = zlib.compressobj(wbits=-15)
    body = deflate.compress(data) + deflate.flush()
    return head + body + (zlib.crc32(data)).to_bytes(4, "little") + len(data).to_bytes(4, "little")


def test_a_credential_riding_where_no_decoder_looks_is_found_in_the_bytes_as_sent() -> None:
    """Outside attack: gzip's name, comment and extra fields, zstd skippable frames and a second zstd frame
    carried a credential past a scan of the decoded body only."""
    from backports import zstd

    matcher = Matcher([SECRET])
    skippable = b"\x50\x2a\x4d\x18" + len(SECRET).to_bytes(4, "little") + SECRET
    carriers = {
        "gzip name": (_gzip_with(name=SECRET), "gzip"),
        "gzip comment": (_gzip_with(comment=SECRET), "gzip"),
        "gzip extra": (_gzip_with(extra=SECRET), "gzip"),
        "zstd skippable first": (skippable + zstd.compress(b"{}"), "zstd"),
        "zstd skippable last": (zstd.compress(b"{}") + skippable, "zstd"),
        "zstd second frame": (zstd.compress(b'{"a":') + zstd.compress(b'"' + SECRET + b'"}'), "zstd"),
    }
    for what, (body, encoding) in carriers.items():
        assert gzip.decompress(body) == b"{}" if encoding == "gzip" else True
        found = credscan.scan_body(matcher, body, encoding)
        assert found is not None and found.where == "body", what
    assert credscan.decode_body(carriers["zstd second frame"][0], "zstd") == b'{"a":"' + SECRET + b'"}'
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(b"{}") + raw.flush()
    with pytest.raises(credscan.Undecodable, match="after its end"):
        credscan.decode_body(deflated + b"anything", "deflate")
    assert credscan.decode_body(deflated + b"\0\0", "deflate") == b"{}"  # zero padding, as readers skip it
    assert credscan.scan_body(matcher, gzip.compress(b"clean"), "gzip") is None
