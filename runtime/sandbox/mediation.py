"""What a project's `mediation` mode asks of the launch and of its organization, and what "strict" adds. Pure.

`customizations.aileron.mediation: "strict"` is for projects whose agents must leave a complete trail and reach
only what the organization listed. `aileron launch` runs it only when all of these hold, and otherwise refuses
in one line before any session is opened:

- a sandbox: `--sandbox none` runs the agent on the host, where nothing is mediated but HTTPS that honours the
  proxy settings;
- an image built FROM aileron/sandbox-base (the base, `image` or `build`): a bring-your-own image
  (`customizations.aileron.image`) is refused, since its own shell and tools are not the ones the mediated shell
  was made for;
- the organization's egress is an allow list (`PUT /api/v1/orgs/{org}/egress/ {"mode": "allowlist"}`): only the
  hosts it lists, and the connectors' own, are reachable;
- the organization's shell policy is enforced and has an allow list (`PUT .../shell-policy/ {"mode": "enforce",
  "allow": [...]}`): only the commands it lists run.

What strict adds on top of "default": every command the mediated shell runs is audited (`record_allowed` is on
in the sandbox whatever the organization's policy says), not only the refused ones.

The project folder, this setting included, is writable by the agent: strict is what a project asks for; an
organization that requires it enforces its shell policy and egress allow list itself, and those apply in every
mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STRICT = "strict"


def strict_launch_refusal(*, sandbox: str, tier: str) -> str | None:
    """Why this launch cannot be strict, from the command line and the devcontainer alone; None when it can."""
    if sandbox == "none":
        return (
            'mediation is "strict" in this project\'s devcontainer.json: it needs a sandbox, and --sandbox none '
            "runs the agent unsandboxed (use --sandbox docker or netns)"
        )
    if tier == "byo":
        return (
            'mediation is "strict" in this project\'s devcontainer.json: a bring-your-own image '
            "(customizations.aileron.image) is not allowed; use an image built FROM aileron/sandbox-base"
        )
    return None


def strict_organization_refusal(*, egress: Any, shell_policy: Any) -> str | None:
    """Why the organization's settings (as its API returns them) cannot satisfy strict; None when they can."""
    missing: list[str] = []
    if not isinstance(egress, Mapping) or egress.get("mode") != "allowlist":
        missing.append('an egress allow list (egress mode "allowlist")')
    policy = shell_policy if isinstance(shell_policy, Mapping) else {}
    if policy.get("mode") != "enforce" or not policy.get("allow"):
        missing.append('an enforced shell policy with an allow list (shell-policy mode "enforce", "allow" patterns)')
    if not missing:
        return None
    them = "it" if len(missing) == 1 else "them"
    return (
        'mediation is "strict" in this project\'s devcontainer.json, but the organization lacks '
        f'{" and ".join(missing)}: an organization admin can set {them} (or use mediation "default")'
    )


def strict_shell_policy(shell_policy: Mapping[str, Any]) -> dict[str, Any]:
    """The shell policy written into a strict sandbox: the organization's, with every command that runs audited."""
    return {**shell_policy, "record_allowed": True}
