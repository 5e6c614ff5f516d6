"""`aileron approval` against the real API (served in-process), and `watch` against a real websocket server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from django.test import Client
from django_scopes import scope, scopes_disabled
from websockets.sync.server import Server, ServerConnection, serve

from aileron_cli import approval_cmd, state
from aileron_cli.approval_cmd import (
    args_brief,
    close_error,
    event_line,
    state_text,
    summary_line,
    websocket_url,
)
from aileron_cli.common import console
from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import DjangoTransport
from approvals import services as approvals
from approvals.api.serializers import ApprovalSerializer
from approvals.models import Approval
from conftest import Cast, Person, make_person
from tenants import services
from tenants.models import ApiToken
from tenants.roles import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in_as(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    monkeypatch.setenv("AILERON_HOME", str(tmp_path))
    monkeypatch.setattr(httpx, "Client", partial(httpx.Client, transport=DjangoTransport()))
    monkeypatch.setattr(console, "width", 250)  # a table wider than the 80 columns of a pipe

    def login(person: Person, server: str = "http://testserver") -> None:
        state.login_save(
            state.Login(server=server, token=person.token, email=person.user.email, organization_id=str(person.org.pk))
        )

    return login


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["approval", *args], input=input, catch_exceptions=False)


def held(person: Person, *, action: str = "stripe.create-refund", **args: Any) -> approvals.HeldRequest:
    session = services.session_token_create(membership=person.membership, name="nightly agent").token
    body = json.dumps(args or {"charge": "ch_1", "amount": 5000}).encode()
    return approvals.HeldRequest(
        session_id=session.pk,
        request_id=uuid.uuid4(),
        connector=action.split(".")[0],
        action=action,
        args=args or {"charge": "ch_1", "amount": 5000},
        method="POST",
        host="api.stripe.com",
        path="/v1/refunds",
        query="expand=charge",
        body_sha256=hashlib.sha256(body).hexdigest(),
        body_bytes=len(body),
        credential_id=uuid.uuid4(),
        reason="refunds need a human",
    )


def ask(person: Person, **kwargs: Any) -> tuple[Approval, approvals.HeldRequest]:
    request = held(person, **kwargs)
    return approvals.approval_claim(held=request).approval, request


def decide(approval: Approval, person: Person, decision: str, reason: str = "") -> None:
    with scope(organization=person.org):
        approvals.approval_decide(approval=approval, membership=person.membership, decision=decision, reason=reason)


def rule(person: Person, action: str, *, four_eyes: bool = False, approvers_required: int = 1) -> None:
    with scope(organization=person.org):
        approvals.approval_rule_create(
            acting=person.membership,
            action=action,
            four_eyes=four_eyes,
            approvers_required=approvers_required,
            window_seconds=60,
        )


def reload(approval: Approval) -> Approval:
    with scopes_disabled():
        return Approval.objects.get(pk=approval.pk)


def one_line_error(result: Any) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("aileron: "), result.output
    return str(lines[0])


# --- list -----------------------------------------------------------------------------------------------------


def test_list_shows_pending_approvals_by_default_and_json_prints_the_raw_list(cast: Cast, logged_in_as: Any) -> None:
    pending, _ = ask(cast.alice)
    decided, _ = ask(cast.alice, action="stripe.create-payout", amount=1)
    decide(decided, cast.alice, "reject", "no")
    logged_in_as(cast.alice)

    human = run("list")
    machine = run("list", "--json")

    assert human.exit_code == 0, human.output
    assert short(pending) in human.output and "stripe.create-refund" in human.output
    # (in either order: PostgreSQL's jsonb keeps an object's keys in its own order)
    assert "charge=ch_1" in human.output and "amount=5000" in human.output and "nightly agent" in human.output
    assert "stripe.create-payout" not in human.output
    assert human.output.strip().endswith("1 pending")
    assert [a["id"] for a in json.loads(machine.stdout)] == [str(pending.pk)]


def test_the_morning_view_groups_what_ran_what_was_refused_and_what_still_waits(cast: Cast, logged_in_as: Any) -> None:
    completed, request = ask(cast.alice, action="stripe.create-refund", amount=1)
    decide(completed, cast.alice, "grant")
    used = approvals.approval_claim(held=dataclasses.replace(request, request_id=uuid.uuid4()))
    assert used.used_now
    assert used.approval.consumed_request_id is not None
    approvals.approval_record_outcomes(statuses={used.approval.consumed_request_id: 201})
    unused, _ = ask(cast.alice, action="stripe.create-refund", amount=2)
    decide(unused, cast.alice, "grant")
    rejected, _ = ask(cast.alice, action="stripe.create-payout", amount=3)
    decide(rejected, cast.alice, "reject", "too large")
    cancelled, _ = ask(cast.alice, action="github.delete-repo", repo="x")
    with scope(organization=cast.alice.org):
        approvals.approval_cancel(approval=cancelled, membership=cast.alice.membership)
    pending, _ = ask(cast.alice, action="slack.post", channel="#ops")
    logged_in_as(cast.alice)

    result = run("list", "--state", "all", "--since", "12h")

    assert result.exit_code == 0, result.output
    out = result.output
    assert "completed (201)" in out and "granted, unused" in out
    assert "by alice@example.com: too large" in out
    assert "cancelled by alice@example.com" in out
    rows = [out.index(short(a)) for a in (completed, unused, rejected, cancelled, pending)]
    assert rows == sorted(rows), "grouped: completed, granted unused, rejected, expired, cancelled, pending"
    assert (
        out.strip().splitlines()[-1] == "1 completed, 1 granted unused, 1 rejected, 0 expired, 1 cancelled, 1 pending"
    )


def test_since_and_action_reach_the_api(cast: Cast, logged_in_as: Any) -> None:
    refund, _ = ask(cast.alice, action="stripe.create-refund", amount=1)
    ask(cast.alice, action="slack.post", channel="#ops")
    with scopes_disabled():
        old, _ = ask(cast.alice, action="stripe.create-payout", amount=2)
        Approval.objects.filter(pk=old.pk).update(created_at=datetime.now(UTC) - timedelta(hours=3))
    logged_in_as(cast.alice)

    result = run("list", "--state", "all", "--since", "1h", "--action", "stripe.*", "--json")

    assert result.exit_code == 0, result.output
    assert [a["id"] for a in json.loads(result.stdout)] == [str(refund.pk)]


def test_a_bad_since_is_one_line_and_exit_2(cast: Cast, logged_in_as: Any) -> None:
    logged_in_as(cast.alice)
    result = CliRunner().invoke(cli, ["approval", "list", "--since", "yesterday"])
    assert result.exit_code == 2
    assert "--since 'yesterday'" in one_line_error(result)


# --- show -----------------------------------------------------------------------------------------------------


def test_show_prints_the_request_binding_and_decisions_and_takes_a_unique_prefix(cast: Cast, logged_in_as: Any) -> None:
    approver = make_person("dave@example.com", org=cast.alice.org, role=Role.APPROVER)
    rule(cast.alice, "stripe.*", four_eyes=True, approvers_required=2)
    approval, request = ask(cast.alice)
    decide(approval, approver, "grant", "known")
    logged_in_as(cast.alice)

    by_prefix = run("show", short(approval))
    by_id = run("show", str(approval.pk), "--json")

    assert by_prefix.exit_code == 0, by_prefix.output
    out = by_prefix.output
    assert "POST https://api.stripe.com/v1/refunds?expand=charge" in out
    assert request.body_sha256 in out and f"{request.body_bytes} bytes" in out
    assert '"amount": 5000' in out
    assert "1 of 2 approvals; four eyes" in out
    assert "granted by dave@example.com" in out and ": known" in out
    assert "expires" in out and "refunds need a human" in out
    assert json.loads(by_id.stdout)["id"] == str(approval.pk)


def test_an_approval_of_another_organization_is_not_found_in_one_line(cast: Cast, logged_in_as: Any) -> None:
    approval, _ = ask(cast.alice)
    logged_in_as(cast.charlie)

    result = CliRunner().invoke(cli, ["approval", "show", str(approval.pk)])

    assert result.exit_code == 1
    assert one_line_error(result) == "aileron: No such approval. (404)"


def test_a_prefix_that_is_not_an_id_is_refused_before_asking(cast: Cast, logged_in_as: Any) -> None:
    logged_in_as(cast.alice)
    result = CliRunner().invoke(cli, ["approval", "show", "zz"])
    assert result.exit_code == 2
    assert "not an approval id" in one_line_error(result)


# --- decide ---------------------------------------------------------------------------------------------------


def test_grant_prints_the_state_and_a_second_grant_is_one_line(cast: Cast, logged_in_as: Any) -> None:
    approval, _ = ask(cast.alice)
    logged_in_as(cast.alice)

    first = run("grant", str(approval.pk), "--reason", "expected")
    second = CliRunner().invoke(cli, ["approval", "grant", str(approval.pk)])

    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"Granted {short(approval)} (stripe.create-refund): the agent's identical request")
    assert reload(approval).state == "granted" and reload(approval).decision_reason == "expected"
    assert second.exit_code == 1
    assert one_line_error(second) == "aileron: The approval is granted already. (409)"


def test_a_two_approver_rule_says_it_waits_for_another_approver(cast: Cast, logged_in_as: Any) -> None:
    rule(cast.alice, "stripe.create-refund", approvers_required=2)
    approver = make_person("dave@example.com", org=cast.alice.org, role=Role.APPROVER)
    approval, _ = ask(cast.alice)

    logged_in_as(cast.alice)
    first = run("grant", str(approval.pk))
    assert first.exit_code == 0, first.output
    assert first.output.strip() == (
        f"1 of 2 approvals for {short(approval)} (stripe.create-refund); waiting for another approver."
    )
    assert reload(approval).state == "pending"

    logged_in_as(approver)
    second = run("grant", short(approval), "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["state"] == "granted" and reload(approval).state == "granted"


def test_reject_needs_a_reason_in_one_line_and_records_it(cast: Cast, logged_in_as: Any) -> None:
    approval, _ = ask(cast.alice)
    logged_in_as(cast.alice)

    missing = CliRunner().invoke(cli, ["approval", "reject", str(approval.pk)])
    blank = CliRunner().invoke(cli, ["approval", "reject", str(approval.pk), "--reason", "  "])
    assert missing.exit_code == blank.exit_code == 2
    assert "needs --reason" in one_line_error(missing) and "needs --reason" in one_line_error(blank)
    assert reload(approval).state == "pending"

    rejected = run("reject", str(approval.pk), "--reason", "not during the freeze")
    assert rejected.exit_code == 0, rejected.output
    assert rejected.output.strip() == f"Rejected {short(approval)} (stripe.create-refund): not during the freeze"
    assert reload(approval).state == "rejected" and reload(approval).decision_reason == "not during the freeze"


def test_a_member_without_approval_decide_is_refused_in_one_line(cast: Cast, logged_in_as: Any) -> None:
    approval, _ = ask(cast.bob)
    logged_in_as(cast.bob)

    result = CliRunner().invoke(cli, ["approval", "grant", str(approval.pk)])

    assert result.exit_code == 1
    assert one_line_error(result) == "aileron: Your role (member) lacks approval.decide. (403)"
    assert reload(approval).state == "pending"


def test_the_requester_cancels_their_own_request(cast: Cast, logged_in_as: Any) -> None:
    approval, _ = ask(cast.bob)
    logged_in_as(cast.bob)

    result = run("cancel", str(approval.pk))

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Cancelled {short(approval)} (stripe.create-refund)."
    assert reload(approval).state == "cancelled"


# --- open -----------------------------------------------------------------------------------------------------


def test_open_mints_a_one_day_token_for_the_page_rather_than_handing_out_the_login(
    cast: Cast, logged_in_as: Any
) -> None:
    logged_in_as(cast.alice)

    result = run("open", "--json")

    assert result.exit_code == 0, result.output
    opened = json.loads(result.stdout)
    prefix = "http://testserver/approvals/#token="
    assert opened["url"].startswith(prefix) and opened["url"].endswith(f"&org={cast.alice.org.pk}")
    token = opened["url"][len(prefix) :].split("&", 1)[0]
    assert token.startswith("ail_pat_") and token != cast.alice.token
    with scopes_disabled():
        minted = ApiToken.objects.get(pk=opened["token_id"])
    assert minted.name == "web approvals" and minted.user == cast.alice.user
    assert minted.expires_at - datetime.now(UTC) <= timedelta(days=1)
    who = Client().get("/api/v1/whoami/", headers={"Authorization": f"Bearer {token}"})
    assert who.status_code == 200 and who.json()["user"]["email"] == "alice@example.com"


# --- watch ----------------------------------------------------------------------------------------------------


class FeedServer:
    """A real websocket server playing the approvals feed from a script, one script per connection."""

    def __init__(self, scripts: list[Callable[[ServerConnection], None]], status: int | None = None) -> None:
        self.scripts = scripts
        self.status = status
        self.connections: list[dict[str, str]] = []
        self.server: Server = serve(self._handle, "127.0.0.1", 0, process_request=self._process)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _process(self, connection: ServerConnection, request: Any) -> Any:
        self.connections.append({"path": request.path, "authorization": request.headers.get("Authorization", "")})
        if self.status is not None:
            return connection.respond(HTTPStatus(self.status), "no\n")
        return None

    def _handle(self, connection: ServerConnection) -> None:
        index = min(len(self.connections), len(self.scripts)) - 1
        self.scripts[index](connection)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def feed() -> Iterator[Callable[..., FeedServer]]:
    started: list[FeedServer] = []

    def start(*scripts: Callable[[ServerConnection], None], status: int | None = None) -> FeedServer:
        server = FeedServer(list(scripts), status=status)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def sends(*messages: dict[str, Any], close: int | None = None) -> Callable[[ServerConnection], None]:
    def script(connection: ServerConnection) -> None:
        for message in messages:
            connection.send(json.dumps(message))
        if close is None:
            connection.socket.close()  # a dropped connection: no close frame at all
        else:
            connection.close(code=close, reason="bye")

    return script


def serialized(approval: Approval) -> dict[str, Any]:
    with scopes_disabled():
        return dict(json.loads(json.dumps(ApprovalSerializer(reload(approval)).data, default=str)))


def test_watch_json_prints_one_object_per_line_and_a_refused_token_ends_it_in_one_line(
    cast: Cast, logged_in_as: Any, feed: Any
) -> None:
    approval, _ = ask(cast.alice)
    data = serialized(approval)
    server = feed(sends({"event": "snapshot", "approvals": [data]}, {"event": "created", "approval": data}, close=4401))
    logged_in_as(cast.alice, server=f"http://127.0.0.1:{server.port}")

    result = CliRunner().invoke(cli, ["approval", "watch", "--json"], input="g\n")

    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["snapshot", "created"]
    assert json.loads(lines[1])["approval"]["id"] == str(approval.pk)
    assert (
        result.stderr.strip()
        == "aileron: the server refused your login token on the approvals feed (4401); log in again"
    )
    assert server.connections == [
        {"path": f"/ws/orgs/{cast.alice.org.pk}/approvals/", "authorization": f"Bearer {cast.alice.token}"}
    ], "no reconnect after 4401"
    assert reload(approval).state == "pending", "--json never prompts"


def test_watch_reconnects_after_a_drop_and_says_so(cast: Cast, logged_in_as: Any, feed: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(approval_cmd, "BACKOFF_FIRST", 0.05)
    approval, _ = ask(cast.alice)
    data = serialized(approval)
    server = feed(
        sends({"event": "snapshot", "approvals": []}),
        sends({"event": "snapshot", "approvals": [data]}, close=4404),
    )
    logged_in_as(cast.alice, server=f"http://127.0.0.1:{server.port}")

    result = CliRunner().invoke(cli, ["approval", "watch"])

    assert result.exit_code == 1
    assert len(server.connections) == 2
    assert "the approvals feed dropped; reconnecting in 0s" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"aileron: you are not a member of organization {cast.alice.org.pk} (4404)"
    )
    assert short(approval) in result.stdout and "stripe.create-refund" in result.stdout


def test_watch_on_a_terminal_asks_about_each_new_pending_approval(
    cast: Cast, logged_in_as: Any, feed: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(approval_cmd, "can_prompt", lambda: True)
    first, _ = ask(cast.alice, amount=1)
    second, _ = ask(cast.alice, amount=2)
    third, _ = ask(cast.alice, amount=3)
    server = feed(
        sends(
            {"event": "snapshot", "approvals": [serialized(first)]},
            {"event": "created", "approval": serialized(first)},  # the feed may repeat what its snapshot held
            {"event": "created", "approval": serialized(second)},
            {"event": "created", "approval": serialized(third)},
            close=4403,
        )
    )
    logged_in_as(cast.alice, server=f"http://127.0.0.1:{server.port}")

    result = CliRunner().invoke(cli, ["approval", "watch"], input="g\nr\n\nnot tonight\ns\n")

    assert result.exit_code == 1, result.output
    assert result.stdout.count("grant / reject / skip? [g/r/s]") == 3
    assert f"asked     {short(first)}" not in result.stdout, "what the snapshot showed is not shown again"
    assert f"Granted {short(first)}" in result.stdout
    assert f"Rejected {short(second)} (stripe.create-refund): not tonight" in result.stdout
    assert (reload(first).state, reload(second).state, reload(third).state) == ("granted", "rejected", "pending")
    assert reload(second).decision_reason == "not tonight"
    assert result.stderr.strip().endswith("not a session or service token (4403)")


def test_watch_reports_a_server_without_the_feed_in_one_line(cast: Cast, logged_in_as: Any, feed: Any) -> None:
    server = feed(status=404)
    logged_in_as(cast.alice, server=f"http://127.0.0.1:{server.port}")

    result = CliRunner().invoke(cli, ["approval", "watch"])

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"aileron: the server has no approvals feed at ws://127.0.0.1:{server.port}/ws/orgs/{cast.alice.org.pk}"
        "/approvals/ (404); is it older than this CLI?"
    )


# --- formatting -----------------------------------------------------------------------------------------------


def approval_dict(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "3f2a1b9c-0000-4000-8000-000000000000",
        "state": "pending",
        "action": "stripe.create-refund",
        "args": {"amount": 5000},
        "approvers_required": 1,
        "grants": 0,
        "decisions": [],
        "consumed_at": None,
        "outcome_status": None,
        "created_at": "2030-01-02T03:00:00+00:00",
        "expires_at": "2030-01-03T03:00:00+00:00",
        "requester_email": "alice@example.com",
        "agent": "nightly",
        "decision_reason": "",
    }
    return {**base, **changes}


def test_states_read_as_what_happened() -> None:
    assert state_text(approval_dict(state="granted", consumed_at="x", outcome_status=200)) == "completed (200)"
    assert state_text(approval_dict(state="granted", consumed_at="x")) == "completed"
    assert state_text(approval_dict(state="granted")) == "granted, unused"
    assert state_text(approval_dict(approvers_required=2, grants=1)) == "pending (1 of 2)"
    assert state_text(approval_dict(state="rejected")) == "rejected"


def test_the_summary_counts_every_state_of_the_filter() -> None:
    shown = [
        approval_dict(state="granted", consumed_at="x"),
        approval_dict(state="granted", consumed_at="x"),
        approval_dict(state="rejected"),
        approval_dict(),
    ]
    assert summary_line(shown) == "2 completed, 0 granted unused, 1 rejected, 0 expired, 0 cancelled, 1 pending"
    assert summary_line(shown[:2], state_filter="granted") == "2 completed, 0 granted unused"
    assert summary_line([], state_filter="pending") == "0 pending"


def test_arguments_are_abbreviated_and_cannot_steer_the_terminal() -> None:
    assert args_brief({"amount": 5000, "note": "hi"}) == "amount=5000, note=hi"
    assert args_brief({"x": "a" * 100}, width=10) == "x=aaaaaaa\N{HORIZONTAL ELLIPSIS}"
    assert "\x1b" not in args_brief({"note": "\x1b[2J\x1b]0;pwned\x07"})
    line = event_line("created", approval_dict(action="evil\x1b[31m"), now=datetime(2030, 1, 2, 4, tzinfo=UTC))
    assert "\x1b" not in line and line.startswith("04:00:00 asked     3f2a1b9c evil")
    assert "expires in 23h" in line


def test_close_codes_and_urls_map_to_one_line_errors() -> None:
    assert "login token" in str(close_error(4401, org="o"))
    assert "personal access token" in str(close_error(4403, org="o"))
    assert str(close_error(4404, org="o")) == "you are not a member of organization o (4404)"
    assert close_error(1011, org="o") is None and close_error(None, org="o") is None
    assert websocket_url("https://a.example/base/", "o") == "wss://a.example/base/ws/orgs/o/approvals/"
    assert websocket_url("http://127.0.0.1:8400", "o") == "ws://127.0.0.1:8400/ws/orgs/o/approvals/"


def short(approval: Approval) -> str:
    return str(approval.pk)[:8]
