"""An idmapped mount of a root-owned project folder: the sandbox's unprivileged agent writes it, files stay root's.

    target = mount_for_agent(project, uid=1000, gid=1000)  # a new folder; bind it into the container
    ...
    unmount(target)                                         # detaches the mount and removes the empty folder

Run as root (the common case on build machines and CI), the project folder belongs to root and the agent (uid
1000, never root) could read it but not write it. An idmapped mount (Linux 5.12+) shows the folder's files as
the agent's and stores what the agent writes as root's: inside the mount, on-disk uid/gid 0 appears as the
agent's and the agent's as 0 (everything else as itself), so the host sees root's files where the agent
wrote. Docker 20.10 cannot ask for an idmapped bind itself, so the mount is made here, with the kernel's new
mount API (open_tree, mount_setattr with MOUNT_ATTR_IDMAP, move_mount) and a short-lived helper user namespace
that carries the mapping, and the container binds the mounted folder: a bind of an idmapped mount keeps its
mapping. Needs root (CAP_SYS_ADMIN in the initial namespace) and a filesystem that supports idmapped mounts
(ext4, xfs, btrfs, tmpfs, overlayfs on recent kernels); anything else is one IdmapError line.

The mount point is a folder of its own, never inside a folder that is later removed recursively: removing it
while mounted would remove the project's files.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Syscall numbers of the new mount API: the same on every architecture (they were added after the tables were
# unified), except alpha, which aileron does not run on.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x100000
_MNT_DETACH = 2
_LAST_ID = 4294967294  # (uid_t)-1 is "no id" and cannot be mapped


class IdmapError(Exception):
    """An idmapped mount that could not be made, as one line."""


class _MountAttr(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 - ctypes' own declaration style
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def swap_map(inside: int) -> str:
    """An id map (uid_map/gid_map text) that swaps 0 and `inside` and keeps every other id as it is."""
    if not 0 < inside < _LAST_ID:
        raise IdmapError(f"cannot map root to id {inside}")
    ranges = [(0, inside, 1), (inside, 0, 1), (1, 1, inside - 1), (inside + 1, inside + 1, _LAST_ID - inside)]
    return "".join(f"{first} {target} {count}\n" for first, target, count in ranges if count > 0)


def unavailable() -> str | None:
    """Why an idmapped mount cannot be made by this process, or None."""
    if os.geteuid() != 0:
        return "making an idmapped mount needs root"
    if not hasattr(os, "unshare"):
        return "this Python has no os.unshare (3.12 or later is needed)"
    return _kernel_refuses()


@functools.cache
def _kernel_refuses() -> str | None:
    """Why this kernel (or the container around it) refuses what an idmapped mount needs: a new user namespace,
    and a detached clone of a mount (open_tree); None when both work. Asked once per process."""
    made = subprocess.run(  # noqa: S603 - this Python, fixed code
        [sys.executable, "-I", "-S", "-c", "import os; os.unshare(os.CLONE_NEWUSER)"],
        capture_output=True,
        timeout=30,
    )
    if made.returncode != 0:
        return "user namespaces are not available here (disabled, or refused by the container's seccomp profile)"
    libc = ctypes.CDLL(None, use_errno=True)
    tree = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(tempfile.gettempdir()), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    if tree < 0:
        return f"cloning a mount is refused here (open_tree: {_errno_text(ctypes.get_errno())}; in a container?)"
    os.close(tree)
    return None


def mount_for_agent(project: Path, *, uid: int, gid: int) -> Path:
    """A new folder where `project` is mounted with root's files shown as uid:gid and uid:gid's written as root."""
    reason = unavailable()
    if reason is not None:
        raise IdmapError(reason)
    libc = ctypes.CDLL(None, use_errno=True)
    userns = _helper_userns(swap_map(uid), swap_map(gid))
    tree = -1
    target = Path(tempfile.mkdtemp(prefix="aileron-workspace-"))
    try:
        tree = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(project), _OPEN_TREE_CLONE | os.O_CLOEXEC)
        if tree < 0:
            raise IdmapError(f"open_tree({project}) failed: {_errno_text(ctypes.get_errno())}")
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
        if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
            code = ctypes.get_errno()
            why = " (its filesystem does not support idmapped mounts)" if code == errno.EINVAL else ""
            raise IdmapError(f"idmapping a mount of {project} failed: {_errno_text(code)}{why}")
        moved = libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH)
        if moved < 0:
            raise IdmapError(f"mounting the idmapped {project} failed: {_errno_text(ctypes.get_errno())}")
    except BaseException:
        target.rmdir()  # empty: nothing was mounted on it
        raise
    finally:
        if tree >= 0:
            os.close(tree)
        os.close(userns)
    return target


def unmount(target: Path) -> None:
    """Detach the mount made by mount_for_agent and remove its (then empty) folder; the project is untouched.
    If it cannot be detached the folder stays: it is never removed while it may hold the project."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(target), _MNT_DETACH) < 0 and ctypes.get_errno() != errno.EINVAL:
        return  # EINVAL: not a mount point (already detached)
    try:
        target.rmdir()
    except OSError:
        pass  # not empty: something is still mounted there; leave it rather than touch what it holds


def _helper_userns(uid_map: str, gid_map: str) -> int:
    """A descriptor of a new user namespace carrying these maps: a child process enters it, we write its maps
    (root in the initial namespace may map any id), keep the namespace open and let the child exit. A process
    of its own rather than a fork: this one has threads, and forking a threaded Python is deprecated."""
    child = subprocess.Popen(  # noqa: S603 - this Python, fixed code
        [sys.executable, "-I", "-S", "-c", _ENTER_USERNS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdin is not None and child.stdout is not None  # noqa: S101 - both are pipes
    try:
        if child.stdout.read(1) != b"1":
            raise IdmapError("could not make a user namespace for the idmapped mount (are they disabled here?)")
        try:
            Path(f"/proc/{child.pid}/uid_map").write_text(uid_map, encoding="ascii")
            Path(f"/proc/{child.pid}/setgroups").write_text("deny", encoding="ascii")
            Path(f"/proc/{child.pid}/gid_map").write_text(gid_map, encoding="ascii")
            return os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise IdmapError(f"could not map the helper user namespace: {exc.strerror}") from None
    finally:
        child.stdin.close()  # the child reads end-of-file and exits
        child.wait(timeout=10)
        child.stdout.close()


_ENTER_USERNS = (
    "import os, sys; os.unshare(os.CLONE_NEWUSER); sys.stdout.buffer.write(b'1'); sys.stdout.flush(); sys.stdin.read()"
)


def _errno_text(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"
