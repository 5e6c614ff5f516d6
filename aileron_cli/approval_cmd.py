"""`aileron approval`: see, decide and watch the requests your agents hold for a human; open the web page."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from rich import box
from rich.table import Table
from rich.text import Text

from aileron_cli import state
from aileron_cli.audit_cmd import since_parse
from aileron_cli.client import ApiClient, CliError
from aileron_cli.common import console, emit_json, err_console, fail_cleanly, logged_in_api, require_login

STATES = ("pending", "granted", "rejected", "expired", "cancelled", "all")
# How the morning view groups what happened: what ran, what was refused, what was never used, what still waits.
CATEGORIES = ("completed", "granted, unused", "rejected", "expired", "cancelled", "pending")
CATEGORIES_OF_STATE = {
    "all": CATEGORIES,
    "granted": ("completed", "granted, unused"),
    "pending": ("pending",),
    "rejected": ("rejected",),
    "expired": ("expired",),
    "cancelled": ("cancelled",),
}
PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
PREFIX_SCAN = 500  # the API's page limit: a prefix is looked up among this many of the newest approvals
WEB_LINK_NAME = "web approvals"  # the personal token `open` mints is listed under this name
WEB_LINK_DAYS = 1  # the shortest lifetime the tokens API offers

# Close codes of the approvals feed that no reconnect can fix.
FATAL_CLOSES = {
    4401: "the server refused your login token on the approvals feed (4401); log in again",
    4403: "the approvals feed needs a personal access token, not a session or service token (4403)",
    4404: "you are not a member of organization {org} (4404)",
}
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


# --- pure formatting --------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """Agents choose arguments: no escape sequence of theirs reaches the approver's terminal."""
    return "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in text)


def short_id(approval_id: str) -> str:
    return approval_id[:8]


def age_text(seconds: float) -> str:
    """12s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def args_brief(args: dict[str, Any], width: int = 48) -> str:
    """`amount=5000, charge=ch_1`, cut to WIDTH characters."""
    parts = []
    for key, value in args.items():
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
        parts.append(f"{key}={shown}")
    text = printable(", ".join(parts)) or "-"
    return text if len(text) <= width else text[: width - 1] + "\N{HORIZONTAL ELLIPSIS}"


def category(approval: dict[str, Any]) -> str:
    """The approval's place in the morning view: a used grant is `completed`, an unused one `granted, unused`."""
    if approval["state"] == "granted":
        return "completed" if approval.get("consumed_at") or approval.get("completed") else "granted, unused"
    return str(approval["state"])


def state_text(approval: dict[str, Any]) -> str:
    """`completed (200)`, `granted, unused`, `pending (1 of 2)`, `rejected`..."""
    kind = category(approval)
    if kind == "completed" and approval.get("outcome_status") is not None:
        return f"completed ({approval['outcome_status']})"
    required = int(approval.get("approvers_required") or 1)
    if kind == "pending" and required > 1:
        return f"pending ({approval.get('grants', 0)} of {required})"
    return kind


def _voters(approval: dict[str, Any], decision: str) -> list[str]:
    return [str(d["approver"]) for d in approval.get("decisions") or [] if d.get("decision") == decision]


def _until(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    delta = (datetime.fromisoformat(iso) - now).total_seconds()
    return f"in {age_text(delta)}" if delta >= 0 else f"{age_text(-delta)} ago"


def decision_text(approval: dict[str, Any], *, now: datetime | None = None) -> str:
    """Who decided and why: `by bob@example.com: too large`; for a pending one, who voted and when it expires."""
    now = now or datetime.now(UTC)
    kind = category(approval)
    reason = approval.get("decision_reason") or ""
    if kind == "rejected":
        who = ", ".join(_voters(approval, "reject")) or "?"
        text = f"by {who}: {reason}" if reason else f"by {who}"
    elif kind in ("completed", "granted, unused"):
        text = "by " + (", ".join(_voters(approval, "grant")) or "?") + (f": {reason}" if reason else "")
        if kind == "granted, unused":
            text += f"; expires {_until(approval.get('expires_at'), now)}"
    elif kind == "pending":
        voters = _voters(approval, "grant")
        text = f"expires {_until(approval.get('expires_at'), now)}"
        if voters:
            text = f"granted by {', '.join(voters)}; {text}"
    elif kind == "expired":
        voters = _voters(approval, "grant")
        text = f"granted by {', '.join(voters)}, never used" if voters else "nobody decided in time"
    else:
        text = reason or "-"
    return printable(text)


def morning_order(approvals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grouped by category (completed, granted unused, rejected, expired, cancelled, pending); each newest first."""
    rank = {name: i for i, name in enumerate(CATEGORIES)}
    return sorted(approvals, key=lambda a: (rank.get(category(a), len(rank)), -_timestamp(a.get("created_at"))))


def _timestamp(iso: str | None) -> float:
    return datetime.fromisoformat(iso).timestamp() if iso else 0.0


def summary_line(approvals: Iterable[dict[str, Any]], *, state_filter: str = "all") -> str:
    """`3 completed, 1 granted unused, 2 rejected, 0 expired, 0 cancelled, 1 pending`: one count per category."""
    counts = Counter(category(a) for a in approvals)
    return ", ".join(f"{counts[name]} {name.replace(',', '')}" for name in CATEGORIES_OF_STATE[state_filter])


def approvals_table(approvals: list[dict[str, Any]], *, title: str, now: datetime | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    # Every column wraps rather than vanish in a narrow terminal; ids and ages never need to.
    table.add_column("id", no_wrap=True)
    table.add_column("state", overflow="fold")
    table.add_column("action", overflow="fold")
    table.add_column("args", overflow="fold")
    table.add_column("requester (agent)", overflow="fold")
    table.add_column("age", no_wrap=True, justify="right")
    table.add_column("decision", overflow="fold")
    ordered = morning_order(approvals)
    for index, a in enumerate(ordered):
        last_of_group = index + 1 == len(ordered) or category(ordered[index + 1]) != category(a)
        table.add_row(
            short_id(str(a["id"])),
            state_text(a),
            Text(printable(str(a.get("action") or "-"))),
            Text(args_brief(a.get("args") or {})),
            Text(printable(f"{a.get('requester_email') or '-'} ({a.get('agent') or '-'})")),
            age_text(float(a.get("age_seconds") or 0)),
            Text(decision_text(a, now=now)),
            end_section=last_of_group,
        )
    return table


def approval_details(approval: dict[str, Any], *, now: datetime | None = None) -> str:
    """Everything an approver should read before deciding, as `label  value` lines (hashes never wrapped)."""
    now = now or datetime.now(UTC)
    a = approval
    rows: list[tuple[str, str]] = []
    rows.append(("state", state_text(a)))
    rows.append(("action", f"{a.get('action')} (connector {a.get('connector')})"))
    args = json.dumps(a.get("args") or {}, indent=2, sort_keys=True).splitlines()
    rows.extend(("args" if i == 0 else "", line) for i, line in enumerate(args))
    query = f"?{a['query']}" if a.get("query") else ""
    rows.append(("request", f"{a.get('method')} https://{a.get('host')}{a.get('path')}{query}"))
    rows.append(("body", f"{a.get('body_bytes', 0)} bytes, sha256 {a.get('body_sha256')}"))
    rows.append(("request hash", str(a.get("request_hash") or "-")))
    rows.append(("requester", f"{a.get('requester_email') or '-'} (agent {a.get('agent') or '-'})"))
    rows.append(("session", str(a.get("session_id") or "-")))
    if a.get("held_reason"):
        rows.append(("held because", str(a["held_reason"])))
    rule = f"{a.get('grants', 0)} of {a.get('approvers_required', 1)} approvals"
    if a.get("four_eyes"):
        rule += "; four eyes (the requester may not decide)"
    rows.append(("rule", rule))
    rows.append(("asked", f"{_utc(a.get('created_at'))} ({age_text(float(a.get('age_seconds') or 0))} ago)"))
    expiry = {"pending": "expires", "granted, unused": "usable until"}.get(category(a))
    if expiry:
        rows.append((expiry, f"{_utc(a.get('expires_at'))} ({_until(a.get('expires_at'), now)})"))
    if a.get("decided_at"):
        reason = f": {a['decision_reason']}" if a.get("decision_reason") else ""
        rows.append(("decided", f"{_utc(a['decided_at'])}{reason}"))
    for d in a.get("decisions") or []:
        verb = "granted" if d.get("decision") == "grant" else "rejected"
        reason = f": {d['reason']}" if d.get("reason") else ""
        rows.append(("decision", f"{verb} by {d.get('approver')} at {_utc(d.get('at'))}{reason}"))
    if a.get("consumed_at"):
        outcome = f", upstream answered {a['outcome_status']}" if a.get("outcome_status") is not None else ""
        rows.append(("used", f"{_utc(a['consumed_at'])}{outcome}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"Approval {a['id']}"] + [f"  {label:<{width}}  {value}" for label, value in rows]
    return "\n".join(printable(line) for line in lines)


def _utc(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def decided_message(approval: dict[str, Any]) -> str:
    """What a grant, reject or cancel left: `Granted ...`, or `1 of 2 approvals; waiting for another approver.`"""
    a = approval
    name = f"{short_id(str(a['id']))} ({printable(str(a.get('action')))})"
    kind = category(a)
    if kind == "pending":
        required = int(a.get("approvers_required") or 1)
        return f"{a.get('grants', 0)} of {required} approvals for {name}; waiting for another approver."
    if kind == "granted, unused":
        return f"Granted {name}: the agent's identical request may use it once, until {_utc(a.get('expires_at'))}."
    if kind == "rejected":
        return f"Rejected {name}: {printable(str(a.get('decision_reason') or ''))}"
    if kind == "cancelled":
        return f"Cancelled {name}."
    return f"{name} is {state_text(a)}."


EVENT_VERBS = {"snapshot": "pending", "created": "asked", "voted": "voted", "used": "used", "completed": "completed"}


def event_line(event: str, approval: dict[str, Any], *, now: datetime | None = None) -> str:
    """One line per event: `12:03:04 asked     3f2a1b9c stripe.create-refund amount=5 by alice (nightly)`."""
    now = now or datetime.now(UTC)
    a = approval
    verb = str(a.get("state")) if event == "decided" else EVENT_VERBS.get(event, event)
    head = f"{now.strftime('%H:%M:%S')} {verb:<9} {short_id(str(a.get('id', '')))} {a.get('action', '-')}"
    if event in ("created", "snapshot"):
        tail = f"{args_brief(a.get('args') or {})}  by {a.get('requester_email') or '-'} ({a.get('agent') or '-'})"
        tail += f"  {decision_text(a, now=now)}"
    elif event == "voted":
        tail = f"{a.get('grants', 0)} of {a.get('approvers_required', 1)} approvals ({', '.join(_voters(a, 'grant'))})"
    elif event == "completed":
        tail = state_text(a)
    elif event == "used":
        tail = "the agent's request used the grant"
    else:
        tail = decision_text(a, now=now)
    return printable(f"{head}  {tail}")


def close_error(code: int | None, *, org: str) -> CliError | None:
    """The one-line error for a close code no reconnect can fix, else None."""
    if code in FATAL_CLOSES:
        return CliError(FATAL_CLOSES[code].format(org=org))
    return None


def handshake_error(status: int, *, url: str) -> CliError | None:
    """The one-line error for a refused websocket handshake, or None when retrying may help."""
    if status in RETRYABLE_STATUSES:
        return None
    if status == 401:
        return CliError("the server refused your login token on the approvals feed (401); log in again")
    if status == 404:
        return CliError(f"the server has no approvals feed at {url} (404); is it older than this CLI?")
    return CliError(f"the server refused the approvals feed at {url} ({status})")


def websocket_url(server: str, org: str) -> str:
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme)
    if scheme is None:
        raise CliError(f"the server URL {server!r} is neither http:// nor https://", exit_code=2)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + f"/ws/orgs/{org}/approvals/", "", ""))


# --- talking to the API ----------------------------------------------------------------------------------------


def _org(login: state.Login) -> str:
    if not login.organization_id:
        raise CliError("no organization selected in your login; run `aileron init` or `aileron join`")
    return login.organization_id


def _base(login: state.Login) -> str:
    return f"/api/v1/orgs/{_org(login)}/approvals/"


def approval_resolve(api: ApiClient, base: str, ref: str) -> str:
    """A full approval id, or one found from a unique prefix (as `list` shows) among the newest approvals."""
    text = ref.strip().lower()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if not PREFIX.match(text):
        raise CliError(f"{ref!r} is not an approval id (a UUID, or its first 4 or more characters)", exit_code=2)
    page = api.get(base, params={"state": "all", "limit": PREFIX_SCAN})
    found = [str(a["id"]) for a in page["results"] if str(a["id"]).startswith(text)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CliError(f"no approval starts with {ref!r} among the {PREFIX_SCAN} newest; give the full id")
    raise CliError(f"{ref!r} matches {len(found)} approvals; give more of the id", exit_code=2)


# --- commands -------------------------------------------------------------------------------------------------


@click.group()
def approval() -> None:
    """Human approvals: what your agents wait for, and what happened while you were away."""


@approval.command("list")
@click.option(
    "--state",
    "state_filter",
    type=click.Choice(STATES),
    default="pending",
    show_default=True,
    help="Only approvals in this state; `all` with --since is the morning view.",
)
@click.option("--since", default=None, help="Asked within 30m, 12h, 2d, or since an ISO 8601 time.")
@click.option("--action", default=None, help="An action, or a prefix ending in * (e.g. 'stripe.*').")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the approvals as JSON.")
@fail_cleanly
def approval_list(state_filter: str, since: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Approvals, newest first, grouped: completed, rejected (who and why), still pending; a count per state."""

    params: dict[str, str | int] = {"state": state_filter, "limit": limit}
    if since is not None:
        params["since"] = since_parse(since).isoformat()
    if action:
        params["action"] = action
    login = require_login()
    with logged_in_api() as api:
        page = api.get(_base(login), params=params)
    approvals: list[dict[str, Any]] = page["results"]
    if as_json:
        emit_json(approvals)
        return
    if approvals:
        title = "Approvals" if state_filter == "all" else f"Approvals: {state_filter}"
        if since is not None:
            title += f" since {since}"
        console.print(approvals_table(approvals, title=title))
    else:
        console.print("No approvals match.")
    console.print(summary_line(approvals, state_filter=state_filter), markup=False)
    if page.get("count", 0) > len(approvals):
        err_console.print(
            f"{len(approvals)} of {page['count']} shown (and counted); use --limit or narrow with --since or --action."
        )


@approval.command("show")
@click.argument("approval_ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the approval as JSON.")
@fail_cleanly
def approval_show(approval_ref: str, as_json: bool) -> None:
    """An approval in full: arguments, the exact request it is bound to, decisions, expiry."""

    login = require_login()
    with logged_in_api() as api:
        approval_id = approval_resolve(api, _base(login), approval_ref)
        found = api.get(f"{_base(login)}{approval_id}/")
    if as_json:
        emit_json(found)
        return
    console.print(approval_details(found), markup=False, highlight=False)


def _decide(verb: str, approval_ref: str, body: dict[str, Any] | None, as_json: bool) -> None:

    login = require_login()
    with logged_in_api() as api:
        approval_id = approval_resolve(api, _base(login), approval_ref)
        result = api.post(f"{_base(login)}{approval_id}/{verb}/", body or {})
    if as_json:
        emit_json(result)
        return
    console.print(decided_message(result), markup=False)


@approval.command("grant")
@click.argument("approval_ref", metavar="ID")
@click.option("--reason", default=None, help="Why (optional; shown to the requester).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting approval as JSON.")
@fail_cleanly
def approval_grant(approval_ref: str, reason: str | None, as_json: bool) -> None:
    """Grant ID: the agent's byte-identical request may then run once (a two-approver rule needs another)."""
    _decide("grant", approval_ref, {"reason": reason} if reason else {}, as_json)


@approval.command("reject")
@click.argument("approval_ref", metavar="ID")
@click.option("--reason", default=None, help="Why (required; the agent and the requester are shown it).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting approval as JSON.")
@fail_cleanly
def approval_reject(approval_ref: str, reason: str | None, as_json: bool) -> None:
    """Reject ID with a reason: the agent is refused and told why."""
    if not reason or not reason.strip():
        raise CliError("a rejection needs --reason: the agent and the requester are shown it", exit_code=2)
    _decide("reject", approval_ref, {"reason": reason}, as_json)


@approval.command("cancel")
@click.argument("approval_ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting approval as JSON.")
@fail_cleanly
def approval_cancel(approval_ref: str, as_json: bool) -> None:
    """Withdraw a pending request (your own, or any if you may decide approvals)."""
    _decide("cancel", approval_ref, None, as_json)


@approval.command("open")
@click.option("--browser", is_flag=True, help="Also try to open it in a web browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the URL and its token's id and expiry as JSON.")
@fail_cleanly
def approval_open(browser: bool, as_json: bool) -> None:
    """The approvals web page's URL, with a personal token of its own that lasts one day (never your login's)."""

    login = require_login()
    org = _org(login)
    with logged_in_api() as api:
        minted = api.post("/api/v1/tokens/", {"name": WEB_LINK_NAME, "expires_in_days": WEB_LINK_DAYS})
    # In the fragment: browsers never send it to the server, so it stays out of access logs.
    url = f"{login.server.rstrip('/')}/approvals/#token={minted['token']}&org={org}"
    if as_json:
        emit_json({"url": url, "token_id": minted["id"], "expires_at": minted["expires_at"]})
    else:
        click.echo(url)
        err_console.print(
            f"The link holds a personal token ({WEB_LINK_NAME!r}, id {minted['id']}) valid until "
            f"{_utc(minted['expires_at'])}; keep it to yourself.",
            markup=False,
        )
    if browser:
        import webbrowser

        if not webbrowser.open(url):
            err_console.print("No web browser could be started here; open the URL above yourself.")


# --- watch ----------------------------------------------------------------------------------------------------


def can_prompt() -> bool:
    return sys.stdin.isatty()


class Watcher:
    """Turns feed messages into output (and, interactively, decisions on new pending approvals)."""

    def __init__(
        self,
        *,
        as_json: bool,
        interactive: bool,
        me: str,
        out: Callable[[str], None],
        warn: Callable[[str], None],
        decide: Callable[[str, str, str], dict[str, Any]],
        ask: Callable[[str], str],
    ) -> None:
        self.as_json = as_json
        self.interactive = interactive and not as_json
        self.me = me.lower()
        self.out, self.warn, self.decide, self.ask = out, warn, decide, ask
        self.seen: set[str] = set()
        self.offered: set[str] = set()
        self.snapshots = 0

    def handle(self, message: dict[str, Any]) -> None:
        if self.as_json:
            self.out(json.dumps(message, sort_keys=True, separators=(",", ":")))
            return
        event = str(message.get("event") or "")
        if event == "snapshot":
            approvals = [a for a in message.get("approvals") or [] if isinstance(a, dict)]
            fresh = [a for a in approvals if a.get("id") not in self.seen]
            if not self.snapshots:
                self.warn(f"{len(approvals)} pending approval(s); watching for more (Ctrl-C to stop).")
            self.snapshots += 1
            for a in sorted(fresh, key=lambda a: _timestamp(a.get("created_at"))):
                self.seen.add(str(a.get("id")))
                self.out(event_line("snapshot", a))
            for a in approvals:
                self.offer(a)
            return
        found = message.get("approval")
        if not isinstance(found, dict):
            return
        approval_id = str(found.get("id"))
        if event == "created" and approval_id in self.seen:
            return  # in the snapshot already: the feed joins its groups before reading it, so one may repeat
        self.seen.add(approval_id)
        self.out(event_line(event, found))
        if event == "created":
            self.offer(found)

    def offer(self, approval: dict[str, Any]) -> None:
        """Ask once per approval whether to grant, reject or skip it, when it is ours to decide."""
        approval_id = str(approval.get("id"))
        if not self.interactive or approval_id in self.offered or approval.get("state") != "pending":
            return
        self.offered.add(approval_id)
        if self.me in (str(d.get("approver", "")).lower() for d in approval.get("decisions") or []):
            return  # voted already: a two-approver rule waits for someone else
        if approval.get("four_eyes") and str(approval.get("requester_email", "")).lower() == self.me:
            self.warn(f"{short_id(approval_id)}: four eyes; someone else must decide your own request.")
            return
        choice = self.ask(f"{short_id(approval_id)} {approval.get('action')}: grant / reject / skip? [g/r/s]")
        if choice == "s":
            return
        reason = ""
        if choice == "r":
            while not reason.strip():
                reason = self.ask("reason (the agent and the requester are shown it)")
        try:
            result = self.decide(approval_id, "grant" if choice == "g" else "reject", reason)
        except CliError as exc:
            self.warn(f"aileron: {exc}")
            if "approval.decide" in str(exc):  # the role may decide nothing: stop asking
                self.interactive = False
            return
        self.out(decided_message(result))


def ask_choice(text: str) -> str:
    if text.startswith("reason"):
        return str(click.prompt(text, type=str))
    answer = click.prompt(
        text,
        type=click.Choice(["g", "r", "s", "grant", "reject", "skip"], case_sensitive=False),
        show_choices=False,
    )
    return str(answer)[0].lower()


def watch_loop(
    url: str,
    *,
    token: str,
    org: str,
    handle: Callable[[dict[str, Any]], None],
    warn: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    connect_timeout: float = 10.0,
) -> None:
    """Follow the feed until interrupted, reconnecting with backoff; raise CliError when retrying cannot help."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
    from websockets.sync.client import connect

    from aileron_site import __version__

    delay = BACKOFF_FIRST
    while True:
        try:
            with connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                user_agent_header=f"aileron-cli/{__version__}",
                open_timeout=connect_timeout,
            ) as ws:
                while True:
                    raw = ws.recv()
                    try:
                        message = json.loads(raw)
                    except ValueError:
                        warn("aileron: the approvals feed sent something that is not JSON; ignored")
                        continue
                    if isinstance(message, dict):
                        if message.get("event") == "snapshot":
                            delay = BACKOFF_FIRST  # a working connection: the next drop retries quickly again
                        handle(message)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            fatal = close_error(code, org=org)
            if fatal is not None:
                raise fatal from None
            why = f"the approvals feed closed ({code})" if code else "the approvals feed dropped"
        except InvalidStatus as exc:
            refused = handshake_error(exc.response.status_code, url=url)
            if refused is not None:
                raise refused from None
            why = f"the server answered {exc.response.status_code}"
        except InvalidURI:
            raise CliError(f"{url} is not a websocket URL", exit_code=2) from None
        except InvalidMessage:
            why = "the server hung up during the handshake"
        except InvalidHandshake as exc:
            raise CliError(f"the approvals feed at {url} failed its handshake: {exc}") from None
        except (OSError, TimeoutError) as exc:
            why = f"cannot reach {url} ({exc.__class__.__name__})"
        warn(f"aileron: {why}; reconnecting in {delay:.0f}s")
        sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


@approval.command("watch")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the snapshot, then each event).")
@fail_cleanly
def approval_watch(as_json: bool) -> None:
    """Live approvals: those pending now, then every event; on a terminal, decide new ones as they arrive."""

    login = require_login()
    org = _org(login)
    url = websocket_url(login.server, org)

    def decide(approval_id: str, verb: str, reason: str) -> dict[str, Any]:
        with logged_in_api() as api:
            result: dict[str, Any] = api.post(f"{_base(login)}{approval_id}/{verb}/", {"reason": reason})
        return result

    def out(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    watcher = Watcher(
        as_json=as_json,
        interactive=can_prompt(),
        me=login.email,
        out=out,
        warn=lambda line: err_console.print(line, markup=False),
        decide=decide,
        ask=ask_choice,
    )
    try:
        watch_loop(url, token=login.token, org=org, handle=watcher.handle, warn=watcher.warn)
    except (KeyboardInterrupt, click.Abort):
        err_console.print("")  # end the line ^C was typed on; stopping is not an error
        sys.exit(0)
