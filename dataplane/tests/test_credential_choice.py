"""The data plane's per-request choice among a session's credentials for one connector (most specific first)."""

from __future__ import annotations

from dataplane.control import CredentialRef, credential_for


def ref(name: str, binding: str = "personal", actions: tuple[str, ...] = ()) -> CredentialRef:
    return CredentialRef("github", "v", name, name, binding, frozenset(actions))


def test_a_pin_wins_then_an_action_binding_then_the_first_unbound() -> None:
    team, personal = ref("team", "team"), ref("personal")
    bound = ref("issues", "personal", ("github.create-issue",))
    assert credential_for((team, bound, personal), "github.get-repo") is team
    assert credential_for((team, bound, personal), "github.create-issue") is bound
    pinned = ref("pinned", "pinned")
    assert credential_for((pinned, team, bound), "github.create-issue") is pinned


def test_credentials_bound_to_other_actions_serve_nothing_else() -> None:
    bound = ref("issues", "team", ("github.create-issue",))
    assert credential_for((bound,), "github.delete-repo") is None
    assert credential_for((), "github.get-repo") is None
