"""The aileron toolbox: the `aileron` CLI and the connector shims for any image, bring-your-own ones included.

    folder = ensure_toolbox(client, base_image_tag(), progress=print)  # cached; the first call takes seconds
    # the docker backend binds it read-only at TOOLBOX and appends TOOLBOX/bin to the agent's PATH

A BYO image has neither our Python nor our packages, and its C library may be older than the one our Python
needs, or another one altogether (musl), or none (a static busybox). So the toolbox carries its own: the base image's
python3 binary, its standard library, the venv's site-packages, every shared library those link to, and the
dynamic loader. Each command in TOOLBOX/bin is a small /bin/sh script that runs that Python through that
loader, with the toolbox's library folder as the only one searched: nothing of the image's own C library or
Python is used, and nothing is put in the agent's environment (no LD_LIBRARY_PATH, no PYTHONHOME) but the PATH
entries.

It is made once per base image, by a one-shot container of the base image (no network, the launching user's
uid, so the cache stays theirs) copying from the image into a cache folder, and reused by every launch.
What it needs from the image: /bin/sh, and the same CPU architecture (the local engine's). An image without
/bin/sh (a distroless one) can still run its agent, but not the shims; the launch says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.sandbox.backends import SandboxError
from runtime.sandbox.contract import BIN as CONTRACT_BIN

if TYPE_CHECKING:
    from docker import DockerClient

TOOLBOX = "/opt/aileron-toolbox"
TOOLBOX_BIN = f"{TOOLBOX}/bin"
# Login shells (Debian's /etc/profile resets PATH) get the toolbox back from here.
PROFILE = "/etc/profile.d/aileron-toolbox.sh"
PROFILE_TEXT = (
    "# Written by `aileron launch`: the aileron CLI and the connector shims, for login shells too.\n"
    + "".join(
        f'case ":$PATH:" in *":{folder}:"*) ;; *) PATH="$PATH:{folder}"; export PATH ;; esac\n'
        for folder in (CONTRACT_BIN, TOOLBOX_BIN)
    )
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the engine's, for an image with none
COMPLETE = ".complete"  # written last: a folder without it is a crash's leftover, never used
MAKE_SECONDS = 300.0
STALE_MAKING_SECONDS = 2 * MAKE_SECONDS
# Bump when what the script makes changes: the cache is keyed by it and the base image's id.
RECIPE = 1

# Runs in the base image as the launching user, with the new folder at /out. Copies, never links: the folder
# is mounted alone. `ldd` resolves each library as the image's loader would, and the loader itself is copied too.
_MAKE = r"""
set -eu
out=/out
python=$(readlink -f /usr/bin/python3)
version=${python##*/}
venv_site=/opt/aileron/lib/$version/site-packages
mkdir -p "$out/lib" "$out/libexec" "$out/entry" "$out/bin"
cp -a "/usr/lib/$version" "$out/lib/$version"
cp -a "$venv_site" "$out/site-packages"
cp -L "$python" "$out/libexec/$version"
loader=$(ldd "$python" | awk '$1 ~ /^\// { print $1; exit }')
test -n "$loader" || { echo "no dynamic loader found for $python" >&2; exit 1; }
cp -L "$loader" "$out/lib/"
{
  ldd "$python"
  find "$out/lib/$version/lib-dynload" "$out/site-packages" -type f -name '*.so*' -exec ldd {} \; 2>/dev/null || true
} | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
  test -e "$out/lib/${lib##*/}" || cp -L "$lib" "$out/lib/"
done
for name in $AILERON_COMMANDS; do
  test -f "/opt/aileron/bin/$name" || { echo "the base image has no /opt/aileron/bin/$name" >&2; exit 1; }
  cp "/opt/aileron/bin/$name" "$out/entry/$name"
  cat > "$out/bin/$name" <<EOF
#!/bin/sh
# The aileron toolbox's \`$name\`: its own Python and C library, whatever this image has (see aileron's toolbox.py).
T=$TOOLBOX
PYTHONHOME=\$T PYTHONPATH=\$T/site-packages PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONHOME PYTHONPATH PYTHONNOUSERSITE PYTHONDONTWRITEBYTECODE
exec "\$T/lib/${loader##*/}" --library-path "\$T/lib" "\$T/libexec/$version" "\$T/entry/$name" "\$@"
EOF
  chmod 0755 "$out/bin/$name"
done
chmod -R a+rX "$out"
"""

Progress = Callable[[str], None]


def toolbox_dir(image_id: str) -> Path:
    from runtime.sandbox.image import cache_dir

    digest = image_id.split(":", 1)[-1][:12]
    return cache_dir() / "toolbox" / f"{digest}-r{RECIPE}"


def ensure_toolbox(client: DockerClient, base_image: str, *, progress: Progress | None = None) -> Path:
    """The toolbox folder for `base_image` (which must exist locally), made first if the cache has none."""
    import docker.errors

    from runtime.sandbox.image import console_scripts

    try:
        image = client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise SandboxError(f"the base image {base_image} is not built: run `aileron sandbox build-base`") from None
    final = toolbox_dir(str(image.id))
    if (final / COMPLETE).is_file():
        return final
    if progress is not None:
        progress(f"making the aileron toolbox for any image from {base_image} (once per base image)")
    began = time.monotonic()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".making-", dir=final.parent))
    except OSError as exc:
        raise SandboxError(f"cannot make the aileron toolbox in {final.parent}: {exc.strerror}") from None
    try:
        scratch.chmod(0o755)
        _run_make(client, str(image.id), scratch, " ".join(console_scripts()))
        (scratch / COMPLETE).write_text(f"{base_image} {image.id}\n", encoding="utf-8")
        try:
            scratch.rename(final)
        except OSError:
            if not (final / COMPLETE).is_file():  # a crash's leftover: replace it; else another launch won
                shutil.rmtree(final, ignore_errors=True)
                scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if progress is not None:
        progress(f"made the aileron toolbox in {time.monotonic() - began:.1f}s ({final})")
    _prune(client, final)
    return final


def _prune(client: DockerClient, keep: Path) -> None:
    """Toolboxes of base images the engine no longer has (a rebuild replaced them) go: about 100 MB each; so do
    half-made ones that no launch can still be making. A running sandbox's base image cannot be removed, so its
    toolbox stays."""
    import docker.errors

    for folder in keep.parent.iterdir():
        if folder == keep or not folder.is_dir():
            continue
        if folder.name.startswith(".making-"):
            if time.time() - folder.stat().st_mtime > STALE_MAKING_SECONDS:  # a killed launch's; else in progress
                shutil.rmtree(folder, ignore_errors=True)
            continue
        made = (folder / COMPLETE).read_text(encoding="utf-8").split() if (folder / COMPLETE).is_file() else []
        try:
            if made:
                client.images.get(made[-1])
                continue
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _run_make(client: DockerClient, image_id: str, out: Path, commands: str) -> None:
    import docker.errors
    from docker.types import Mount

    container: Any = None
    try:
        container = client.containers.create(
            image_id,
            entrypoint=["/bin/sh", "-c", _MAKE],
            environment={"AILERON_COMMANDS": commands, "TOOLBOX": TOOLBOX},
            user=f"{os.getuid()}:{os.getgid()}",
            network_mode="none",
            mounts=[Mount(target="/out", source=str(out), type="bind", read_only=False)],
            labels={"aileron.sandbox": "toolbox"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        container.start()
        code = int(container.wait(timeout=MAKE_SECONDS).get("StatusCode", -1))
        if code != 0:
            said = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
            last = said.splitlines()[-1] if said else f"exit code {code}"
            raise SandboxError(f"could not make the aileron toolbox from the base image: {last}")
    except docker.errors.APIError as exc:
        raise SandboxError(f"could not make the aileron toolbox: {exc.explanation or exc}") from None
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)


def path_with_toolbox(image_env: list[str] | None, env: dict[str, str]) -> str:
    """The agent's PATH: the one the launch sets, else the image's, else the engine's default; then the shims of
    connectors that are not built in, and the toolbox last, so the image's own commands (a project image's newer
    `aileron`, a real `stripe` CLI) keep their names."""
    path = env.get("PATH")
    if path is None:
        found = [entry.split("=", 1)[1] for entry in image_env or [] if entry.startswith("PATH=")]
        path = found[-1] if found else DEFAULT_PATH
    parts = [part for part in path.split(":") if part and part not in (CONTRACT_BIN, TOOLBOX_BIN)]
    return ":".join([*parts, CONTRACT_BIN, TOOLBOX_BIN])
