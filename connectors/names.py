"""Names that refer to the installed catalog (connectors, action ids, `prefix*` patterns), checked. Pure.

A policy, approval rule or credential naming a connector or action that is not installed is accepted by
nothing at request time: it simply never matches. So such names are refused when written, with the closest
installed names as suggestions (`github.create-isue` -> `github.create-issue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher, get_close_matches

from connectors.package import Connector

_SUGGESTIONS = 3
_NEARLY = 0.1  # suggestions scoring this much less than the best one are noise


class UnknownName(ValueError):
    """NAME refers to nothing installed; SUGGESTIONS are the closest valid names (maybe none)."""

    def __init__(self, message: str, *, name: str, suggestions: list[str]) -> None:
        hint = f" Did you mean {_either(suggestions)}?" if suggestions else ""
        super().__init__(message + hint)
        self.name = name
        self.suggestions = suggestions


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _closest(name: str, candidates: Sequence[str]) -> list[str]:
    """Up to three close names, only those about as close as the closest (a one-letter typo names one)."""
    close = get_close_matches(name, sorted(set(candidates)), n=_SUGGESTIONS, cutoff=0.6)
    scores = [SequenceMatcher(None, name, c).ratio() for c in close]
    return [c for c, score in zip(close, scores, strict=True) if score >= scores[0] - _NEARLY]


def connector_name_check(name: str, connectors: Sequence[Connector]) -> None:
    names = [c.name for c in connectors]
    if name not in names:
        closest = _closest(name, names)
        listed = "" if closest else f" Installed: {', '.join(sorted(names))}."
        raise UnknownName(f"No connector named {name!r} is installed.{listed}", name=name, suggestions=closest)


def action_id_check(action_id: str, connectors: Sequence[Connector], *, connector: str | None = None) -> None:
    """ACTION_ID is `connector.action` of an installed connector (of CONNECTOR when given)."""
    ids = [a.id for c in connectors if connector in (None, c.name) for a in c.actions]
    if action_id not in ids:
        of = f" of the {connector} connector" if connector else ""
        raise UnknownName(
            f"No action {action_id!r}{of} is installed (`aileron actions list` shows them).",
            name=action_id,
            suggestions=_closest(action_id, ids),
        )


def action_pattern_check(pattern: str, connectors: Sequence[Connector]) -> None:
    """PATTERN is `*`, a `prefix*` that matches at least one installed action, or an installed action id."""
    if not pattern.endswith("*"):
        action_id_check(pattern, connectors)
        return
    ids = [a.id for c in connectors for a in c.actions]
    prefix = pattern[:-1]
    if not any(i.startswith(prefix) for i in ids):
        wildcards = [f"{c.name}.*" for c in connectors]
        raise UnknownName(
            f"{pattern!r} matches no installed action.",
            name=pattern,
            suggestions=_closest(pattern, wildcards) or _closest(pattern, [i + "*" for i in ids]),
        )
