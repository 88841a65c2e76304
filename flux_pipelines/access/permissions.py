"""Read isolation of a Flux home, enforced by POSIX owners, groups and folder modes.

Analysts read files, not an API, so who can read what is decided by the file system: an
agency's published copies and reports sit in folders whose group is that agency's group and
whose mode gives others nothing, whatever a file's own mode; the working DuckDB files, raw
Parquet, landing zone, audit trail and Dagster instance are the pipeline user's alone.

    <home>/                       0711  traverse only
    landing/ warehouse/ receipts/ 0700  pipeline user only (audit/, state/, dagster_home/
                                        too); their <agency>/ folders are made here too,
                                        so a deployment can mount each agency's folder
    published/  outbox/           0711  traverse only: nobody lists agencies
    published/<agency>/           2750  group <analysts of the agency>
    published/<agency>/_clear/    2750  group <personal-data readers of the agency>
    published/cross_agency/       2750  group <every agency's analysts>
    outbox/<agency>/              2750  group <report readers: the agency's submitters+analysts>

Folders in the shared zones are setgid, so what the pipeline writes later keeps the group.
``secure_home`` applies the layout idempotently; with ``fix=False`` it only reports what
differs (``flux access check``). Nothing is followed through a symbolic link: every entry is
opened with ``O_NOFOLLOW`` relative to its parent's descriptor and changed through that
descriptor, so a link planted in a folder can never redirect a chmod or chown.

Applying also moves an agency's files out of the layout before per-agency folders
(``FluxWarehouse.migrate_layout``); checking reports them. When ``contracts/access.yaml``
says who holds which agency role (``members:``, for a host without a directory service),
both also compare each group's members with what those roles provision (``membership``):
drift is listed with the command that fixes it, never changed by Flux.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import (
    CROSS_AGENCY,
    ENTITLED_FOLDER,
    LANDING_ZONE,
    RECEIPTS_ZONE,
    WAREHOUSE_ZONE,
)

if TYPE_CHECKING:
    from flux_pipelines.access.policy import AccessPolicy, PosixGroups

PRIVATE_UMASK = 0o027  # new files: group may read, others nothing
PRIVATE_ZONES = ("landing", "warehouse", "receipts", "audit", "state", "dagster_home")
# Private zones with one folder per agency (what an agency's run pod mounts, names.AGENCY_ZONES)
PER_AGENCY_PRIVATE = (LANDING_ZONE, WAREHOUSE_ZONE, RECEIPTS_ZONE)
SHARED_ROOTS = ("published", "outbox")
TRAVERSE_ONLY = 0o711
PRIVATE_DIR = 0o700
SHARED_DIR = 0o2750  # setgid: new files and folders keep the zone's group
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def private_umask() -> int:
    """Make the files this process creates unreadable to others; returns the previous umask.

    Called where the ``flux`` command starts (the servers and run workers `flux dev` starts
    inherit it). Folder modes are the guarantee; this keeps new files private in the zones
    ``secure_home`` has not visited yet (a new agency's first folder)."""
    return os.umask(PRIVATE_UMASK)


@dataclass(frozen=True)
class Zone:
    """A folder of the layout: its root's mode, its group (None: keep), what lies below.

    ``shared``: files below are readable by the group (never writable), folders setgid 2750.
    Otherwise everything below is the owner's alone. ``nested`` names children that are
    zones of their own; ``create``: made when missing."""

    path: tuple[str, ...]
    mode: int
    gid: int | None = None
    shared: bool = False
    nested: frozenset[str] = frozenset()
    create: bool = True

    def want(self, st: os.stat_result, *, root: bool) -> int:
        """The mode this zone wants for an entry (its own root when ``root``)."""
        if root:
            return self.mode
        if stat.S_ISDIR(st.st_mode):
            return SHARED_DIR if self.shared else PRIVATE_DIR
        owner = stat.S_IMODE(st.st_mode) & 0o700
        return owner | ((owner & 0o500) >> 3) if self.shared else owner


@dataclass
class Outcome:
    """What ``secure_home`` changed (or, checking, found different) and refused to touch."""

    changes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    groups_created: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)  # one line per zone: the layout applied
    # group membership that differs from access.yaml's ``members`` (also listed in refused:
    # Flux reports membership, the directory service or an administrator changes it)
    membership: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.changes and not self.refused


def required_groups(posix: PosixGroups, agencies: Sequence[str]) -> list[str]:
    """Every group the layout of ``agencies`` needs, in a stable order."""
    names = [posix.group(posix.all_analysts)]
    for agency in agencies:
        g = posix.for_agency(agency)
        names += [g.analysts, g.submitters, g.report_readers, g.personal_data]
    return list(dict.fromkeys(names))


def ensure_groups(names: Sequence[str], *, create: bool) -> tuple[dict[str, int], list[str]]:
    """Group name -> gid, creating missing groups with ``groupadd`` when asked (root only);
    returns the gids and the names created. A missing group is a ``ConfigurationError``."""
    missing = [n for n in names if _gid(n) is None]
    if missing and create and os.geteuid() != 0:
        raise ConfigurationError(
            f"--create-groups needs root: {len(missing)} group(s) missing ({', '.join(missing)})"
        )
    if missing and not create:
        commands = "; ".join(f"groupadd {n}" for n in missing)
        raise ConfigurationError(
            f"POSIX group(s) missing: {', '.join(missing)}. Create them ({commands}), have "
            "the directory service provide them, or run `flux access apply --create-groups` "
            "as root"
        )
    for name in missing:
        done = subprocess.run(["groupadd", name], capture_output=True, text=True, check=False)
        if done.returncode != 0 and _gid(name) is None:
            raise ConfigurationError(f"groupadd {name} failed: {done.stderr.strip()}")
    return {n: _require_gid(n) for n in names}, missing


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _require_gid(name: str) -> int:
    gid = _gid(name)
    if gid is None:
        raise ConfigurationError(f"POSIX group {name} vanished while the home was secured")
    return gid


def layout(
    posix: PosixGroups,
    agencies: Sequence[str],
    gids: dict[str, int],
    *,
    leave: Collection[str] = (),
) -> list[Zone]:
    """The zones of a home for ``agencies``; ``leave`` names agencies whose folders are
    left as they are (not secured, not treated as strangers)."""
    others = frozenset(leave)
    known = frozenset(agencies) | others
    zones = [
        Zone((), TRAVERSE_ONLY, nested=frozenset(PRIVATE_ZONES + SHARED_ROOTS), create=False),
        *(
            Zone((name,), PRIVATE_DIR, nested=known if name in PER_AGENCY_PRIVATE else frozenset())
            for name in PRIVATE_ZONES
        ),
        Zone(("published",), TRAVERSE_ONLY, nested=known | {CROSS_AGENCY}),
        Zone(("outbox",), TRAVERSE_ONLY, nested=known),
        Zone(("published", CROSS_AGENCY), SHARED_DIR, gids[posix.all_analysts], shared=True),
    ]
    for agency in agencies:
        g = posix.for_agency(agency)
        zones += [
            Zone(
                ("published", agency), SHARED_DIR, gids[g.analysts], shared=True,
                nested=frozenset({ENTITLED_FOLDER}),
            ),
            Zone(
                ("published", agency, ENTITLED_FOLDER), SHARED_DIR, gids[g.personal_data],
                shared=True,
            ),
            Zone(("outbox", agency), SHARED_DIR, gids[g.report_readers], shared=True),
            *(Zone((name, agency), PRIVATE_DIR) for name in PER_AGENCY_PRIVATE),
        ]  # fmt: skip
    return zones


def secure_home(
    home: Path,
    agencies: Sequence[str],
    *,
    create_groups: bool = False,
    fix: bool = True,
    policy: AccessPolicy | None = None,
    owner: str | None = None,
    leave: Collection[str] = (),
) -> Outcome:
    """Apply (``fix``) or check the isolation layout of ``home`` for ``agencies``.

    ``owner`` is the pipeline user (default: the home's owner); run as root, entries are
    given to it. Idempotent: a second run changes nothing. Symbolic links and special files
    are never followed nor changed: they are listed in ``refused``.
    """
    from flux_pipelines.access.policy import load_policy

    chosen = policy or load_policy()
    unknown = sorted(set(chosen.members or {}) - set(agencies) - set(leave))
    if unknown:
        raise ConfigurationError(
            f"access policy members: {', '.join(unknown)} is no registered agency "
            "(contracts/agencies.yaml); fix the members section of contracts/access.yaml"
        )
    posix = chosen.posix
    names = required_groups(posix, agencies)
    gids, created = ensure_groups(names, create=create_groups and fix)
    if not home.is_dir():
        raise ConfigurationError(f"Flux home {home} is not a folder: nothing to secure")
    uid = _owner_uid(home, owner)
    outcome = Outcome(groups_created=created)
    _move_old_layout(home, agencies, outcome, fix=fix)
    for zone in layout(posix, agencies, gids, leave=leave):
        _secure_zone(home, zone, uid, outcome, fix=fix)
    if chosen.members is not None:
        outcome.membership = membership_drift(chosen, agencies, exempt={uid})
        outcome.refused += outcome.membership
    return outcome


def _move_old_layout(home: Path, agencies: Sequence[str], outcome: Outcome, *, fix: bool) -> None:
    """Move (or, checking, report) agencies' files of the layout before per-agency folders,
    before the zones are secured, so the moved files get their zone's owner and modes."""
    from flux_pipelines.access.layout import migrate_home, old_layout

    if fix:
        outcome.changes += [f"moved {line}" for line in migrate_home(home, agencies)]
        return
    outcome.changes += [
        f"{path}: layout before per-agency folders; `flux access apply` moves it"
        for path in old_layout(home, agencies)
    ]


def membership_drift(
    policy: AccessPolicy, agencies: Sequence[str], *, exempt: Collection[int] = ()
) -> list[str]:
    """Each difference between the groups' members and what ``policy.members`` provisions,
    with the command that fixes it. Users whose uid is in ``exempt`` (the pipeline user,
    which may be in every group) are neither required nor flagged."""
    wanted = provisioned_members(policy, agencies)
    actual = group_members(list(wanted))
    users = {u.pw_name: u.pw_uid for u in pwd.getpwall()}
    drift: list[str] = []
    named = sorted({u for members in wanted.values() for u in members})
    drift += [
        f"membership: access.yaml members names user {u!r}, who does not exist on this host; "
        f"create it (useradd) or remove it from members"
        for u in named
        if u not in users
    ]
    for group, members in wanted.items():
        have = actual[group]
        for user in sorted(members - have):
            if user in users and users[user] not in exempt:
                drift.append(
                    f"membership: {user} is not in {group} though access.yaml provisions it; "
                    f"add it: gpasswd -a {user} {group}"
                )
        for user in sorted(have - members):
            if users.get(user) not in exempt:
                drift.append(
                    f"membership: {user} is in {group} though access.yaml gives it no role "
                    f"that needs it; remove it: gpasswd -d {user} {group} (or change its "
                    "primary group)"
                )
    return drift


def provisioned_members(policy: AccessPolicy, agencies: Sequence[str]) -> dict[str, set[str]]:
    """Group name -> the users ``policy.members`` puts in it: an agency's analysts in its
    analysts, report readers and the all-analysts group; its submitters in its submitters
    and report readers; its personal-data readers in its personal-data group. Every agency's
    groups are listed (empty when nobody holds a role), the all-analysts group from every
    agency named in ``members``."""
    posix, members = policy.posix, policy.members or {}
    wanted: dict[str, set[str]] = {posix.group(posix.all_analysts): set()}
    for agency in agencies:
        g = posix.for_agency(agency)
        for name in (g.analysts, g.submitters, g.report_readers, g.personal_data):
            wanted.setdefault(name, set())
    for agency, roles in members.items():
        wanted[posix.group(posix.all_analysts)] |= set(roles.analysts)
        if agency not in agencies:
            continue
        g = posix.for_agency(agency)
        wanted[g.analysts] |= set(roles.analysts)
        wanted[g.submitters] |= set(roles.submitters)
        wanted[g.report_readers] |= set(roles.analysts) | set(roles.submitters)
        wanted[g.personal_data] |= set(roles.personal_data)
    return wanted


def group_members(names: Sequence[str]) -> dict[str, set[str]]:
    """Group name -> its members: the group database's member list plus every user whose
    primary group it is (``id`` counts both)."""
    gids = {name: _require_gid(name) for name in names}
    by_gid: dict[int, set[str]] = {}
    for user in pwd.getpwall():
        by_gid.setdefault(user.pw_gid, set()).add(user.pw_name)
    return {
        name: set(grp.getgrgid(gid).gr_mem) | by_gid.get(gid, set()) for name, gid in gids.items()
    }


def _owner_uid(home: Path, owner: str | None) -> int:
    if owner is None:
        return os.stat(home).st_uid
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError as exc:
        raise ConfigurationError(f"--owner {owner}: no such user") from exc


def _secure_zone(home: Path, zone: Zone, uid: int, outcome: Outcome, *, fix: bool) -> None:
    shown = home.joinpath(*zone.path)
    group = "kept" if zone.gid is None else grp.getgrgid(zone.gid).gr_name
    outcome.zones.append(
        f"{shown}: mode {zone.mode:04o}, group {group}, below: "
        + (f"folders {SHARED_DIR:04o}, files group-readable" if zone.shared else "owner only")
    )
    with _open_zone(home, zone, outcome, fix=fix) as fd:
        if fd is None:
            return
        _settle(fd, shown, zone, uid, outcome, fix=fix, root=True)
        _walk(fd, shown, zone, uid, outcome, fix=fix, skip=zone.nested)


@contextmanager
def _open_zone(home: Path, zone: Zone, outcome: Outcome, *, fix: bool) -> Iterator[int | None]:
    """The zone's folder opened from the home, each step below the top-level zone without
    following links (``published/`` itself may be a link: the operator's choice of volume,
    as in ``home.confined``); made when missing and ``fix``."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(zone.path, start=1):
            last = depth == len(zone.path)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            if depth > 1:
                flags |= os.O_NOFOLLOW
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not fix or not (last and zone.create):
                    outcome.changes.append(f"{home.joinpath(*zone.path)}: missing")
                    yield None
                    return
                os.mkdir(part, PRIVATE_DIR, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:  # ELOOP / ENOTDIR: a link or a file where a folder belongs
                outcome.refused.append(
                    f"{home.joinpath(*zone.path[:depth])}: not a real folder ({exc.strerror}); "
                    "not followed"
                )
                yield None
                return
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _walk(
    dir_fd: int,
    shown: Path,
    zone: Zone,
    uid: int,
    outcome: Outcome,
    *,
    fix: bool,
    skip: Collection[str] = (),
) -> None:
    """Settle every entry below ``dir_fd``; links and special files are only reported."""
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries if e.name not in skip)
    for name in names:
        path = shown / name
        fd = _open_entry(dir_fd, name, path, outcome)
        if fd is None:
            continue
        try:
            is_dir = _settle(fd, path, zone, uid, outcome, fix=fix, root=False)
            if is_dir:
                _walk(fd, path, zone, uid, outcome, fix=fix)
        finally:
            os.close(fd)


def _open_entry(dir_fd: int, name: str, path: Path, outcome: Outcome) -> int | None:
    """A regular file or folder opened without following a link, or None (reported)."""
    try:
        before = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # removed meanwhile (a temporary file of a running load)
    if stat.S_ISLNK(before.st_mode):
        outcome.refused.append(f"{path}: symbolic link to {os.readlink(name, dir_fd=dir_fd)!r}")
        return None
    if not (stat.S_ISREG(before.st_mode) or stat.S_ISDIR(before.st_mode)):
        outcome.refused.append(f"{path}: not a regular file or folder")
        return None
    try:
        fd = os.open(name, _OPEN, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        outcome.refused.append(f"{path}: cannot be opened ({exc.strerror})")
        return None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        outcome.refused.append(f"{path}: replaced while being secured; run again")
        return None
    return fd


def _settle(
    fd: int, path: Path, zone: Zone, uid: int, outcome: Outcome, *, fix: bool, root: bool
) -> bool:
    """Give one open entry its owner, group and mode; returns whether it is a folder."""
    st = os.fstat(fd)
    want_uid = uid if os.geteuid() == 0 and st.st_uid != uid else -1
    want_gid = zone.gid if zone.gid is not None and st.st_gid != zone.gid else -1
    want_mode = zone.want(st, root=root)
    found: list[str] = []
    if want_uid != -1:
        found.append(f"owner {_user(st.st_uid)} -> {_user(uid)}")
    if want_gid != -1:
        found.append(f"group {_group(st.st_gid)} -> {_group(want_gid)}")
    if stat.S_IMODE(st.st_mode) != want_mode:
        found.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {want_mode:04o}")
    if found and fix:
        try:
            if want_uid != -1 or want_gid != -1:
                os.fchown(fd, want_uid, want_gid)
            os.fchmod(fd, want_mode)  # after chown, which may clear setgid
        except PermissionError as exc:
            outcome.refused.append(
                f"{path}: {', '.join(found)} not allowed ({exc.strerror}); run as root, or "
                "as the pipeline user in every group of the layout"
            )
            return stat.S_ISDIR(st.st_mode)
    if found:
        outcome.changes.append(f"{path}: {', '.join(found)}")
    return stat.S_ISDIR(st.st_mode)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
