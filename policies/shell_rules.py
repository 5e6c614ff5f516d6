"""An organization's shell policy as data: bash glob patterns for the commands its agents' shells may run.

Pure (no ORM): the control plane validates with it, the data plane parses its session context with it and the
sandbox launcher re-checks what it writes into the sandbox. The patterns are matched in bash itself, by the
mediated shell (runtime/sandbox/shell), against the command line as bash prints it in $BASH_COMMAND.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

MODES = ("enforce", "audit")
MAX_PATTERNS = 200  # per list: every command is matched against each one, in bash
MAX_PATTERN_CHARS = 300
# Control characters could end a line of the generated policy file or an audit header; format characters
# (bidirectional overrides, zero-width joiners) would make a pattern read differently from what it matches.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


class ShellRuleError(ValueError):
    """A shell policy that cannot be used; `pointer` names the field (RFC 6901), e.g. "/deny/3"."""

    def __init__(self, message: str, *, pointer: str) -> None:
        super().__init__(message)
        self.pointer = pointer


@dataclass(frozen=True, slots=True)
class ShellRules:
    """What the mediated shell enforces. The default (nothing listed) blocks nothing but the shell's own guard."""

    mode: str = "enforce"  # enforce: matching commands are blocked; audit: they run and are recorded
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()  # when not empty, a command must match one of these (or be shell syntax)
    record_allowed: bool = False  # also record every command that runs, not only refused ones

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "deny": list(self.deny),
            "allow": list(self.allow),
            "record_allowed": self.record_allowed,
        }


def shell_pattern_validate(pattern: Any, *, pointer: str) -> str:
    """The pattern if bash can match it safely as given; otherwise ShellRuleError naming the field."""
    if not isinstance(pattern, str):
        raise ShellRuleError("A shell pattern must be a string.", pointer=pointer)
    if not pattern.strip():
        raise ShellRuleError("A shell pattern may not be empty.", pointer=pointer)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ShellRuleError(
            f"A shell pattern has at most {MAX_PATTERN_CHARS} characters ({len(pattern)} given).", pointer=pointer
        )
    if pattern != pattern.strip():
        # $BASH_COMMAND never starts or ends with a space, so such a pattern would silently never match.
        raise ShellRuleError(f"The shell pattern {pattern!r} starts or ends with a space.", pointer=pointer)
    for char in pattern:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ShellRuleError(
                f"The shell pattern {pattern!r} contains the control or invisible character U+{ord(char):04X}.",
                pointer=pointer,
            )
    return pattern


def _patterns(value: Any, *, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ShellRuleError(f"{field} must be a list of patterns.", pointer=f"/{field}")
    if len(value) > MAX_PATTERNS:
        raise ShellRuleError(f"At most {MAX_PATTERNS} {field} patterns ({len(value)} given).", pointer=f"/{field}")
    kept: list[str] = []
    for index, pattern in enumerate(value):
        checked = shell_pattern_validate(pattern, pointer=f"/{field}/{index}")
        if checked not in kept:
            kept.append(checked)
    return tuple(kept)


def shell_rules_parse(value: Any) -> ShellRules:
    """Shell rules from their JSON shape ({"mode", "deny", "allow", "record_allowed"}); duplicates dropped.

    An absent or null value is the default policy. Raises ShellRuleError."""
    if value is None:
        return ShellRules()
    if not isinstance(value, dict):
        raise ShellRuleError("A shell policy must be an object.", pointer="")
    mode = value.get("mode", "enforce")
    if mode not in MODES:
        raise ShellRuleError(f"mode must be one of {', '.join(MODES)}.", pointer="/mode")
    record_allowed = value.get("record_allowed", False)
    if not isinstance(record_allowed, bool):
        raise ShellRuleError("record_allowed must be true or false.", pointer="/record_allowed")
    return ShellRules(
        mode=str(mode),
        deny=_patterns(value.get("deny"), field="deny"),
        allow=_patterns(value.get("allow"), field="allow"),
        record_allowed=record_allowed,
    )
