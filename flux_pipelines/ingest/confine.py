"""Confinement: every path Flux reads or writes for an agency stays in the agency's own folder.

Agencies write into ``landing/<agency>/`` (and may write into ``outbox/<agency>/``), so
whatever is there is hostile input: a symbolic link (to a file or to a folder) can point at
another agency's data or at ``/etc/passwd``, a ``..`` can climb out, a FIFO blocks a reader
forever, and a file name such as ``*.csv`` is a pattern to any reader that globs. One rule,
used by the sensors, the loader, the readers, the receipts and the report writer:

- A zone root (``<home>/landing``, ``<home>/outbox``) is the operator's choice and trusted
  (it may itself be a link, e.g. to a bigger disk). Nothing below it is: every folder is
  opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor, and every
  file with ``O_NOFOLLOW | O_NONBLOCK`` after an ``lstat`` that proves it a regular file. A
  link is refused wherever it is, even one swapped in between a check and a use, because
  the check *is* the use (``openat`` on a descriptor, never a path walked twice).
- Libraries that want a path (polars, DuckDB) get ``/proc/self/fd/<n>`` of the descriptor
  opened that way: it reaches exactly the checked file or folder and holds no pattern
  character. Where ``/proc`` is missing, the checked real path, verified to be the same
  inode as the descriptor.

A refusal is an ``UnsafePath`` carrying a ``delivery.*`` rule id of the rule catalogue
(``model.DELIVERY_RULES``; ``LANDING_RULES`` are its landing-zone part) and a reason that
names the path and says what to do.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from flux_pipelines.contracts.model import DELIVERY_RULES
from flux_pipelines.errors import UnsafePath

LANDING = "landing"
OUTBOX = "outbox"
PROC_FD = os.path.isdir("/proc/self/fd")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC | getattr(os, "O_NOCTTY", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC

# The landing-zone delivery.* rules: confinement and completeness. Their words live in the one
# rule catalogue (``model.DELIVERY_RULES``, shown on contract pages and in agency reports);
# this is the part of it that confinement and the sensors raise.
LANDING_RULES: dict[str, tuple[str, str]] = {
    rule_id: DELIVERY_RULES[rule_id]
    for rule_id in (
        "delivery.symlink",
        "delivery.outside_landing",
        "delivery.outside_outbox",
        "delivery.not_a_file",
        "delivery.not_a_folder",
        "delivery.vanished",
        "delivery.changed_while_reading",
        "delivery.changed_after_marker",
        "delivery.unknown_folder",
        "delivery.hidden_name",
        "delivery.incomplete",
    )
}


def kind_of(mode: int) -> str:
    """A file type in words, for reasons an agency reads."""
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISBLK, "device"),
    ):
        if test(mode):
            return name
    return "special file"


def stat_key(st: os.stat_result) -> str:
    """What says a file changed without reading it: size, mtime and inode (a copy that keeps
    the mtime, ``cp -p`` or rsync, still gets a new inode)."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


@dataclass(frozen=True)
class Entry:
    """One name in a folder, as ``lstat`` sees it (a link is a link, never its target)."""

    name: str
    stat: os.stat_result

    @property
    def kind(self) -> str:
        return kind_of(self.stat.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.stat.st_mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.stat.st_mode)


class _Descriptor:
    """An owned file descriptor, closed once (explicitly, by ``with``, or when dropped)."""

    def __init__(self, fd: int, path: Path, shown: str, zone: str) -> None:
        self.fd: int | None = fd
        self.path = path  # as Flux builds it; never opened again by this path
        self.shown = shown  # from the zone folder on ("landing/nga/..."): for reasons
        self.zone = zone
        self._real: str | None = None

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError(f"{self.path} is closed")
        return self.fd

    @property
    def via(self) -> str:
        """A path reaching exactly this descriptor's file or folder, for libraries."""
        fd = self.fileno()
        if PROC_FD:
            return f"/proc/self/fd/{fd}"
        if self._real is None:
            real = os.path.realpath(self.path)
            mine, there = os.fstat(fd), os.stat(real)
            if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
                raise UnsafePath(
                    f"delivery.outside_{self.zone}",
                    self.shown,
                    f"{self.shown} was replaced while Flux opened it; deliver it again",
                )
            self._real = real
        return self._real

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> _Descriptor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


class ConfinedFile(_Descriptor):
    """A regular file opened without following a link; ``stat`` is as it was when opened."""

    def __init__(self, fd: int, path: Path, shown: str, zone: str) -> None:
        super().__init__(fd, path, shown, zone)
        self.stat = os.fstat(fd)

    def __enter__(self) -> ConfinedFile:
        return self

    def reopen(self) -> BinaryIO:
        """A second handle on the same file with its own offset (a reader on another thread)."""
        return open(self.via, "rb")  # the caller closes it

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes (at most), without moving any offset."""
        return os.pread(self.fileno(), size, 0)

    def changed(self) -> str | None:
        """How the file changed since it was opened (size or mtime), None if it did not."""
        now = os.fstat(self.fileno())
        if now.st_size != self.stat.st_size:
            return f"its size went from {self.stat.st_size:,} to {now.st_size:,} bytes"
        if now.st_mtime_ns != self.stat.st_mtime_ns:
            return "it was written to (its modification time changed)"
        return None


class ConfinedDir(_Descriptor):
    """A folder opened without following a link; names inside are opened relative to it."""

    def __enter__(self) -> ConfinedDir:
        return self

    def _inner(self, name: str) -> tuple[Path, str]:
        """The full and shown paths of ``name`` here; refuses anything but a plain name."""
        shown = f"{self.shown}/{name}"
        if name in {"", ".", ".."} or "/" in name or "\0" in name or os.sep in name:
            raise UnsafePath(
                f"delivery.outside_{self.zone}",
                shown,
                f"{name!r} is not a plain name inside {self.shown}; Flux never climbs out",
            )
        return self.path / name, shown

    def child(self, name: str) -> str:
        """A path to ``name`` in this folder for a library (DuckDB's COPY, say)."""
        self._inner(name)
        return os.path.join(self.via, name)

    def lstat(self, name: str) -> os.stat_result | None:
        self._inner(name)
        try:
            return os.stat(name, dir_fd=self.fileno(), follow_symlinks=False)
        except FileNotFoundError:
            return None

    def entries(self) -> list[Entry]:
        """Every name in the folder with its ``lstat``, sorted; one that vanished is left out."""
        found = []
        for name in sorted(os.listdir(self.fileno())):
            st = self.lstat(name)
            if st is not None:
                found.append(Entry(name, st))
        return found

    def subdir(self, name: str, *, create: bool = False) -> ConfinedDir:
        """The folder ``name`` inside this one (made when ``create``); never through a link."""
        path, shown = self._inner(name)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fileno())
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
                os.mkdir(name, dir_fd=self.fileno())
            return self.subdir(name)
        except OSError as exc:
            raise self.refusal(name, want="folder") from exc
        return ConfinedDir(fd, path, shown, self.zone)

    def open_file(self, name: str) -> ConfinedFile:
        """The regular file ``name`` in this folder, opened for reading; never a link, FIFO,
        device or folder (refused by ``lstat`` before any open)."""
        path, shown = self._inner(name)
        before = self.lstat(name)
        if before is None:
            raise UnsafePath("delivery.vanished", shown, _vanished(shown))
        if not stat.S_ISREG(before.st_mode):
            raise self.refusal(name, want="file", st=before)
        if self.zone == LANDING and before.st_nlink > 1:
            # a second name of a file elsewhere (another agency's delivery, a host file): its
            # content is not the agency's to deliver, and lstat cannot tell where it lives
            raise UnsafePath(
                "delivery.hard_link",
                shown,
                f"{shown} is a hard link ({before.st_nlink} names on this file system); Flux "
                "cannot tell whose data it is: deliver a copy of the file",
            )
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.fileno())
        except FileNotFoundError as exc:
            raise UnsafePath("delivery.vanished", shown, _vanished(shown)) from exc
        except OSError as exc:
            raise self.refusal(name, want="file") from exc
        opened = ConfinedFile(fd, path, shown, self.zone)
        if (opened.stat.st_dev, opened.stat.st_ino) != (before.st_dev, before.st_ino):
            opened.close()
            raise UnsafePath(
                "delivery.changed_while_reading",
                shown,
                f"{shown} was replaced while Flux opened it; deliver it again and leave it",
            )
        os.set_blocking(fd, True)
        return opened

    def create_file(self, name: str) -> int:
        """A new file ``name`` for writing (refused if anything, a link included, is there)."""
        self._inner(name)
        return os.open(name, _WRITE_FLAGS, 0o644, dir_fd=self.fileno())

    def unlink(self, name: str) -> None:
        """Remove ``name`` from this folder (a link is removed itself, its target untouched)."""
        self._inner(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fileno())

    def replace(self, source: str, target: str) -> None:
        """Rename ``source`` over ``target`` inside this folder (atomic; a link at ``target``
        is replaced, never written through)."""
        self._inner(source)
        self._inner(target)
        os.replace(source, target, src_dir_fd=self.fileno(), dst_dir_fd=self.fileno())

    def fsync_file(self, name: str) -> None:
        self._inner(name)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=self.fileno())
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def refusal(self, name: str, *, want: str, st: os.stat_result | None = None) -> UnsafePath:
        """Why ``name`` cannot be used as a ``want`` (file or folder), in the agency's words."""
        _, shown = self._inner(name)
        if st is None:
            try:
                st = os.stat(name, dir_fd=self.fileno(), follow_symlinks=False)
            except FileNotFoundError:
                return UnsafePath("delivery.vanished", shown, _vanished(shown))
            except OSError as exc:
                return UnsafePath(
                    "delivery.unreadable", shown, f"Flux cannot look at {shown} ({exc.strerror})"
                )
        return refusal(shown, st, want=want, zone=self.zone, link=self._link_target(name))

    def _link_target(self, name: str) -> str:
        try:
            return os.readlink(name, dir_fd=self.fileno())
        except OSError:
            return "?"


def refusal(shown: str, st: os.stat_result, *, want: str, zone: str, link: str = "?") -> UnsafePath:
    """The ``UnsafePath`` for an entry that is not a plain ``want`` (file or folder)."""
    if stat.S_ISLNK(st.st_mode):
        return UnsafePath(
            "delivery.symlink",
            shown,
            f"{shown} is a symbolic link (to {link[:200]}); Flux never follows links in the "
            f"{zone} folder: "
            + (f"deliver the {want} itself" if zone == LANDING else f"make it a real {want}"),
        )
    if want == "folder" and not stat.S_ISDIR(st.st_mode):
        return UnsafePath(
            "delivery.not_a_folder",
            shown,
            f"{shown} is a {kind_of(st.st_mode)} where a folder belongs",
        )
    if want == "file" and not stat.S_ISREG(st.st_mode):
        hint = (
            "sub-folders are not read: put the files directly in the day folder"
            if stat.S_ISDIR(st.st_mode)
            else "deliver a regular file"
        )
        return UnsafePath(
            "delivery.not_a_file", shown, f"{shown} is a {kind_of(st.st_mode)}, not a file; {hint}"
        )
    return UnsafePath(
        "delivery.unreadable",
        shown,
        f"Flux may not open {shown} (permission denied or unreadable); make it readable",
    )


def _vanished(shown: str) -> str:
    return f"{shown} disappeared before Flux could read it; deliver it again and leave it in place"


def relative_parts(path: Path, root: Path, zone: str) -> tuple[str, ...]:
    """The names leading from ``root`` to ``path``, compared as written (no link resolved);
    a ``..`` anywhere, or a path not under ``root``, is refused."""
    if ".." in path.parts:
        raise UnsafePath(
            f"delivery.outside_{zone}", str(path), f"{path} holds '..'; Flux never climbs"
        )
    absolute = path if path.is_absolute() else Path.cwd() / path
    base = Path(os.path.abspath(root))
    try:
        return absolute.relative_to(base).parts
    except ValueError:
        raise UnsafePath(
            f"delivery.outside_{zone}", str(path), f"{path} is not inside the {zone} folder"
        ) from None


def open_zone(root: Path, parts: Sequence[str], *, zone: str, create: bool = False) -> ConfinedDir:
    """The folder ``root/parts...``, each part opened from its parent without following a
    link (``root`` itself is trusted and may be one); made when ``create``."""
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    current = ConfinedDir(fd, Path(root), Path(root).name or str(root), zone)
    try:
        for part in parts:
            inner = current.subdir(part, create=create)
            current.close()
            current = inner
    except BaseException:
        current.close()
        raise
    return current


def open_dir_under(root: Path, path: Path, *, zone: str, create: bool = False) -> ConfinedDir:
    """The folder ``path`` inside ``root``, confined (see ``open_zone``)."""
    return open_zone(root, relative_parts(path, root, zone), zone=zone, create=create)


def open_file_under(root: Path, path: Path, *, zone: str) -> ConfinedFile:
    """The regular file ``path`` inside ``root``, confined: no link on the way, none at the end."""
    parts = relative_parts(path, root, zone)
    if not parts:
        raise UnsafePath(f"delivery.outside_{zone}", str(path), f"{path} is the {zone} folder")
    with open_zone(root, parts[:-1], zone=zone) as folder:
        return folder.open_file(parts[-1])


def folder_problem(root: Path, path: Path, *, zone: str) -> UnsafePath:
    """Why the folder ``path`` under ``root`` cannot be listed (a link, not a folder, no
    permission); for a folder that can, a generic refusal (it was given as a file)."""
    shown = "/".join((Path(root).name, *relative_parts(path, root, zone)))
    try:
        with open_dir_under(root, path, zone=zone) as opened:
            os.listdir(opened.fileno())
    except UnsafePath as exc:
        return exc
    except OSError as exc:
        return UnsafePath(
            "delivery.unreadable", shown, f"{shown} cannot be listed ({exc.strerror or exc})"
        )
    return UnsafePath("delivery.not_a_file", shown, f"{shown} is a folder; deliver files inside it")


def landing_root_of(path: Path, *depths: int) -> Path:
    """The landing folder a delivered path lies in, by the fixed layout
    ``landing/<agency>/<dataset>/<YYYY-MM-DD>/<file>``: ``path`` is tried ``depth`` levels
    below it, in the order given (4 for a file, 3 for a day folder). A path elsewhere
    (``flux validate`` on any file) is confined to its own folder: the file itself must
    still be a regular file, not a link."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    parents = absolute.parents
    for depth in depths:
        if len(parents) > depth - 1 and parents[depth - 1].name == LANDING:
            return parents[depth - 1]
    return absolute.parent
