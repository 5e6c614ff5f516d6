"""The mediated shell: the files and the command line that put every bash in a sandbox under the shell policy.

Pure (no Django), for `aileron launch`:

    files = shell_files(policy, session_id=session_id)   # in-sandbox path -> content, written read-only
    argv = shell_argv(["claude"])                          # the agent, with BASH_ENV pointing at the rc file
    env = shell_env()                                      # the same variables, for a backend that takes env

`policy` is the organization's shell policy as the API returns it (GET /api/v1/orgs/{org}/shell-policy/). The
rc file (see bashrc.py) sets a DEBUG trap in every bash that reads it; BASH_ENV makes every non-interactive
bash read it (the agent's `bash -c` tool calls, scripts), /etc/bash.bashrc every interactive one. What it can
and cannot stop is in the README, "Mediated shell".
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from policies.shell_rules import ShellRules, shell_rules_parse
from runtime.sandbox.shell.bashrc import BASHRC

SHELL_DIR = "/etc/aileron/shell"
RC_NAME = "aileron.bashrc"
POLICY_NAME = "policy.sh"
SYSTEM_BASHRC = "/etc/bash.bashrc"  # Debian's bash reads it in every interactive shell, even with --rcfile
BASH = "/bin/bash"
_SAFE_FOLDER = re.compile(r"/[A-Za-z0-9._/-]+")


def _folder(folder: str) -> str:
    # Written unquoted into comments and quoted into bash strings: keep it to characters that need no quoting.
    if not _SAFE_FOLDER.fullmatch(folder) or "/../" in f"{folder}/" or folder.endswith("/"):
        raise ValueError(f"the mediated shell's folder must be a plain absolute path, not {folder!r}")
    return folder


def rc_path(folder: str = SHELL_DIR) -> str:
    return f"{_folder(folder)}/{RC_NAME}"


def policy_script(rules: ShellRules, *, session_id: str) -> str:
    """policy.sh: the rules as bash assignments, each pattern single-quoted (shlex.quote), one per line."""

    def array(patterns: tuple[str, ...]) -> str:
        if not patterns:
            return "()"
        return "(\n" + "".join(f"    {shlex.quote(p)}\n" for p in patterns) + ")"

    return (
        f"# The shell policy of Aileron session {shlex.quote(session_id)}, written by `aileron launch`. Read by "
        f"{RC_NAME}.\n"
        f"__aileron_session={shlex.quote(session_id)}\n"
        f"__aileron_mode={shlex.quote(rules.mode)}\n"
        f"__aileron_record_allowed={1 if rules.record_allowed else 0}\n"
        f"__aileron_deny={array(rules.deny)}\n"
        f"__aileron_allow={array(rules.allow)}\n"
    )


def shell_files(policy: dict[str, Any] | None, *, session_id: str, folder: str = SHELL_DIR) -> dict[str, bytes]:
    """The files to write into the sandbox (absolute in-sandbox path -> content), read-only.

    The policy is validated again here (policies.shell_rules.ShellRuleError if it is not a shell policy): what
    lands in policy.sh is sourced by every bash in the sandbox."""
    rules = shell_rules_parse(policy)
    where = _folder(folder)
    return {
        f"{where}/{RC_NAME}": BASHRC.replace("@DIR@", where).encode(),
        f"{where}/{POLICY_NAME}": policy_script(rules, session_id=session_id).encode(),
        SYSTEM_BASHRC: (
            "# Written by `aileron launch`: every interactive bash in this sandbox is the mediated shell.\n"
            f". {where}/{RC_NAME}\n"
        ).encode(),
    }


def shell_env(folder: str = SHELL_DIR) -> dict[str, str]:
    """BASH_ENV makes every non-interactive bash read the rc file; SHELL makes agents that pick $SHELL use bash."""
    return {"BASH_ENV": rc_path(folder), "SHELL": BASH}


def shell_argv(agent_argv: list[str], *, folder: str = SHELL_DIR) -> list[str]:
    """The command that runs the agent with the mediated shell: the agent itself with BASH_ENV set (every bash it
    starts is mediated), or, with no agent command, an interactive mediated bash."""
    if not agent_argv:
        return [BASH, "--rcfile", rc_path(folder), "-i"]
    return ["/usr/bin/env", *(f"{k}={v}" for k, v in shell_env(folder).items()), *agent_argv]
