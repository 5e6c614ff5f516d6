"""The agent as the project folder's owner: so it can write the project whatever uid the launching user has.

The base image's `agent` is uid 1000, the first user of most Linux machines; the project folder is bind-mounted
as it is, so another owner (uid 1001, a CI runner's user) would leave the agent unable to write its own
project. As devcontainers do (`updateRemoteUserUID`), the docker backend then runs a small image derived from
the agent's image, in which `agent` has the owner's uid and gid and owns its home: built once per image and
owner, offline, tagged aileron/sandbox-user:<image>-<uid>-<gid>.

A folder owned by root is the exception: the agent is not made root (even without capabilities, uid 0 owns
the image's system files). Launched as root, the docker backend mounts such a folder idmapped instead
(idmap.py), so the agent writes it and its files are root's; otherwise the launch says the agent cannot write
it, unless the folder lets others write.
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import DockerClient

REPOSITORY = "aileron/sandbox-user"
LABEL_KIND = "org.aileron.kind"
LABEL_OF = "org.aileron.user-of"  # the id of the image it was derived from


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


def passwd_entry(passwd: bytes | None, name: str) -> PasswdEntry | None:
    for line in (passwd or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name and fields[2].isdigit() and fields[3].isdigit():
            return PasswdEntry(name, int(fields[2]), int(fields[3]), fields[5] or "/")
    return None


@dataclass(frozen=True)
class Owned:
    image: str  # the image to run: the given one, or one derived from it
    note: str | None  # a line for the launcher, when there is something to say


def for_project(client: DockerClient, image: Any, reference: str, agent: PasswdEntry, project: Path) -> Owned:
    """The image whose `agent` can write `project`."""
    owner = project.stat()
    if owner.st_uid == agent.uid:
        return Owned(reference, None)
    if owner.st_uid == 0:
        if owner.st_mode & stat.S_IWOTH:
            return Owned(reference, None)
        return Owned(
            reference,
            f"the project folder {project} belongs to root: the agent (uid {agent.uid}) can read it but not write "
            "it (launch as the folder's owner, or chown it)",
        )
    import docker.errors

    tag = f"{REPOSITORY}:{str(image.id).split(':', 1)[-1][:12]}-{owner.st_uid}-{owner.st_gid}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        pass
    else:
        return Owned(tag, None)
    error = _build(client, image, tag, agent, owner.st_uid, owner.st_gid)
    if error is not None:
        return Owned(reference, f"the agent cannot take the project folder's owner uid {owner.st_uid}: {error}")
    _prune(client)
    return Owned(tag, f"made {tag}: the agent runs as uid {owner.st_uid}, the project folder's owner")


def _build(client: DockerClient, image: Any, tag: str, agent: PasswdEntry, uid: int, gid: int) -> str | None:
    import docker.errors

    dockerfile = (
        f"FROM {image.id}\n"
        "USER root\n"
        f'RUN groupmod -o -g {gid} "$(id -gn {agent.name})" && usermod -o -u {uid} -g {gid} {agent.name} '
        f"&& chown -R {uid}:{gid} {agent.home}\n"
        f"USER {agent.name}\n"
    )
    try:
        client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()),
            tag=tag,
            network_mode="none",
            rm=True,
            forcerm=True,
            labels={LABEL_KIND: "sandbox-user", LABEL_OF: str(image.id)},
        )
    except docker.errors.BuildError as exc:
        said = [str(line.get("stream") or line.get("error") or "").strip() for line in exc.build_log]
        return next((line for line in reversed(said) if line), str(exc))[:200]
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc)[:200]
    return None


def _prune(client: DockerClient) -> None:
    """Derived images of an image that lost its tag (a rebuilt base) go, and so does that image: they would
    otherwise keep it, hundreds of MB, alive; of such images, only a base image is removed too."""
    import docker.errors

    for derived in client.images.list(filters={"label": f"{LABEL_KIND}=sandbox-user"}):
        source_id = (derived.labels or {}).get(LABEL_OF, "")
        try:
            source = client.images.get(source_id)
            if source.tags:
                continue
            client.images.remove(str(derived.id), force=True)
            if (source.labels or {}).get("org.aileron.version"):  # ours (a base); a user's image is left alone
                client.images.remove(source_id)
        except docker.errors.APIError:
            continue
