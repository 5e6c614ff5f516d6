"""The policy engine: Cedar semantics, fail-closed evaluation, argument sanitization and egress patterns."""

from __future__ import annotations

from typing import Any

import pytest

from policies.engine import (
    Decision,
    Engine,
    PolicyDoc,
    PolicyError,
    cedar_args,
    egress_allows,
    egress_pattern_validate,
    policy_validate,
)

USER = "11111111-1111-1111-1111-111111111111"
TEAM_PAYMENTS = "22222222-2222-2222-2222-222222222222"
TEAM_SUPPORT = "33333333-3333-3333-3333-333333333333"

NO_REFUNDS = """
forbid(principal, action == Aileron::Action::"stripe.create-refund", resource);
"""
BIG_REFUNDS_NEED_APPROVAL = """
@outcome("approval_required")
forbid(principal, action == Aileron::Action::"stripe.create-refund", resource)
when { context.args has amount && context.args.amount > 5000 };
"""
SUPPORT_MAY_REFUND_FREELY = f"""
@waive("approval")
permit(principal in Aileron::Team::"{TEAM_SUPPORT}", action == Aileron::Action::"stripe.create-refund", resource);
"""
UNGUARDED_AMOUNT = """
forbid(principal, action == Aileron::Action::"stripe.create-refund", resource)
when { context.args.amount > 5000 };
"""


def doc(name: str, cedar: str) -> PolicyDoc:
    return PolicyDoc(id=f"id-{name}", name=name, cedar=cedar)


def decide(
    engine: Engine,
    *,
    args: dict[str, Any] | None = None,
    teams: tuple[str, ...] = (),
    default_approval: bool = False,
    action: str = "stripe.create-refund",
    connector: str = "stripe",
    project_id: str | None = None,
) -> Decision:
    return engine.decide(
        user_id=USER,
        team_ids=teams,
        session_id="ses-1",
        agent="claude-code",
        project_id=project_id,
        connector=connector,
        action=action,
        args=args or {},
        default_approval=default_approval,
    )


# --- the built-in permit and the connector's default ----------------------------------------------------------


def test_a_matched_action_is_allowed_without_policies() -> None:
    decision = decide(Engine([]))
    assert decision == Decision("allow", "no policy forbids it", ())


def test_the_connectors_default_approval_holds_without_policies() -> None:
    decision = decide(Engine([]), default_approval=True)
    assert decision.outcome == "approval_required"
    assert decision.reason == "stripe.create-refund needs approval by default"
    assert decision.policy_ids == ()


@pytest.mark.parametrize("default_approval", [False, True])
def test_without_policies_the_shortcut_decides_as_cedar_would(default_approval: bool) -> None:
    unrelated = Engine(
        [doc("other action", 'forbid(principal, action == Aileron::Action::"github.deploy", resource);')]
    )
    assert decide(Engine([]), default_approval=default_approval) == decide(unrelated, default_approval=default_approval)


# --- forbids ---------------------------------------------------------------------------------------------------


def test_a_forbid_without_annotation_denies_and_names_the_policy() -> None:
    decision = decide(Engine([doc("no refunds", NO_REFUNDS)]))
    assert decision.outcome == "deny"
    assert decision.reason == 'policy "no refunds" forbids it'
    assert decision.policy_ids == ("id-no refunds",)


def test_a_forbid_only_applies_to_the_action_it_names() -> None:
    decision = decide(Engine([doc("no refunds", NO_REFUNDS)]), action="stripe.list-charges")
    assert decision.outcome == "allow"


def test_an_approval_required_forbid_holds_the_action_when_its_condition_matches() -> None:
    engine = Engine([doc("big refunds", BIG_REFUNDS_NEED_APPROVAL)])
    held = decide(engine, args={"amount": 9000})
    assert held.outcome == "approval_required"
    assert held.reason == 'policy "big refunds" requires approval'
    assert held.policy_ids == ("id-big refunds",)
    assert decide(engine, args={"amount": 100}).outcome == "allow"
    assert decide(engine, args={}).outcome == "allow"  # the `has` guard keeps it from erroring


def test_deny_wins_over_approval_required() -> None:
    engine = Engine([doc("big refunds", BIG_REFUNDS_NEED_APPROVAL), doc("no refunds", NO_REFUNDS)])
    decision = decide(engine, args={"amount": 9000})
    assert decision.outcome == "deny"
    assert decision.policy_ids == ("id-no refunds",)


def test_context_carries_agent_session_and_project() -> None:
    cedar = """forbid(principal, action, resource)
    when { context.agent == "codex" || context.project == "" || context.session != "ses-1" };"""
    engine = Engine([doc("context", cedar)])
    assert decide(engine).outcome == "deny"  # no project
    assert decide(engine, project_id="p-1").outcome == "allow"


def test_a_forbid_can_target_a_whole_connector() -> None:
    engine = Engine([doc("no stripe", 'forbid(principal, action, resource == Aileron::Connector::"stripe");')])
    assert decide(engine).outcome == "deny"
    assert decide(engine, connector="github", action="github.create-issue").outcome == "allow"


# --- team scoping --------------------------------------------------------------------------------------------


def test_a_team_scoped_forbid_applies_only_to_members_of_that_team() -> None:
    cedar = f'forbid(principal in Aileron::Team::"{TEAM_PAYMENTS}", action, resource);'
    engine = Engine([doc("payments frozen", cedar)])
    assert decide(engine, teams=(TEAM_PAYMENTS,)).outcome == "deny"
    assert decide(engine, teams=(TEAM_SUPPORT, TEAM_PAYMENTS)).outcome == "deny"
    assert decide(engine, teams=(TEAM_SUPPORT,)).outcome == "allow"
    assert decide(engine).outcome == "allow"


def test_a_policy_can_name_the_user_directly() -> None:
    engine = Engine([doc("not this user", f'forbid(principal == Aileron::User::"{USER}", action, resource);')])
    assert decide(engine).outcome == "deny"


# --- waive ---------------------------------------------------------------------------------------------------


def test_a_waive_lifts_the_default_approval_for_the_team_it_names() -> None:
    engine = Engine([doc("support refunds", SUPPORT_MAY_REFUND_FREELY)])
    waived = decide(engine, teams=(TEAM_SUPPORT,), default_approval=True)
    assert waived.outcome == "allow"
    assert waived.reason == 'policy "support refunds" waives the approval stripe.create-refund needs by default'
    assert waived.policy_ids == ("id-support refunds",)
    assert decide(engine, teams=(TEAM_PAYMENTS,), default_approval=True).outcome == "approval_required"


def test_a_waive_cannot_lift_a_forbid() -> None:
    engine = Engine([doc("support refunds", SUPPORT_MAY_REFUND_FREELY), doc("no refunds", NO_REFUNDS)])
    assert decide(engine, teams=(TEAM_SUPPORT,), default_approval=True).outcome == "deny"
    engine = Engine([doc("support refunds", SUPPORT_MAY_REFUND_FREELY), doc("big", BIG_REFUNDS_NEED_APPROVAL)])
    held = decide(engine, teams=(TEAM_SUPPORT,), args={"amount": 10_000}, default_approval=True)
    assert held.outcome == "approval_required"
    assert held.policy_ids == ("id-big",)


# --- fail closed -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [{}, {"amount": "9000"}, {"amount": 1.5}], ids=["missing", "string", "float"])
def test_a_policy_whose_evaluation_errors_denies_instead_of_being_skipped(args: dict[str, Any]) -> None:
    engine = Engine([doc("unguarded", UNGUARDED_AMOUNT)])
    decision = decide(engine, args=args)
    assert decision.outcome == "deny"
    assert 'policy "unguarded" failed' in decision.reason
    assert "fail closed" in decision.reason
    assert decision.policy_ids == ("id-unguarded",)


def test_an_erroring_policy_denies_even_when_a_waive_would_allow() -> None:
    engine = Engine([doc("support refunds", SUPPORT_MAY_REFUND_FREELY), doc("unguarded", UNGUARDED_AMOUNT)])
    assert decide(engine, teams=(TEAM_SUPPORT,), default_approval=True).outcome == "deny"


def test_an_erroring_policy_does_not_matter_when_it_evaluates_cleanly() -> None:
    engine = Engine([doc("unguarded", UNGUARDED_AMOUNT)])
    assert decide(engine, args={"amount": 10}).outcome == "allow"
    assert decide(engine, args={"amount": 10_000}).outcome == "deny"


# --- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cedar", [NO_REFUNDS, BIG_REFUNDS_NEED_APPROVAL, SUPPORT_MAY_REFUND_FREELY])
def test_the_documented_shapes_validate(cedar: str) -> None:
    policy_validate(cedar)


@pytest.mark.parametrize(
    "cedar,says",
    [
        ("permit(principal, action, resource);", "waive"),
        ('@waive("everything") permit(principal, action, resource);', "waive"),
        ('@outcome("maybe") forbid(principal, action, resource);', "@outcome must be"),
        ('@waive("approval") forbid(principal, action, resource);', "not @waive"),
        ('@outcome("deny") permit(principal, action, resource);', "waive"),
        ('@reason("x") forbid(principal, action, resource);', "not @reason"),
        ("forbid(principal, action, resource", "does not parse"),
        ("forbid(principal == ?principal, action, resource);", "template"),
        ("", "no policy statement"),
        ("// just a comment\n", "no policy statement"),
    ],
)
def test_validation_refuses_what_aileron_does_not_accept(cedar: str, says: str) -> None:
    with pytest.raises(PolicyError) as raised:
        policy_validate(cedar, name="night refunds")
    message = str(raised.value)
    assert says in message
    assert 'policy "night refunds"' in message
    assert "\n" not in message


def test_validation_names_the_statement_of_a_multi_statement_policy() -> None:
    with pytest.raises(PolicyError, match=r"statement 2"):
        policy_validate(NO_REFUNDS + "permit(principal, action, resource);", name="two")


def test_the_engine_refuses_an_invalid_policy_naming_it() -> None:
    with pytest.raises(PolicyError, match=r'policy "bad"'):
        Engine([doc("good", NO_REFUNDS), doc("bad", "permit(principal, action, resource);")])


def test_a_policy_document_may_hold_several_statements() -> None:
    engine = Engine([doc("both", BIG_REFUNDS_NEED_APPROVAL + SUPPORT_MAY_REFUND_FREELY)])
    assert decide(engine, teams=(TEAM_SUPPORT,), args={"amount": 10}, default_approval=True).outcome == "allow"
    held = decide(engine, teams=(TEAM_SUPPORT,), args={"amount": 10_000}, default_approval=True)
    assert held.outcome == "approval_required" and held.policy_ids == ("id-both",)


# --- sanitization --------------------------------------------------------------------------------------------


def test_arguments_are_sanitized_for_cedar() -> None:
    raw: dict[Any, Any] = {
        "text": "x",
        "count": 3,
        "flag": True,
        "ratio": 0.25,
        "whole": 2.0,
        "nan": float("nan"),
        "gone": None,
        "huge": 2**70,
        "negative_huge": -(2**64),
        "items": [1, None, "a", 1.5],
        "nested": {"inner": {"deep": None, "keep": 1}},
        "sneaky": {"__entity": {"type": "Aileron::Team", "id": "admins"}},
        7: "numeric key",
    }
    assert cedar_args(raw) == {
        "text": "x",
        "count": 3,
        "flag": True,
        "ratio": "0.25",
        "whole": "2",
        "nan": "nan",
        "huge": str(2**70),
        "negative_huge": str(-(2**64)),
        "items": [1, "a", "1.5"],
        "nested": {"inner": {"keep": 1}},
        "sneaky": '{"__entity": {"id": "admins", "type": "Aileron::Team"}}',
        "7": "numeric key",
    }


def test_sanitized_arguments_evaluate_without_errors() -> None:
    cedar = """forbid(principal, action, resource)
    when { context.args has ratio && context.args.ratio == "0.25" && context.args.huge like "1180*" };"""
    engine = Engine([doc("strings", cedar)])
    decision = decide(engine, args={"ratio": 0.25, "huge": 2**70, "none": None, "deep": [[[{"a": None}]]]})
    assert decision.outcome == "deny" and decision.policy_ids == ("id-strings",)


def test_deeply_nested_arguments_do_not_break_the_evaluation() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    assert decide(Engine([doc("no refunds", NO_REFUNDS)]), args={"deep": deep}).outcome == "deny"
    assert decide(Engine([]), args={"deep": deep}).outcome == "allow"


# --- egress --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,allowed",
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("example.com.", True),
        ("api.example.com", False),
        ("pypi.org", False),
        ("files.pythonhosted.org", True),
        ("a.b.pythonhosted.org", True),
        ("pythonhosted.org", False),
        ("evilpythonhosted.org", False),
        (".pythonhosted.org", False),
        ("example.com.evil.net", False),
    ],
)
def test_egress_patterns_match_exact_hosts_and_subdomains_of_wildcards(host: str, allowed: bool) -> None:
    assert egress_allows(["example.com", "*.PythonHosted.org"], host) is allowed


def test_no_patterns_allow_nothing() -> None:
    assert egress_allows([], "example.com") is False


@pytest.mark.parametrize("pattern", ["example.com", "*.example.com", "API.Example.COM", "10.0.0.1", "my_host.local"])
def test_egress_patterns_that_validate(pattern: str) -> None:
    egress_pattern_validate(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "*",
        "*.com",
        "ex*.com",
        "*.*.com",
        "https://example.com",
        "example.com:443",
        "example.com/path",
        "example..com",
        "-bad.com",
        " example.com",
        "example.com.",
        "a" * 64 + ".com",
    ],
)
def test_egress_patterns_that_do_not(pattern: str) -> None:
    with pytest.raises(PolicyError):
        egress_pattern_validate(pattern)
