"""devcontainer.json as aileron reads it: pure, no Docker (tests/test_sandbox_image.py builds the images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.sandbox.devcontainer import (
    DevcontainerError,
    McpServer,
    dockerfile_bases,
    load_config,
    parse_config,
    scaffold,
    strip_jsonc,
)
from runtime.sandbox.image import aileron_version, base_image_tag


def write(project: Path, text: str, name: str = ".devcontainer/devcontainer.json") -> Path:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def dockerfile(project: Path, text: str = "FROM aileron/sandbox-base:1\n", name: str = "Dockerfile") -> Path:
    return write(project, text, f".devcontainer/{name}")


def config_of(project: Path, data: object):
    write(project, json.dumps(data))
    return load_config(project)


def error_of(project: Path, data: object) -> str:
    path = write(project, data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(DevcontainerError) as caught:
        load_config(project)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_without_a_file_the_base_image_of_this_version_runs(tmp_path):
    config = load_config(tmp_path)
    assert config.image == f"aileron/sandbox-base:{aileron_version()}" == base_image_tag()
    assert (config.tier, config.build, config.byo, config.source) == ("base", None, False, None)
    assert (config.mediation, config.approval_surface, config.mcps) == ("default", "both", ())


def test_a_file_without_image_or_build_keeps_the_base_image_and_applies_its_aileron_block(tmp_path):
    config = config_of(tmp_path, {"customizations": {"aileron": {"mediation": "strict"}}})
    assert (config.tier, config.image, config.mediation) == ("base", base_image_tag(), "strict")
    assert config.source == tmp_path / ".devcontainer/devcontainer.json"


def test_comments_and_trailing_commas_are_read_and_slashes_inside_strings_are_kept(tmp_path):
    write(
        tmp_path,
        """// a sandbox for agents
        {
          /* the image, with a URL-like tag in a string */
          "image": "registry.local:5000/team/agent:1", // trailing comment
          "customizations": {
            "aileron": {
              "approval_surface": "web",
              "mcps": [
                {"name": "docs", "command": "npx", "args": ["-y", "http://x/*not a comment*/", "a//b",],},
              ],
            },
          },
        }
        """,
    )
    config = load_config(tmp_path)
    assert config.image == "registry.local:5000/team/agent:1"
    assert config.approval_surface == "web"
    assert config.mcps == (McpServer(name="docs", command="npx", args=("-y", "http://x/*not a comment*/", "a//b")),)


def test_blanking_comments_keeps_line_and_column_numbers():
    text = '{\n  /* two\n lines */ "a": 1, // end\n  "b": [1,\n  ],\n}'
    stripped = strip_jsonc(text)
    assert len(stripped) == len(text)
    assert stripped.splitlines()[2].index('"a"') == text.splitlines()[2].index('"a"')
    assert json.loads(stripped) == {"a": 1, "b": [1]}


def test_an_unterminated_block_comment_is_an_error_with_its_line(tmp_path):
    assert error_of(tmp_path, '{\n  "image": "x" /* open') == (
        "not valid JSON (unterminated /* comment: line 2 column 16)"
    )


def test_invalid_json_names_the_line(tmp_path):
    message = error_of(tmp_path, '{\n  "image": "x"\n  "build": {}\n}')
    assert message.startswith("not valid JSON (Expecting ',' delimiter: line 3 column 3")


def test_a_devcontainer_json_at_the_project_root_is_read_too(tmp_path):
    write(tmp_path, '{"image": "team/agent:2"}', name=".devcontainer.json")
    assert load_config(tmp_path).image == "team/agent:2"


def test_the_devcontainer_folder_wins_over_the_root_file(tmp_path):
    write(tmp_path, '{"image": "root/file:1"}', name=".devcontainer.json")
    write(tmp_path, '{"image": "folder/file:1"}')
    assert load_config(tmp_path).image == "folder/file:1"


def test_build_dockerfile_gives_a_build_with_its_context_args_and_target(tmp_path):
    dockerfile(tmp_path, name="Agent.Dockerfile")
    (tmp_path / "src").mkdir()
    config = config_of(
        tmp_path,
        {
            "build": {
                "dockerfile": "Agent.Dockerfile",
                "context": "../src",
                "args": {"NODE": "22", "A": "1"},
                "target": "agent",
            }
        },
    )
    assert config.tier == "build"
    assert config.build is not None
    assert config.build.dockerfile == (tmp_path / ".devcontainer/Agent.Dockerfile").resolve()
    assert config.build.context == (tmp_path / "src").resolve()
    assert config.build.args == (("A", "1"), ("NODE", "22"))
    assert config.build.target == "agent"
    assert config.image.startswith("aileron/project-") and config.image.endswith(":latest")
    assert config.byo is False


def test_the_build_context_defaults_to_the_devcontainer_folder(tmp_path):
    dockerfile(tmp_path)
    config = config_of(tmp_path, {"build": {"dockerfile": "Dockerfile"}})
    assert config.build is not None
    assert config.build.context == (tmp_path / ".devcontainer").resolve()
    assert (config.build.args, config.build.target) == ((), None)


def test_the_older_top_level_dockerFile_spelling_is_read(tmp_path):
    dockerfile(tmp_path)
    config = config_of(tmp_path, {"dockerFile": "Dockerfile", "context": ".."})
    assert config.build is not None
    assert config.build.context == tmp_path.resolve()


def test_the_project_tag_is_stable_for_a_project_and_differs_between_projects(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for project in (one, two):
        dockerfile(project)
    first = config_of(one, {"build": {"dockerfile": "Dockerfile"}}).image
    assert config_of(one, {"build": {"dockerfile": "Dockerfile"}}).image == first
    assert config_of(two, {"build": {"dockerfile": "Dockerfile"}}).image != first


def test_image_names_an_image_to_run_as_it_is(tmp_path):
    config = config_of(tmp_path, {"image": "team/agent:3"})
    assert (config.tier, config.image, config.build, config.byo) == ("image", "team/agent:3", None, False)


def test_customizations_aileron_image_is_a_byo_image_and_wins_over_build_and_image(tmp_path):
    dockerfile(tmp_path)
    config = config_of(
        tmp_path,
        {"build": {"dockerfile": "Dockerfile"}, "customizations": {"aileron": {"image": "python:3.13-slim"}}},
    )
    assert (config.tier, config.image, config.build, config.byo) == ("byo", "python:3.13-slim", None, True)
    config = config_of(tmp_path, {"image": "x:1", "customizations": {"aileron": {"image": "y:2"}}})
    assert (config.image, config.byo) == ("y:2", True)


@pytest.mark.parametrize("mode", ["default", "strict", "off"])
def test_every_mediation_mode_is_accepted(tmp_path, mode):
    assert config_of(tmp_path, {"customizations": {"aileron": {"mediation": mode}}}).mediation == mode


@pytest.mark.parametrize("surface", ["terminal", "web", "both"])
def test_every_approval_surface_is_accepted(tmp_path, surface):
    config = config_of(tmp_path, {"customizations": {"aileron": {"approval_surface": surface}}})
    assert config.approval_surface == surface


def test_mcp_servers_are_passed_through_with_their_args_and_env(tmp_path):
    mcps = [
        {"name": "docs", "command": "npx", "args": ["-y", "@acme/docs"], "env": {"B": "2", "A": "1"}},
        {"name": "local_tool.v2", "command": "/usr/local/bin/tool"},
    ]
    config = config_of(tmp_path, {"customizations": {"aileron": {"mcps": mcps}}})
    assert config.mcps == (
        McpServer(name="docs", command="npx", args=("-y", "@acme/docs"), env=(("A", "1"), ("B", "2"))),
        McpServer(name="local_tool.v2", command="/usr/local/bin/tool"),
    )
    assert config.as_dict()["mcps"][0] == {
        "name": "docs",
        "command": "npx",
        "args": ["-y", "@acme/docs"],
        "env": {"A": "1", "B": "2"},
    }


def test_other_customizations_and_unapplied_devcontainer_keys_are_listed_not_refused(tmp_path):
    dockerfile(tmp_path)
    config = config_of(
        tmp_path,
        {
            "name": "x",
            "$schema": "https://example.invalid/schema.json",
            "build": {"dockerfile": "Dockerfile", "options": ["--network=host"], "cacheFrom": "x"},
            "features": {"ghcr.io/devcontainers/features/node:1": {}},
            "forwardPorts": [3000],
            "postCreateCommand": "npm ci",
            "customizations": {"vscode": {"extensions": ["ms-python.python"]}},
        },
    )
    assert config.ignored == ("features", "forwardPorts", "postCreateCommand", "build.cacheFrom", "build.options")


def test_the_summary_says_everything_launch_needs(tmp_path):
    data = config_of(tmp_path, {"customizations": {"aileron": {"image": "y:2", "approval_surface": "terminal"}}})
    assert data.as_dict() == {
        "source": str(tmp_path / ".devcontainer/devcontainer.json"),
        "tier": "byo",
        "image": "y:2",
        "build": None,
        "byo": True,
        "mediation": "default",
        "approval_surface": "terminal",
        "mcps": [],
        "runtime": "runc",
        "project": "",
        "ignored": [],
    }


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_every_runtime_is_accepted(tmp_path, runtime):
    assert config_of(tmp_path, {"customizations": {"aileron": {"runtime": runtime}}}).runtime == runtime


def test_a_project_slug_is_read(tmp_path):
    assert config_of(tmp_path, {"customizations": {"aileron": {"project": "check-out_2"}}}).project == "check-out_2"
    assert config_of(tmp_path, {}).project == ""


AILERON = "customizations.aileron"
INVALID = [
    (
        {"customizations": {"aileron": {"project": "../etc"}}},
        f'{AILERON}.project: must be a project\'s slug, such as checkout (got "../etc")',
    ),
    (
        {"customizations": {"aileron": {"project": 5}}},
        f"{AILERON}.project: must be a project's slug, such as checkout (got 5)",
    ),
    (
        {"customizations": {"aileron": {"approval_surface": "phone"}}},
        f'{AILERON}.approval_surface: must be one of terminal, web, both (got "phone")',
    ),
    (
        {"customizations": {"aileron": {"mediation": 3}}},
        f"{AILERON}.mediation: must be one of default, strict, off (got 3)",
    ),
    (
        {"customizations": {"aileron": {"mediation": None}}},
        f"{AILERON}.mediation: must be one of default, strict, off (got null)",
    ),
    (
        {"customizations": {"aileron": {"mediaton": "strict"}}},
        f"{AILERON}.mediaton: unknown key (known: approval_surface, image, mcps, mediation, project, runtime)",
    ),
    (
        {"customizations": {"aileron": {"runtime": "kata"}}},
        f'{AILERON}.runtime: must be one of runc, gvisor (got "kata")',
    ),
    ({"customizations": {"aileron": ["strict"]}}, f"{AILERON}: must be an object (got an array)"),
    ({"customizations": "aileron"}, "customizations: must be an object (got a string)"),
    ({"customizations": {"aileron": {"image": ""}}}, f'{AILERON}.image: must be a non-empty string (got "")'),
    ({"customizations": {"aileron": {"image": "a b"}}}, f'{AILERON}.image: must be an image reference (got "a b")'),
    ({"customizations": {"aileron": {"image": 7}}}, f"{AILERON}.image: must be a non-empty string (got 7)"),
    (
        {"customizations": {"aileron": {"mcps": {"name": "x"}}}},
        f"{AILERON}.mcps: must be an array of {{name, command, args?, env?}} (got an object)",
    ),
    (
        {"customizations": {"aileron": {"mcps": ["npx x"]}}},
        f"{AILERON}.mcps[0]: must be an object {{name, command, args?, env?}} (got a string)",
    ),
    ({"customizations": {"aileron": {"mcps": [{"command": "x"}]}}}, f"{AILERON}.mcps[0].name: is required"),
    ({"customizations": {"aileron": {"mcps": [{"name": "x"}]}}}, f"{AILERON}.mcps[0].command: is required"),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": "y", "cwd": "/"}]}}},
        f"{AILERON}.mcps[0].cwd: unknown key (known: args, command, env, name)",
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": "y", "args": "-v"}]}}},
        f'{AILERON}.mcps[0].args: must be an array of strings (got "-v")',
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": "y", "args": [1]}]}}},
        f"{AILERON}.mcps[0].args: must be an array of strings (got an array)",
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": "y", "env": {"K": 1}}]}}},
        f"{AILERON}.mcps[0].env.K: must be a string (got 1)",
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "a b", "command": "y"}]}}},
        f"{AILERON}.mcps[0].name: must be letters, digits, '.', '_' or '-' (got \"a b\")",
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": "y"}, {"name": "x", "command": "z"}]}}},
        f'{AILERON}.mcps[1].name: duplicate name "x"',
    ),
    (
        {"customizations": {"aileron": {"mcps": [{"name": "x", "command": ""}]}}},
        f'{AILERON}.mcps[0].command: must be a non-empty string (got "")',
    ),
    ({"image": ""}, 'image: must be a non-empty string (got "")'),
    ({"build": "Dockerfile"}, "build: must be an object (got a string)"),
    ({"build": {"context": "."}}, "build.dockerfile: is required"),
    ({"build": {"dockerfile": 1}}, "build.dockerfile: must be a non-empty string (got 1)"),
    (
        {"dockerComposeFile": "compose.yml"},
        "dockerComposeFile: Docker Compose configurations are not supported; use image or build",
    ),
    (["image"], "must be a JSON object (got an array)"),
]


@pytest.mark.parametrize(("data", "message"), INVALID, ids=[m.split(":")[0] for _, m in INVALID])
def test_an_invalid_file_is_refused_with_the_key_path_and_the_reason(tmp_path, data, message):
    assert error_of(tmp_path, data) == message


def test_a_missing_dockerfile_is_named(tmp_path):
    folder = (tmp_path / ".devcontainer").resolve()
    message = error_of(tmp_path, {"build": {"dockerfile": "Nope"}})
    assert message == f"build.dockerfile: no such file {folder / 'Nope'}"


def test_a_missing_build_context_is_named(tmp_path):
    dockerfile(tmp_path)
    folder = (tmp_path / ".devcontainer").resolve()
    message = error_of(tmp_path, {"build": {"dockerfile": "Dockerfile", "context": "gone"}})
    assert message == f"build.context: no such folder {folder / 'gone'}"


def test_build_args_must_be_strings(tmp_path):
    dockerfile(tmp_path)
    message = error_of(tmp_path, {"build": {"dockerfile": "Dockerfile", "args": {"N": 22}}})
    assert message == "build.args.N: must be a string (got 22)"


def test_image_and_build_together_are_refused(tmp_path):
    dockerfile(tmp_path)
    message = error_of(tmp_path, {"image": "x:1", "build": {"dockerfile": "Dockerfile"}})
    assert message == "image: cannot be combined with build (choose one)"


def test_an_unreadable_file_is_one_error(tmp_path):
    path = write(tmp_path, "")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(DevcontainerError, match=r"devcontainer.json: cannot read it"):
        load_config(tmp_path)


def test_parse_config_places_relative_paths_beside_the_file_it_is_told(tmp_path):
    dockerfile(tmp_path)
    config = parse_config('{"build": {"dockerfile": "Dockerfile"}}', path=tmp_path / ".devcontainer/x.json")
    assert config.build is not None
    assert config.build.dockerfile == (tmp_path / ".devcontainer/Dockerfile").resolve()


# --- the FROM lines resolve_image checks before a build -----------------------------------------------------


def test_from_lines_resolve_arg_defaults_and_build_args_and_skip_stages_and_scratch():
    text = """\
# syntax=docker/dockerfile:1
ARG BASE=aileron/sandbox-base:1
ARG TOOLS
FROM ${BASE} AS base
FROM --platform=linux/amd64 \\
    team/tools:$TOOLS AS tools
FROM base AS final
COPY --from=tools /x /x
FROM scratch
FROM debian:trixie
"""
    assert dockerfile_bases(text, {}) == ["aileron/sandbox-base:1", "debian:trixie"]
    assert dockerfile_bases(text, {"BASE": "mine:2", "TOOLS": "3"}) == ["mine:2", "team/tools:3", "debian:trixie"]


# --- aileron sandbox init -----------------------------------------------------------------------------------


def test_scaffold_writes_a_devcontainer_that_builds_from_this_versions_base_image(tmp_path):
    written = scaffold(tmp_path)
    assert written == [tmp_path / ".devcontainer/devcontainer.json", tmp_path / ".devcontainer/Dockerfile"]
    text = (tmp_path / ".devcontainer/Dockerfile").read_text()
    assert f"ARG AILERON_BASE=aileron/sandbox-base:{aileron_version()}\nFROM ${{AILERON_BASE}}\n" in text
    assert "# RUN npm install -g @anthropic-ai/claude-code" in text
    assert "# RUN npm install -g @openai/codex" in text
    assert text.rstrip().endswith("USER agent")
    assert dockerfile_bases(text, {}) == [base_image_tag()]
    config = load_config(tmp_path)
    assert (config.tier, config.mediation, config.approval_surface, config.mcps) == ("build", "default", "both", ())
    assert config.build is not None and config.build.context == (tmp_path / ".devcontainer").resolve()


def test_scaffold_refuses_to_overwrite_and_force_overwrites(tmp_path):
    path = write(tmp_path, '{"image": "mine:1"}')
    with pytest.raises(DevcontainerError) as caught:
        scaffold(tmp_path)
    assert str(caught.value) == f"{path} already exists: --force overwrites it"
    assert path.read_text() == '{"image": "mine:1"}'
    assert not (tmp_path / ".devcontainer/Dockerfile").exists()
    scaffold(tmp_path, force=True)
    assert load_config(tmp_path).tier == "build"


def test_scaffold_refuses_when_only_the_dockerfile_exists(tmp_path):
    existing = dockerfile(tmp_path, "FROM mine\n")
    with pytest.raises(DevcontainerError, match="Dockerfile already exists"):
        scaffold(tmp_path)
    assert existing.read_text() == "FROM mine\n"
