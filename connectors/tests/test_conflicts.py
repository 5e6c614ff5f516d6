"""A connector may not join the installed ones on a host another serves: refused at import and install."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors.conflicts import overlaps
from connectors.identify import Catalog
from connectors.package import ConnectorError, build
from connectors.registry import BUILTIN, import_openapi, install, installed
from connectors.tests.test_matcher import GITHUB_SPEC, needs_github_spec

BUILTIN_GITHUB_SPEC = BUILTIN / "github" / "openapi.json"


def spec_of(*operations: tuple[str, str, list[dict[str, Any]]]) -> dict[str, Any]:
    """An OpenAPI description of (method, path, path parameters) operations."""
    paths: dict[str, Any] = {}
    for method, path, params in operations:
        paths.setdefault(path, {})[method] = {
            "operationId": f"{method}{path}".replace("/", "-").replace("{", "").replace("}", ""),
            "parameters": [{"in": "path", "required": True, **p} for p in params],
        }
    return {"openapi": "3.0.0", "info": {"title": "t"}, "paths": paths}


def connector(name: str, host: str, *operations: tuple[str, str, list[dict[str, Any]]]) -> Any:
    meta = {"name": name, "hosts": [host], "auth": {"scheme": "bearer"}, "actions": "all"}
    return build(meta, spec_of(*operations))


def spec_file(tmp_path: Path, *operations: tuple[str, str, list[dict[str, Any]]]) -> Path:
    written = tmp_path / "spec.json"
    written.write_text(json.dumps(spec_of(*operations)))
    return written


def text(p: str) -> dict[str, Any]:
    return {"name": p, "schema": {"type": "string"}}


def number(p: str) -> dict[str, Any]:
    return {"name": p, "schema": {"type": "integer"}}


def test_importing_a_second_github_connector_on_its_host_is_refused_naming_the_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError) as refused:
        import_openapi(BUILTIN_GITHUB_SPEC, home=tmp_path, name="ghfull", hosts=["api.github.com"], auth="bearer")
    message = str(refused.value)
    assert "ghfull would serve api.github.com, which the github connector (built in) serves" in message
    assert "12 of its operations are github's already" in message
    assert "GET /repos/{owner}/{repo} is github.get-repo and ghfull.repos-get" in message
    assert "`--name github`" in message and "give it a host no other connector serves" in message
    assert "\n" not in message
    assert [c.name for c in installed(tmp_path)] == [c.name for c in installed(tmp_path / "empty")]
    assert list((tmp_path / "connectors").iterdir()) == []  # nothing left behind, not even the staging copy
    github = Catalog(installed(tmp_path)).identify(host="api.github.com", method="GET", path="/repos/acme/app")
    assert [i.action for i in github] == ["github.get-repo"]


@pytest.mark.parametrize("host", ["API.GitHub.com", "api.github.com.", "api.github.com:443", " Api.Github.Com. "])
def test_a_host_is_the_same_host_whatever_its_case_port_or_trailing_dot(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConnectorError, match="ghfull would serve api.github.com, which the github connector"):
        import_openapi(BUILTIN_GITHUB_SPEC, home=tmp_path, name="ghfull", hosts=[host], auth="bearer")


def test_hosts_are_stored_as_the_data_plane_compares_them(tmp_path: Path) -> None:
    made = import_openapi(
        BUILTIN_GITHUB_SPEC, home=tmp_path, name="ghe", hosts=["GHE.Example.com.", "ghe.example.com"], auth="bearer"
    )
    assert made.hosts == ("ghe.example.com",)
    with pytest.raises(ConnectorError, match="hosts"):
        import_openapi(BUILTIN_GITHUB_SPEC, home=tmp_path, name="bad", hosts=["user@evil.example"], auth="bearer")


def test_a_connector_sharing_a_host_but_no_operation_is_refused_too(tmp_path: Path) -> None:
    """The data plane picks the credential by host: ghextra's actions would run with github's credential."""
    only_new = spec_file(tmp_path, ("get", "/meta/extra", []))
    with pytest.raises(ConnectorError) as refused:
        import_openapi(only_new, home=tmp_path, name="ghextra", hosts=["api.github.com"], auth="bearer")
    assert "no operation is shared, but a host has one connector" in str(refused.value)
    assert "`--name github`" in str(refused.value)


def test_replacing_a_connector_by_its_name_is_the_way_out(tmp_path: Path) -> None:
    made = import_openapi(BUILTIN_GITHUB_SPEC, home=tmp_path, name="github", hosts=["api.github.com"], auth="bearer")
    assert made.folder == tmp_path / "connectors" / "github"
    github = next(c for c in installed(tmp_path) if c.name == "github")
    assert github.folder == made.folder and "github.repos-get" in {a.id for a in github.actions}
    found = Catalog(installed(tmp_path)).identify(host="api.github.com", method="GET", path="/repos/acme/app")
    assert [i.action for i in found] == ["github.repos-get"]


def test_importing_the_same_name_again_replaces_it(tmp_path: Path) -> None:
    first = import_openapi(
        spec_file(tmp_path, ("get", "/v1/a", [])), home=tmp_path, name="acme", hosts=["api.acme.test"], auth="bearer"
    )
    again = import_openapi(
        spec_file(tmp_path, ("get", "/v1/a", []), ("get", "/v1/b", [])),
        home=tmp_path,
        name="acme",
        hosts=["api.acme.test"],
        auth="bearer",
    )
    assert len(first.actions) == 1 and len(again.actions) == 2
    assert [c for c in installed(tmp_path) if c.name == "acme"][0].actions == again.actions


def test_installing_a_package_folder_is_refused_the_same_way(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(BUILTIN / "github", package)
    toml = (package / "connector.toml").read_text().replace('name = "github"', 'name = "gh2"')
    (package / "connector.toml").write_text(toml)
    with pytest.raises(ConnectorError, match="gh2 would serve api.github.com, which the github connector"):
        install(package, tmp_path / "home")
    assert not (tmp_path / "home" / "connectors" / "gh2").exists()


def test_a_home_where_two_connectors_share_a_host_is_refused_with_both_named(tmp_path: Path) -> None:
    """Copied in by hand, or installed before installs were checked: the service says so instead of misrouting."""
    stale = tmp_path / "connectors" / "ghfull"
    shutil.copytree(BUILTIN / "github", stale)
    (stale / "connector.toml").write_text(
        (stale / "connector.toml").read_text().replace('name = "github"', 'name = "ghfull"')
    )
    with pytest.raises(ConnectorError, match=r"api.github.com is served by two connectors, ghfull .* and github"):
        installed(tmp_path)
    # and re-importing it elsewhere mends the home
    import_openapi(BUILTIN_GITHUB_SPEC, home=tmp_path, name="ghfull", hosts=["ghe.example.com"], auth="bearer")
    assert {"ghfull", "github"} <= {c.name for c in installed(tmp_path)}


def test_overlap_is_what_the_matcher_would_identify_as_both() -> None:
    ours = connector(
        "ours",
        "api.example.com",
        ("get", "/{a}/items", [text("a")]),  # meets /orgs/{b} only at /orgs/items, /compare/{spec} at /compare/items
        ("get", "/users/{id}", [number("id")]),  # an integer id is never "me"
        ("get", "/compare/{base}...{head}", [text("base"), text("head")]),
        ("post", "/orgs/{org}", [text("org")]),  # another method
    )
    theirs = connector(
        "theirs",
        "api.example.com",
        ("get", "/orgs/{b}", [text("b")]),
        ("get", "/users/me", []),
        ("get", "/compare/{spec}", [text("spec")]),
    )
    found = {(o.method, o.path, o.ours, o.theirs) for o in overlaps(ours, theirs)}
    assert found == {
        ("GET", "/orgs/items", "ours.get-a-items", "theirs.get-orgs-b"),
        ("GET", "/compare/items", "ours.get-a-items", "theirs.get-compare-spec"),
        ("GET", "/compare/1...1", "ours.get-compare-base-head", "theirs.get-compare-spec"),
    }
    assert overlaps(ours, connector("elsewhere", "api.other.com", ("get", "/orgs/{b}", [text("b")]))) == []


@needs_github_spec
def test_the_whole_github_description_on_githubs_host_names_every_shared_operation(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match=r"12 of its operations are github's already .* and 11 more\)"):
        import_openapi(GITHUB_SPEC, home=tmp_path, name="ghfull", hosts=["api.github.com"], auth="bearer")
