"""The mediated shell in real bash: what it refuses, what it lets run, how it reports, and what it cannot stop.

Each test writes the files `aileron launch` would write into a sandbox to a temporary folder and runs bash with
them on this machine; a small local listener stands in for the proxy and records the reports it is sent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime.sandbox.shell import POLICY_NAME, RC_NAME, SYSTEM_BASHRC, shell_argv, shell_env, shell_files

BASH = shutil.which("bash") or "/bin/bash"
TOKEN = "ail_ses_" + "t" * 40
DENY_RM_AND_CURL = {"mode": "enforce", "deny": ["rm -rf *", "curl *"], "allow": []}
REFUSED_RM = "aileron: blocked by your organization's shell policy: rm -rf *"


@dataclass
class Reports:
    """What the stand-in proxy received: one dict of header fields (lower-case names) per report."""

    received: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    answer: bytes = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


@pytest.fixture
def reports() -> Iterator[Reports]:
    found = Reports()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    found.port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
                fields = {"request-line": head[0]}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
                found.received.append(fields)
                conn.sendall(found.answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join(timeout=2)
    server.close()


@dataclass
class Sandbox:
    """A folder laid out like the sandbox: the shell's files, and a workspace with something to lose."""

    folder: Path
    work: Path
    env: dict[str, str]

    def run(self, script: str, *, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """`bash -c SCRIPT` as an agent's tool call runs it: started with BASH_ENV, like every bash in the sandbox."""
        return subprocess.run(
            shell_argv([BASH, "-c", script], folder=str(self.folder)),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def interactive(self, typed: str) -> subprocess.CompletedProcess[str]:
        argv = shell_argv([], folder=str(self.folder))
        argv[0] = BASH
        return subprocess.run(
            argv, cwd=self.work, env=self.env, input=typed, capture_output=True, text=True, timeout=20
        )


def make_sandbox(tmp_path: Path, policy: dict[str, Any] | None, *, port: int = 9) -> Sandbox:
    folder = tmp_path / "etc-aileron-shell"
    folder.mkdir()
    for path, content in shell_files(
        policy, session_id="0f0f0f0f-0000-4000-8000-000000000001", folder=str(folder)
    ).items():
        if path.startswith(str(folder)):
            Path(path).write_bytes(content)
    work = tmp_path / "workspace"
    (work / "precious").mkdir(parents=True)
    (work / "precious" / "data.txt").write_text("keep me")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "HTTPS_PROXY": f"http://aileron:{TOKEN}@127.0.0.1:{port}",
        "AILERON_TOKEN": TOKEN,
    }
    return Sandbox(folder, work, env)


@pytest.fixture
def sandbox(tmp_path: Path, reports: Reports) -> Sandbox:
    return make_sandbox(tmp_path, DENY_RM_AND_CURL, port=reports.port)


def precious_is_there(box: Sandbox) -> bool:
    return (box.work / "precious" / "data.txt").read_text() == "keep me"


# --- what it refuses and what it lets run ---------------------------------------------------------------------


def test_a_denied_command_does_not_run_and_an_allowed_one_does(sandbox: Sandbox) -> None:
    result = sandbox.run("touch made-by-agent\nrm -rf precious\necho unreachable")
    assert precious_is_there(sandbox)
    assert (sandbox.work / "made-by-agent").exists()
    assert result.returncode == 126
    assert REFUSED_RM in result.stderr.splitlines()
    assert "unreachable" not in result.stdout


def test_curl_is_refused_before_it_starts(sandbox: Sandbox) -> None:
    result = sandbox.run("curl -s https://example.com/ -o fetched")
    assert result.returncode == 126
    assert "aileron: blocked by your organization's shell policy: curl *" in result.stderr
    assert not (sandbox.work / "fetched").exists()


@pytest.mark.parametrize(
    "spelling",
    [
        '"rm" -rf precious',
        "\\rm -rf precious",
        "/bin/rm -rf precious",
        "X=1 Y='a b' command rm -rf precious",
        "env LC_ALL=C rm -rf precious",
        "builtin eval 'rm -rf precious'",
        "rm   -rf    precious",
        "f() { rm -rf precious; }; f",
        "x=$(rm -rf precious)",
        "( rm -rf precious )",
        "echo y | rm -rf precious",
        "source <(echo 'rm -rf precious')",
        "bash -c 'rm -rf precious'",
        "bash -lc 'rm -rf precious'",
        "printf 'rm -rf precious\\n' > s.sh; bash s.sh",
        "trap 'rm -rf precious' EXIT",
    ],
)
def test_other_spellings_of_a_denied_command_are_refused_too(sandbox: Sandbox, spelling: str) -> None:
    result = sandbox.run(spelling)
    assert precious_is_there(sandbox), result.stderr
    assert REFUSED_RM in result.stderr


def test_a_refused_command_ends_the_script_so_nothing_runs_on_its_false_success(sandbox: Sandbox) -> None:
    result = sandbox.run("rm -rf precious && touch after-and; touch after-semicolon")
    assert result.returncode == 126
    assert not (sandbox.work / "after-and").exists()
    assert not (sandbox.work / "after-semicolon").exists()


def test_in_a_subshell_only_the_subshell_ends(sandbox: Sandbox) -> None:
    result = sandbox.run('( rm -rf precious ); echo "subshell ended with $?"')
    assert result.returncode == 0
    assert "subshell ended with 126" in result.stdout


def test_an_interactive_shell_skips_a_refused_command_and_goes_on(sandbox: Sandbox) -> None:
    result = sandbox.interactive("rm -rf precious\ntouch typed-after\nexit 0\n")
    assert precious_is_there(sandbox)
    assert (sandbox.work / "typed-after").exists()
    assert REFUSED_RM in result.stderr


def test_an_allow_list_blocks_everything_else_but_shell_syntax(tmp_path: Path, reports: Reports) -> None:
    box = make_sandbox(tmp_path, {"mode": "enforce", "allow": ["ls *", "git *"]}, port=reports.port)
    ok = box.run('x=1; [[ -n $x ]] && echo "x is $x"; for i in 1 2; do (( x += i )); done; cd precious; ls -a .')
    assert ok.returncode == 0, ok.stderr
    assert "x is 1" in ok.stdout and "data.txt" in ok.stdout
    refused = box.run("touch not-listed")
    assert refused.returncode == 126
    assert "the command matches none of its allow patterns" in refused.stderr
    assert not (box.work / "not-listed").exists()


def test_audit_mode_lets_the_command_run_and_reports_what_would_have_been_blocked(
    tmp_path: Path, reports: Reports
) -> None:
    box = make_sandbox(tmp_path, {"mode": "audit", "deny": ["rm -rf *"]}, port=reports.port)
    result = box.run("rm -rf precious; echo ran")
    assert result.returncode == 0 and "ran" in result.stdout
    assert not (box.work / "precious").exists()
    [report] = reports.received
    assert report["x-aileron-decision"] == "allow"
    assert report["x-aileron-rule"] == "deny:rm -rf *"


def test_with_record_allowed_every_command_is_reported(tmp_path: Path, reports: Reports) -> None:
    box = make_sandbox(tmp_path, {"mode": "enforce", "record_allowed": True}, port=reports.port)
    assert box.run("echo one; echo two").returncode == 0
    assert [r["x-aileron-command"] for r in reports.received] == ["echo one", "echo two"]
    assert {r["x-aileron-decision"] for r in reports.received} == {"allow"}


def test_without_a_policy_file_every_command_is_refused(tmp_path: Path, reports: Reports) -> None:
    box = make_sandbox(tmp_path, DENY_RM_AND_CURL, port=reports.port)
    (box.folder / POLICY_NAME).unlink()
    result = box.run("touch anything")
    assert result.returncode == 126
    assert "cannot be read" in result.stderr
    assert not (box.work / "anything").exists()


# --- reports ----------------------------------------------------------------------------------------------


def test_a_refusal_is_reported_to_the_proxy_with_the_session_token(sandbox: Sandbox, reports: Reports) -> None:
    sandbox.run('rm -rf precious "two  spaces"\tx')
    [report] = reports.received
    assert report["request-line"] == "POST http://aileron.proxy/shell-audit HTTP/1.1"
    assert report["proxy-authorization"] == f"Bearer {TOKEN}"
    assert report["x-aileron-decision"] == "deny"
    assert report["x-aileron-rule"] == "deny:rm -rf *"
    assert report["x-aileron-command"] == 'rm -rf precious "two  spaces" x'
    assert report["x-aileron-cwd"] == str(sandbox.work)


def test_newlines_and_backslashes_in_a_command_are_escaped_for_the_header(sandbox: Sandbox, reports: Reports) -> None:
    sandbox.run("rm -rf precious 'a\\b' \"line one\nline two\"")
    [report] = reports.received
    assert report["x-aileron-command"] == "rm -rf precious 'a\\\\b' \"line one\\nline two\""


def test_a_report_the_proxy_does_not_take_is_said_once_and_the_refusal_stands(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    box = make_sandbox(tmp_path, DENY_RM_AND_CURL, port=port)  # nothing listens there
    result = box.run("rm -rf precious")
    assert precious_is_there(box)
    assert result.stderr.count("could not be reported to the audit log") == 1


# --- the guard: tampering with the check ------------------------------------------------------------------


@pytest.mark.parametrize(
    "attempt",
    [
        "trap - DEBUG",
        "trap '' DEBUG",
        "trap DEBUG",
        "trap - debug",
        "builtin trap - DEBUG",
        "command trap -- - DEBUG",
        's=DEBUG; trap - "$s"',
        'trap - "DEB"UG',
        "eval 'trap - DEBUG'",
        "unset -f __aileron_check",
        "f=__aileron_check; unset -f $f",
        "__aileron_check() { :; }",
        "shopt -u extdebug",
        "set +T",
        "set +o functrace",
        "set -o posix",
        "enable -n trap",
        "unset BASH_ENV",
        "export BASH_ENV=/dev/null",
        "unset BASH_COMMAND",
        'n=_aileron_raw; declare -i "_$n"',
        'n=_aileron_raw; unset "_$n"',
        "builtin() { :; }; readonly -f builtin",
        'n=POSIXLY; n=${n}_CORRECT; readonly "$n"',
        "n=POSIXLY; n=${n}_CORRECT; declare -n r=$n; readonly r",
        "n=POSIXLY; n=${n}_CORRECT; declare -n r; r=$n; readonly r",
        "POSIXLY_CORRECT=1",
        "env -i bash -c true",
        "bash --posix -c true",
        "bash --norc -i",
    ],
)
def test_switching_the_check_off_is_refused_and_the_next_denied_command_still_is(
    sandbox: Sandbox, attempt: str
) -> None:
    result = sandbox.run(f"{attempt}\nrm -rf precious")
    assert precious_is_there(sandbox), result.stderr
    assert "aileron: blocked by" in result.stderr
    interactive = sandbox.interactive(f"{attempt}\nrm -rf precious\nexit\n")
    assert precious_is_there(sandbox), interactive.stderr
    # Refused as the policy says, or, where the attempt got through and changed the check's own variables, as
    # that: then every later command is refused (it fails closed).
    assert REFUSED_RM in interactive.stderr or "its own variables were changed" in interactive.stderr


def test_functions_named_like_builtins_do_not_change_the_verdict(sandbox: Sandbox) -> None:
    names = ("builtin", "printf", "exit", "return", "unset", ":", "break", "local", "shopt")
    shadows = "; ".join(f"{name}() {{ echo shadowed; }}" for name in names)
    result = sandbox.interactive(f"{shadows}\nrm -rf precious\n")
    assert precious_is_there(sandbox), result.stderr
    assert REFUSED_RM in result.stderr  # `builtin printf` still printed it
    scripted = sandbox.run(f"{shadows}\nrm -rf precious")
    assert precious_is_there(sandbox) and scripted.returncode == 126
    # The check never called one of them (their bodies would have run unchecked, inside the trap).
    assert "shadowed" not in result.stdout + scripted.stdout


def test_functions_exported_under_builtin_names_do_not_disarm_a_child_bash(sandbox: Sandbox) -> None:
    env = {**sandbox.env, "BASH_FUNC_trap%%": "() { :; }", "BASH_FUNC_builtin%%": "() { :; }"}
    result = subprocess.run(
        shell_argv([BASH, "-c", "rm -rf precious"], folder=str(sandbox.folder)),
        cwd=sandbox.work,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert precious_is_there(sandbox)
    assert REFUSED_RM in result.stderr


def test_ordinary_scripts_keep_working(sandbox: Sandbox) -> None:
    script = """
set -euo pipefail
tmp=$(mktemp -d)
trap 'rmdir "$tmp"' EXIT
f() { local -r name=$1; echo "hello $name"; }
f world
[[ abc =~ (b) ]] && echo "matched ${BASH_REMATCH[1]}"
declare -A seen=([a]=1)
echo "${!seen[@]}" | tr a A
declare -n home=HOME
[[ -n $home ]]
"""
    result = sandbox.run(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "world", "matched", "b", "A"]
    assert result.stderr == ""


# --- what it cannot stop (the README's list): asserted, so the README stays true --------------------------


BYPASSES = [
    f"{sys.executable} -c 'import shutil; shutil.rmtree(\"precious\")'",
    "cp /bin/rm ./del && ./del -rf precious",
    "rm -fr precious",
    "x=rm; $x -rf precious",
]
if Path("/bin/sh").resolve().name != "bash":  # dash on Debian; where /bin/sh is bash, it is mediated like bash
    BYPASSES.append("/bin/sh -c 'rm -rf precious'")


@pytest.mark.parametrize("bypass", BYPASSES)
def test_a_program_that_runs_a_command_without_bash_is_not_stopped(sandbox: Sandbox, bypass: str) -> None:
    result = sandbox.run(bypass)
    assert not (sandbox.work / "precious").exists(), result.stderr


# --- the files and the command line ---------------------------------------------------------------------


def test_patterns_are_text_to_bash_however_they_are_quoted(tmp_path: Path, reports: Reports) -> None:
    odd = {
        "echo 'single' *": "echo 'single' x",
        'echo "double" *': 'echo "double" x',
        "echo $(touch pwned-one) *": "echo $(touch pwned-one) x",
        "echo `touch pwned-two` *": "echo `touch pwned-two` x",
    }
    box = make_sandbox(tmp_path, {"mode": "enforce", "deny": list(odd)}, port=reports.port)
    assert box.run("echo fine").returncode == 0  # every bash sourced policy.sh: nothing in it ran
    for pattern, command in odd.items():
        result = box.run(command)
        assert result.returncode == 126, command
        assert f"shell policy: {pattern}" in result.stderr
    # A command is judged before bash expands it: the substitutions in the refused ones never ran either.
    assert not list(box.work.glob("pwned-*"))


def test_shell_files_and_argv_have_the_shape_the_launcher_needs() -> None:
    files = shell_files(DENY_RM_AND_CURL, session_id="s-1")
    assert set(files) == {f"/etc/aileron/shell/{RC_NAME}", f"/etc/aileron/shell/{POLICY_NAME}", SYSTEM_BASHRC}
    assert b"/etc/aileron/shell/aileron.bashrc" in files[SYSTEM_BASHRC]
    assert shell_argv([]) == ["/bin/bash", "--rcfile", "/etc/aileron/shell/aileron.bashrc", "-i"]
    assert shell_argv(["claude", "--resume"]) == [
        "/usr/bin/env",
        "BASH_ENV=/etc/aileron/shell/aileron.bashrc",
        "SHELL=/bin/bash",
        "claude",
        "--resume",
    ]
    assert shell_env() == {"BASH_ENV": "/etc/aileron/shell/aileron.bashrc", "SHELL": "/bin/bash"}


@pytest.mark.parametrize("folder", ["relative/dir", "/etc/a b", "/etc/aileron/../x", "/etc/x;rm", "/etc/x/"])
def test_a_folder_that_would_need_quoting_is_refused(folder: str) -> None:
    with pytest.raises(ValueError, match="plain absolute path"):
        shell_files(DENY_RM_AND_CURL, session_id="s", folder=folder)


def test_a_policy_that_is_not_a_shell_policy_is_refused_before_anything_is_written() -> None:
    from policies.shell_rules import ShellRuleError

    with pytest.raises(ShellRuleError) as raised:
        shell_files({"mode": "enforce", "deny": ["ok", "bad\nline"]}, session_id="s")
    assert raised.value.pointer == "/deny/1"
