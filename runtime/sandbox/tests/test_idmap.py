"""The idmapped mount of a root-owned project: its id map, and (as root) a real mount written by uid 1000."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from runtime.sandbox.idmap import IdmapError, mount_for_agent, swap_map, unavailable, unmount


def test_the_map_swaps_root_and_the_agent_and_keeps_every_other_id() -> None:
    assert swap_map(1000) == "0 1000 1\n1000 0 1\n1 1 999\n1001 1001 4294966294\n"
    assert swap_map(1) == "0 1 1\n1 0 1\n2 2 4294967293\n"


def test_root_cannot_be_mapped_to_itself() -> None:
    with pytest.raises(IdmapError, match="cannot map root to id 0"):
        swap_map(0)


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_what_uid_1000_writes_through_the_mount_is_roots_and_unmounting_keeps_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    (project / "README").write_text("root's\n")
    target = mount_for_agent(project, uid=1000, gid=1000)
    try:
        assert (os.stat(target).st_uid, os.stat(target / "README").st_uid) == (1000, 1000)
        subprocess.run(  # noqa: S603
            ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", f"echo hi > {target}/made"],  # noqa: S607
            check=True,
        )
    finally:
        unmount(target)
    made = (project / "made").stat()
    assert (made.st_uid, made.st_gid) == (0, 0)
    assert not target.exists()
    assert sorted(p.name for p in project.iterdir()) == ["README", "made"]


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_a_missing_project_is_one_line_and_leaves_no_mount_point(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("aileron-workspace-*"))
    with pytest.raises(IdmapError, match=r"^open_tree\(.*/absent\) failed: ENOENT"):
        mount_for_agent(tmp_path / "absent", uid=1000, gid=1000)
    assert set(Path(tempfile.gettempdir()).glob("aileron-workspace-*")) == before
