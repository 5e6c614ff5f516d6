"""The real agents' pins, image lines and launch commands (runtime.sandbox.agents), without Docker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runtime.sandbox import agents
from runtime.sandbox.agents import AGENTS, AgentError, Fetched


def test_with_takes_known_agents_only_and_names_them_on_a_mistake() -> None:
    assert agents.parse_with("codex, claude-code,codex") == ("claude-code", "codex")
    assert agents.parse_with("") == ()
    with pytest.raises(
        AgentError, match="unknown agent 'claude' for --with: choose from claude-code, codex, gemini-cli"
    ):
        agents.parse_with("claude")


def test_the_label_carries_the_pins_and_an_older_pin_counts_as_absent() -> None:
    label = agents.label_value(["gemini-cli", "claude-code"])
    assert label == f"claude-code@{AGENTS['claude-code'].version},gemini-cli@{AGENTS['gemini-cli'].version}"
    assert agents.agents_in(label) == ("claude-code", "gemini-cli")
    assert agents.agents_in("claude-code@0.0.1,codex@" + AGENTS["codex"].version) == ("codex",)
    assert agents.agents_in(None) == ()


def test_npm_pack_file_names_and_the_native_parts_per_architecture() -> None:
    assert agents.tarball_name("@openai/codex@0.171.0-linux-x64") == "openai-codex-0.171.0-linux-x64.tgz"
    claude, codex = AGENTS["claude-code"], AGENTS["codex"]
    assert agents.npm_specs(claude, "aarch64") == (f"@anthropic-ai/claude-code-linux-arm64@{claude.version}",)
    assert agents.npm_specs(codex, "x86_64") == (
        f"@openai/codex@{codex.version}",
        f"@openai/codex@{codex.version}-linux-x64",
    )
    assert agents.npm_specs(AGENTS["gemini-cli"], "x86_64") == (f"@google/gemini-cli@{AGENTS['gemini-cli'].version}",)


def test_the_image_lines_install_node_only_for_javascript_agents_and_check_each_command() -> None:
    only_claude = agents.dockerfile_lines(Fetched(agents=(AGENTS["claude-code"],), arch="x86_64", tarballs={}, debs=()))
    assert (
        "dpkg" not in only_claude
        and "ln -sf /opt/aileron-agents/claude-code/package/claude /usr/local/bin/claude" in only_claude
    )
    assert "claude --version" in only_claude
    both = agents.dockerfile_lines(
        Fetched(agents=(AGENTS["codex"], AGENTS["gemini-cli"]), arch="x86_64", tarballs={}, debs=(Path("n.deb"),))
    )
    assert "dpkg -i /tmp/agents/debs/*.deb" in both
    assert "/opt/aileron-agents/codex/node_modules/@openai/codex-linux-x64 --strip-components=1" in both
    assert "codex --version" in both and "gemini --version" in both


PLACEHOLDER = "placeholder-key-0123456789abcdef"


def run_script(argv: list[str], home: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(home), "ANTHROPIC_API_KEY": PLACEHOLDER}
    return subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=30, check=False)


def test_an_agent_missing_from_the_image_is_one_line_with_the_command_that_adds_it(tmp_path: Path) -> None:
    for command, name in (("claude", "claude-code"), ("codex", "codex"), ("gemini", "gemini-cli")):
        argv = agents.launch_argv([command, "-p", "hi"], hint_file="/etc/aileron/hint.txt")
        assert argv is not None
        result = run_script(argv, tmp_path, "/usr/bin:/bin")
        assert result.returncode == 127
        assert result.stderr == (
            f"aileron: {command} is not in this sandbox image: run `aileron sandbox build-base --with {name}`\n"
        )
    assert "uncomment the codex lines in the project's Dockerfile" in agents.missing_line("codex", tier="build")
    assert agents.missing_line("gemini", tier="host") == (
        "aileron: gemini is not installed on this host: "
        f"npm install -g @google/gemini-cli@{AGENTS['gemini-cli'].version}"
    )
    assert agents.launch_argv(["./agent.sh"], hint_file="/h") is None


def test_claude_starts_without_questions_with_the_hint_and_the_users_arguments(tmp_path: Path) -> None:
    """A stand-in `claude` records its arguments: the first-run answers are written, the hint appended."""
    bin_dir, hint = tmp_path / "bin", tmp_path / "hint.txt"
    bin_dir.mkdir()
    hint.write_text("use the github command\n")
    fake = bin_dir / "claude"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "ARG $a"; done\n')
    fake.chmod(0o755)
    argv = agents.launch_argv(["claude", "-p", "fix it"], hint_file=str(hint), mcp_config="/m.json")
    assert argv is not None
    result = run_script(argv, tmp_path, f"{bin_dir}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ARG --dangerously-skip-permissions",
        "ARG --append-system-prompt",
        "ARG use the github command",
        "ARG --mcp-config",
        "ARG /m.json",
        "ARG -p",
        "ARG fix it",
    ]
    state = json.loads((tmp_path / ".claude.json").read_text())
    assert state == {
        "hasCompletedOnboarding": True,
        "bypassPermissionsModeAccepted": True,
        "customApiKeyResponses": {"approved": [PLACEHOLDER[-20:]]},  # Claude Code's own record of an accepted key
        "projects": {str(tmp_path): {"hasTrustDialogAccepted": True}},  # the folder it starts in
    }
