"""Strict mediation: what it refuses, from the launch and from the organization's settings, and what it adds."""

from __future__ import annotations

import pytest

from runtime.sandbox.mediation import strict_launch_refusal, strict_organization_refusal, strict_shell_policy

ALLOWLIST = {"mode": "allowlist", "allow": ["pypi.org"]}
ENFORCED = {"mode": "enforce", "deny": [], "allow": ["git *", "ls*"], "record_allowed": False}


@pytest.mark.parametrize("sandbox", ["docker", "netns"])
@pytest.mark.parametrize("tier", ["base", "image", "build"])
def test_it_accepts_a_sandbox_running_an_image_from_the_base(sandbox: str, tier: str) -> None:
    assert strict_launch_refusal(sandbox=sandbox, tier=tier) is None


def test_it_refuses_running_unsandboxed() -> None:
    refusal = strict_launch_refusal(sandbox="none", tier="base")
    assert refusal is not None and "--sandbox none runs the agent unsandboxed" in refusal and "\n" not in refusal


def test_it_refuses_a_byo_image() -> None:
    refusal = strict_launch_refusal(sandbox="docker", tier="byo")
    assert refusal is not None and "a bring-your-own image" in refusal and "\n" not in refusal


def test_it_accepts_an_organization_with_an_egress_allowlist_and_an_enforced_shell_allowlist() -> None:
    assert strict_organization_refusal(egress=ALLOWLIST, shell_policy=ENFORCED) is None


@pytest.mark.parametrize(
    ("egress", "shell_policy", "missing"),
    [
        ({"mode": "open", "allow": []}, ENFORCED, ["an egress allow list"]),
        (ALLOWLIST, {**ENFORCED, "mode": "audit"}, ["an enforced shell policy"]),
        (ALLOWLIST, {**ENFORCED, "allow": []}, ["an enforced shell policy"]),
        ({"mode": "open"}, {"mode": "enforce", "deny": ["rm *"]}, ["an egress allow list", "an enforced shell"]),
        (None, None, ["an egress allow list", "an enforced shell policy"]),  # the API answered nothing usable
    ],
)
def test_it_refuses_in_one_line_naming_what_the_organization_lacks(
    egress: object, shell_policy: object, missing: list[str]
) -> None:
    refusal = strict_organization_refusal(egress=egress, shell_policy=shell_policy)
    assert refusal is not None and "\n" not in refusal
    assert refusal.startswith('mediation is "strict" in this project\'s devcontainer.json, but the organization lacks ')
    for what in missing:
        assert what in refusal
    assert ("egress" in refusal) == ("an egress allow list" in missing)


def test_strict_audits_every_command_whatever_the_organization_records() -> None:
    assert strict_shell_policy(ENFORCED) == {**ENFORCED, "record_allowed": True}
    assert ENFORCED["record_allowed"] is False
