"""The proxy's bounds as pure rules: request heads, the body budget, the problem for mitmproxy's own errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dataplane.limits import (
    BodyBudget,
    Limits,
    body_next_check,
    body_timeout_error,
    body_too_slow,
    head_problem,
    parse_body_timeout,
    request_line,
    response_head_problem,
)
from dataplane.reclaim import Reclaimer
from dataplane.server import StartupError, limits_from_environment, settings_from

SMALL = Limits(max_head_bytes=200, max_header_fields=3)


def test_a_complete_head_within_bounds_passes() -> None:
    assert head_problem(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\nbody", SMALL) is None


def test_a_partial_head_within_bounds_waits_for_more() -> None:
    assert head_problem(b"GET / HTTP/1.1\r\nHost: a\r\nX-A", SMALL) is None


def test_too_many_fields_are_refused_even_before_the_head_ends() -> None:
    assert "more than 3 header fields" in str(
        head_problem(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n", SMALL)
    )


def test_a_head_over_the_byte_limit_is_refused_whether_or_not_it_ends() -> None:
    endless = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 500
    assert "exceeds 200 bytes" in str(head_problem(endless, SMALL))
    assert "exceeds 200 bytes" in str(head_problem(endless + b"\r\n\r\n", SMALL))


def test_the_body_after_a_head_is_never_counted_as_headers() -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert head_problem(head + b"\n" * 10_000, SMALL) is None


def test_bare_lf_heads_are_measured_like_crlf_ones() -> None:
    assert head_problem(b"GET / HTTP/1.1\nA: 1\nB: 2\n\n", SMALL) is None
    assert head_problem(b"GET / HTTP/1.1\nA: 1\nB: 2\nC: 3\nD: 4\n\n", SMALL) is not None


def test_the_request_line_is_read_for_the_audit_record() -> None:
    assert request_line(b"POST /repos/a/b/issues HTTP/1.1\r\nHost") == ("POST", "/repos/a/b/issues")
    assert request_line(b"\x16\x03\x01garbage") == ("", "")


def test_the_budget_bounds_bodies_together_and_is_given_back() -> None:
    budget = BodyBudget(100)
    assert budget.reserve("a", 60)
    assert not budget.reserve("b", 50)
    assert budget.reserve("c", 40)
    budget.release("a")
    assert budget.in_use == 40
    assert budget.reserve("b", 50)
    budget.release("b")
    budget.release("c")
    budget.release("never-held")
    assert budget.in_use == 0


def test_one_owner_holds_no_more_than_its_share_and_others_keep_the_rest() -> None:
    budget = BodyBudget(100, share=40)
    assert budget.admit("a1", 30, owner="s1") is None
    refused = budget.admit("a2", 20, owner="s1")
    assert refused is not None and "this session has 30 of its 40 bytes" in refused
    assert budget.admit("b1", 40, owner="s2") is None  # another session is not refused meanwhile
    assert budget.admit("c1", 30, owner="s3") is None
    full = budget.admit("d1", 10, owner="s4")
    assert full is not None and "100 of 100 bytes" in full  # the whole budget still bounds them all
    budget.release("a1")
    assert budget.owned("s1") == 0 and budget.in_use == 70
    assert budget.admit("a2", 20, owner="s1") is None


def test_one_users_sessions_together_hold_no_more_than_the_users_share() -> None:
    budget = BodyBudget(100, share=20)  # a user's share: twice a session's
    assert budget.user_share == 40
    for n in range(2):
        assert budget.admit(f"s{n}", 20, owner=f"session-{n}", user="mallory") is None
    refused = budget.admit("s2", 20, owner="session-2", user="mallory")  # a third session of the same user
    assert refused is not None and "your sessions have 40 of their 40 bytes" in refused
    assert budget.admit("a", 20, owner="alice-session", user="alice") is None  # everyone else keeps the rest
    budget.release("s0")
    assert budget.owned("user:mallory") == 20 and budget.admit("s2", 20, owner="session-2", user="mallory") is None


def test_bodies_held_for_approval_leave_the_budget_of_bodies_being_sent() -> None:
    budget = BodyBudget(100, share=25)
    assert budget.waiting is not None and budget.waiting.capacity == 100 and budget.waiting.user_share == 25
    assert budget.admit("m1", 25, owner="mallory-1", user="mallory") is None
    assert budget.hold("m1") is None  # waits for people: counted in the pool of held bodies only
    assert budget.in_use == 0 and budget.waiting.in_use == 25 and budget.owned("user:mallory") == 0
    assert budget.admit("m2", 25, owner="mallory-1", user="mallory") is None
    refused = budget.hold("m2")  # a user's held bodies take at most a quarter of the pool
    assert refused is not None and "held for approval" in refused
    assert budget.in_use == 25  # the refused one stays counted where it was until its flow ends
    for user in ("trent", "victor", "walter"):  # four users fill the held pool
        assert budget.admit(user, 25, owner=user, user=user) is None and budget.hold(user) is None
    assert budget.waiting.in_use == 100 and budget.hold("m2") is not None
    # and still every other user's bodies being sent fit: the held ones never take their budget
    budget.release("m2")
    for user in ("alice", "bob", "carol", "dave"):
        assert budget.admit(user + "-body", 25, owner=user + "-1", user=user) is None
    for key in ("m1", "trent", "victor", "walter", "alice-body", "bob-body", "carol-body", "dave-body"):
        budget.release(key)
    assert budget.in_use == 0 and budget.waiting.in_use == 0


def test_a_release_gives_back_what_a_flow_held_wherever_it_is() -> None:
    freed: list[int] = []

    class Counting(Reclaimer):
        def note_freed(self, size: int) -> None:
            freed.append(size)

    budget = BodyBudget(100, share=25, reclaimer=Counting())
    assert budget.admit("a", 20) is None and budget.hold("a") is None
    assert budget.hold("never-reserved") is None and budget.hold("a") is None  # nothing (more) to move
    budget.release("a")
    assert budget.waiting is not None and budget.waiting.in_use == 0 and freed == [20]


def test_a_share_larger_than_the_budget_is_the_budget() -> None:
    assert BodyBudget(100, share=1000).share == 100
    assert BodyBudget(100).share == 100


BODY = Limits(body_timeout=10.0, min_body_rate=1000)


def test_a_body_arriving_steadily_is_never_cut() -> None:
    assert body_too_slow(now=100.0, started=0.0, last=99.5, received=200_000, limits=BODY) is None


def test_a_body_silent_for_the_body_timeout_is_cut() -> None:
    assert "no byte" in str(body_too_slow(now=10.0, started=0.0, last=0.0, received=0, limits=BODY))
    assert body_too_slow(now=9.9, started=0.0, last=0.0, received=0, limits=BODY) is None


def test_a_body_trickled_below_the_minimum_rate_is_cut_once_older_than_the_body_timeout() -> None:
    # a byte every second is never silent for long, but 20 s in it has 20 bytes where 10 000 were due
    assert "bytes a second" in str(body_too_slow(now=20.0, started=0.0, last=19.5, received=20, limits=BODY))
    assert body_too_slow(now=9.0, started=0.0, last=8.5, received=9, limits=BODY) is None


def test_the_next_check_is_when_the_body_would_first_be_too_slow() -> None:
    assert body_next_check(started=0.0, last=5.0, received=0, limits=BODY) == 10.0
    assert body_next_check(started=0.0, last=12.0, received=3000, limits=BODY) == 13.0
    at = body_next_check(started=0.0, last=12.0, received=3000, limits=BODY)
    assert body_too_slow(now=at - 0.01, started=0.0, last=12.0, received=3000, limits=BODY) is None
    assert body_too_slow(now=at, started=0.0, last=12.0, received=3000, limits=BODY) is not None


def test_a_cut_body_names_its_request_id_in_the_flow_error() -> None:
    message = body_timeout_error("3f0c", "no byte of the request body arrived for 30 s")
    assert parse_body_timeout(message) == ("3f0c", "no byte of the request body arrived for 30 s")
    assert parse_body_timeout("malformed chunked body: x") is None


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("AILERON_MAX_HEADER_FIELDS", "50")
    limits = limits_from_environment(10)
    assert limits.response_timeout == 600 and limits.max_header_fields == 50
    assert limits.connect_timeout == Limits().connect_timeout


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AILERON_UPSTREAM_CONNECT_TIMEOUT_SECONDS", "soon", "must be a number"),
        ("AILERON_UPSTREAM_RESPONSE_TIMEOUT_SECONDS", "0", "must be more than 0"),
        ("AILERON_HEADER_TIMEOUT_SECONDS", "-1", "must not be negative"),
        ("AILERON_BODY_BUDGET_BYTES", "1000", "must be at least AILERON_MAX_BODY_BYTES"),
    ],
)
def test_a_bad_limit_stops_the_data_plane_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, message: str
) -> None:
    token = tmp_path / "token"
    token.write_text("ail_svc_x")
    monkeypatch.setenv(name, value)
    args = argparse.Namespace(
        home=str(tmp_path),
        service_token_file=token,
        host="127.0.0.1",
        port=1,
        api="http://x",
        socket=None,
        workers=1,
        worker_index=0,
        credentials_fd=None,
    )
    with pytest.raises(StartupError, match=message):
        settings_from(args)


def test_a_timed_out_upstream_is_answered_504_and_other_upstream_failures_502() -> None:
    from dataplane.http1_strict import problem_bytes

    timed_out = problem_bytes(502, "upstream-timeout: no response from the upstream within 300 s")
    assert timed_out.startswith(b"HTTP/1.1 504") and b"urn:aileron:problem:upstream-timeout" in timed_out
    refused = problem_bytes(502, "Connection failed: [Errno 111] Connection refused")
    assert refused.startswith(b"HTTP/1.1 502") and b"urn:aileron:problem:upstream-unavailable" in refused


def test_a_response_head_over_the_bounds_is_refused_before_it_ends() -> None:
    limits = Limits(max_response_head_bytes=1000, max_response_header_fields=8)
    assert response_head_problem(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n" + b"x" * 5000, limits) is None
    assert response_head_problem(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 9, limits) is not None
    assert response_head_problem(b"HTTP/1.1 200 OK\r\nA: " + b"b" * 1000, limits) is not None


def test_an_upstream_sending_an_endless_head_gets_its_connection_closed_and_the_flow_a_502() -> None:
    from mitmproxy import options
    from mitmproxy.proxy import commands, context, events
    from mitmproxy.proxy.layers.http._base import ReceiveHttp
    from mitmproxy.proxy.layers.http._events import RequestEndOfMessage, RequestHeaders, ResponseProtocolError
    from mitmproxy.proxy.layers.http._http1 import Http1Client
    from mitmproxy.test import tflow, tutils

    from dataplane import limits as limits_module
    from dataplane.http1_strict import problem_bytes

    limits_module.install(Limits())
    ctx = context.Context(tflow.tclient_conn(), options.Options())
    ctx.server = tflow.tserver_conn()
    client = Http1Client(ctx)
    list(client.handle_event(events.Start()))
    list(client.handle_event(RequestHeaders(1, tutils.treq(), False)))
    list(client.handle_event(RequestEndOfMessage(1)))
    sent = 0
    out: list[object] = []
    line = b"X-Endless: " + b"a" * 100 + b"\r\n"
    data = b"HTTP/1.1 200 OK\r\n"
    while sent < 1024 * 1024 and not out:
        out = [c for c in client.handle_event(events.DataReceived(ctx.server, data)) if not isinstance(c, commands.Log)]
        sent += len(data)
        data = line
    assert sent < 80 * 1024  # refused soon after the bound (64 KiB), not buffered on
    assert isinstance(out[0], commands.CloseConnection) and out[0].connection is ctx.server
    assert isinstance(out[1], ReceiveHttp) and isinstance(out[1].event, ResponseProtocolError)
    assert len(client.buf) == 0
    answer = problem_bytes(502, out[1].event.message)
    assert answer.startswith(b"HTTP/1.1 502") and b"urn:aileron:problem:upstream-unavailable" in answer


@pytest.mark.parametrize(
    "message",
    [
        "Cannot parse HTTP response: invalid content-length header: '{token}'",
        'Bad HTTP response line: b"HTTP/1.1 2x0 {token}"',
        "Received invalid Content-Length: `{token}`",
        "Invalid header value {token}",
        "Malformed chunk size: ({token})",
    ],
)
def test_an_answer_the_proxy_writes_itself_never_repeats_what_it_could_not_parse(message: str) -> None:
    """An upstream that puts the credential it was sent into a header it breaks (finding of an outside attack):
    the 502 the agent gets names the fault, never the bytes."""
    from dataplane.http1_strict import problem_bytes

    token = "ghp_AttackFiveSecretToken1234567890abcd"
    answer = problem_bytes(502, message.format(token=token))
    assert token.encode() not in answer and b"AttackFive" not in answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["detail"] and len(body["detail"]) <= 300
