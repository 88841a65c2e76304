"""A day's content package: what is in ``content/`` and what the package says was sent.

Two packagings are read, both the way the Library of Congress and national archives ship
and the way Flux's own delivery manifests look:

- a **BagIt bag** (RFC 8493): ``bagit.txt``, ``manifest-<algorithm>.txt`` (and optionally
  tag manifests), payload under ``data/``. The ``bagit`` library parses the bag and compares
  its manifests with the payload on disk (completeness); the checksums are compared here,
  from one confined, streamed read of each file (``examine.py``), never by a library
  opening paths an agency wrote.
- a **plain folder with a Flux content manifest** (``manifest.json``, the
  ``ContentManifest`` of ``ingest/manifest.py``): per file its path, sha256, media type and
  record.

Everything is listed with ``confine.py`` (no link followed, no FIFO opened, nothing
outside the agency's landing folder), bounded in depth and count. A manifest path that
would leave the package (``..``, absolute, NUL, backslash) is a ``content.manifest_traversal``
problem and is never used to open anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import bagit

from flux_pipelines.content.problems import Problem, shown
from flux_pipelines.errors import UnsafePath
from flux_pipelines.ingest.confine import ConfinedDir, Entry, stat_key
from flux_pipelines.ingest.manifest import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAMES,
    ContentManifest,
    ManifestInvalid,
    parse_manifest,
)
from flux_pipelines.ingest.receipts import hash_confined
from flux_pipelines.names import CONTENT_FOLDER

BAGIT = "bagit"
FLUX_MANIFEST = "flux-manifest"
UNPACKAGED = "none"
BAG_DECLARATION = "bagit.txt"
BAG_PAYLOAD = "data"
MAX_FILES = 100_000  # entries listed in one package, tag files included
MAX_DEPTH = 32  # folders below content/
BAG_TAG_MAX_BYTES = 64 << 20  # a bag's tag file (manifests list files: ~100 bytes a line)
# Checksum algorithms Flux verifies (a bag may declare others; at least one must be these).
ALGORITHMS = ("sha256", "sha512", "sha384", "sha224", "sha1", "md5")
_DRIVE = re.compile(r"^[A-Za-z]:")


class PackageTooLarge(Exception):
    """The content folder holds more entries (or deeper folders) than Flux lists."""


@dataclass(frozen=True)
class Found:
    """One non-folder entry under ``content/``, as ``lstat`` saw it."""

    parts: tuple[str, ...]  # names from the content folder down
    size: int
    refused: UnsafePath | None = None  # a link, FIFO or device where a file belongs

    @property
    def shown(self) -> str:
        """The entry as seen from the day folder: ``content/data/a.jpg``."""
        return "/".join((CONTENT_FOLDER, *self.parts))


@dataclass
class Claim:
    """What the package says of one payload file."""

    checksums: dict[str, str]  # algorithm -> lowercase hex digest
    media_type: str | None = None
    record: str | None = None


@dataclass
class Package:
    """The package's payload files and claims, and what is wrong with it."""

    kind: str  # BAGIT | FLUX_MANIFEST | UNPACKAGED
    root: tuple[str, ...]  # the payload root below content/: ("data",) in a bag
    payload: list[Found]  # every payload entry found, tag files and the manifest excluded
    claims: dict[str, Claim] = field(default_factory=dict)  # payload path -> claim
    problems: list[Problem] = field(default_factory=list)  # package- and entry-level
    tag_claims: dict[str, dict[str, str]] = field(default_factory=dict)  # bag tag files
    # Why no payload file can be verified (every one is quarantined with this rule).
    invalid: Problem | None = None

    def path_of(self, found: Found) -> str:
        """The payload path of an entry (what manifests and records name): ``images/a.jpg``."""
        return "/".join(found.parts[len(self.root) :])

    def claim(self, found: Found) -> Claim | None:
        return self.claims.get(bagit.normalize_unicode(self.path_of(found)))


def path_problem(path: str) -> str | None:
    """Why a manifest path cannot name a file inside the package (None: it can). Purely
    lexical: nothing the agency wrote is resolved on the file system."""
    if "\0" in path:
        return "holds a NUL character"
    if "\\" in path:
        return "holds a backslash (a Windows path); separate folders with '/'"
    if path.startswith("/") or _DRIVE.match(path):
        return "is an absolute path"
    if path.startswith("~"):
        return "starts with '~' (a home folder)"
    if ".." in path.split("/"):
        return "climbs out with '..'"
    return None


def normal_path(path: str) -> str:
    """A safe manifest or link path as the payload paths are written (``./a//b`` -> ``a/b``)."""
    normalised: str = bagit.normalize_unicode(posixpath.normpath(path))
    return normalised.removeprefix("./")


def read_package(content: ConfinedDir) -> Package:
    """The package in the opened content folder (never raises for what the agency sent)."""
    try:
        found = list(_walk(content, (), 0, [0]))
    except PackageTooLarge as exc:
        return Package(UNPACKAGED, (), [], invalid=_invalid(CONTENT_FOLDER, str(exc)))
    top = {f.parts[0]: f for f in found if len(f.parts) == 1}
    if BAG_DECLARATION in top:
        return _bag(content, found)
    manifest = next((top[n] for n in MANIFEST_NAMES if n in top), None)
    if manifest is not None:
        return _flux(content, found, manifest)
    return Package(
        UNPACKAGED,
        (),
        found,
        invalid=_invalid(
            CONTENT_FOLDER,
            f"{CONTENT_FOLDER}/ holds neither {BAG_DECLARATION} (a BagIt bag) nor "
            f"{MANIFEST_NAMES[0]} (a Flux content manifest), so no file in it can be verified: "
            "package the files as a BagIt bag or list each with its path and sha256",
        ),
    )


def _walk(
    folder: ConfinedDir, parts: tuple[str, ...], depth: int, count: list[int]
) -> Iterator[Found]:
    """Every non-folder entry below ``folder``, folders opened without following links."""
    if depth > MAX_DEPTH:
        raise PackageTooLarge(
            f"{'/'.join((CONTENT_FOLDER, *parts))} is more than {MAX_DEPTH} folders deep"
        )
    for entry in folder.entries():
        count[0] += 1
        if count[0] > MAX_FILES:
            raise PackageTooLarge(
                f"{CONTENT_FOLDER}/ holds more than {MAX_FILES:,} entries; split the content "
                "over several deliveries"
            )
        inner = (*parts, entry.name)
        if entry.is_dir:
            yield from _subfolder(folder, entry, inner, depth, count)
        elif entry.is_file:
            yield Found(inner, entry.stat.st_size)
        else:
            yield Found(inner, 0, folder.refusal(entry.name, want="file", st=entry.stat))


def _subfolder(
    folder: ConfinedDir, entry: Entry, parts: tuple[str, ...], depth: int, count: list[int]
) -> Iterator[Found]:
    try:
        inner = folder.subdir(entry.name)
    except (UnsafePath, FileNotFoundError) as exc:  # swapped for a link, or gone, meanwhile
        refused = exc if isinstance(exc, UnsafePath) else folder.refusal(entry.name, want="folder")
        yield Found(parts, 0, refused)
        return
    with inner:
        yield from _walk(inner, parts, depth + 1, count)


def _invalid(file: str, reason: str) -> Problem:
    return Problem("content.package_invalid", file, reason)


# --- BagIt -----------------------------------------------------------------------------------


class _FluxBag(bagit.Bag):  # type: ignore[misc]  # bagit ships no types: its Bag is Any
    """A bag whose manifest paths Flux judges itself.

    bagit refuses a whole bag at the first unsafe manifest path, deciding with
    ``os.path.realpath`` (which resolves links the agency may have planted). Flux instead
    collects such paths, judges them lexically (``path_problem``), reports each as
    ``content.manifest_traversal`` and drops it, so the rest of the bag is still verified.
    """

    def __init__(self, path: str) -> None:
        self.unsafe_paths: list[str] = []
        super().__init__(path)

    def _path_is_dangerous(self, path: str) -> bool:
        if path_problem(path) is not None:
            self.unsafe_paths.append(path)
        return False


def _bag(content: ConfinedDir, found: list[Found]) -> Package:
    payload = [f for f in found if f.parts[0] == BAG_PAYLOAD and len(f.parts) > 1]
    package = Package(BAGIT, (BAG_PAYLOAD,), payload)
    tags = [f for f in found if f.parts[0] != BAG_PAYLOAD]
    for tag in tags:  # bagit opens tag files by path: each must be a plain file
        if tag.refused is not None:
            package.invalid = _invalid(tag.shown, tag.refused.reason)
            return package
    big = next((f for f in tags if f.size > BAG_TAG_MAX_BYTES), None)
    if big is not None:
        package.invalid = _invalid(
            big.shown,
            f"{big.shown} is {big.size:,} bytes; a bag's tag file is at most "
            f"{BAG_TAG_MAX_BYTES:,} bytes (split the content over several bags)",
        )
        return package
    try:
        bag = _FluxBag(content.via)
    except (bagit.BagError, OSError, UnicodeDecodeError, LookupError, ValueError) as exc:
        package.invalid = _invalid(
            f"{CONTENT_FOLDER}/{BAG_DECLARATION}",
            f"{CONTENT_FOLDER}/ is not a readable BagIt bag: {_bag_error(exc, content.via)}; "
            "re-create it with a BagIt tool (bagit.py, Bagger) and deliver it again",
        )
        return package
    verifiable = [a for a in bag.algorithms if a in ALGORITHMS]
    if not verifiable:
        package.invalid = _invalid(
            f"{CONTENT_FOLDER}/{BAG_DECLARATION}",
            f"the bag's manifests use only checksum algorithms Flux does not verify "
            f"({', '.join(bag.algorithms) or 'none'}); add a manifest-sha256.txt",
        )
        return package
    for path in bag.unsafe_paths:
        package.problems.append(
            _traversal(path, f"{CONTENT_FOLDER}/", f"the bag's manifest in {CONTENT_FOLDER}/")
        )
        bag.entries.pop(path, None)
        bag.normalized_manifest_names.pop(bagit.normalize_unicode(path), None)
    _bag_claims(package, bag)
    package.invalid = _tag_problem(content, package, found)
    if package.invalid is None:
        _bag_completeness(package, bag)
    return package


def _bag_error(exc: BaseException, via: str) -> str:
    """bagit's words without the descriptor path it was given."""
    return str(exc).replace(via + "/", "").replace(via, CONTENT_FOLDER) or type(exc).__name__


def _bag_claims(package: Package, bag: _FluxBag) -> None:
    prefix = BAG_PAYLOAD + "/"
    for path, digests in bag.entries.items():
        checksums = {alg: value.lower() for alg, value in digests.items()}
        if path.startswith(prefix):
            package.claims[bagit.normalize_unicode(path[len(prefix) :])] = Claim(checksums)
        else:  # a tag file listed in a tag manifest: checked like payload, but not content
            package.tag_claims[path] = checksums


def _tag_problem(content: ConfinedDir, package: Package, found: list[Found]) -> Problem | None:
    """A tag file (a payload manifest, bag-info.txt) whose checksum differs from the tag
    manifest: the bag's own lists cannot be trusted, so none of its files can be verified."""
    by_path = {"/".join(f.parts): f for f in found if f.refused is None}
    for path, expected in sorted(package.tag_claims.items()):
        tag = by_path.get(path)
        if tag is None:  # reported missing by the completeness check
            continue
        differs = checksum_difference(content, tag, expected)
        if differs is not None:
            return _invalid(
                tag.shown,
                f"{tag.shown} differs from the bag's tag manifest ({differs}): the bag's own "
                "lists cannot be trusted, so none of its files can be verified; re-create "
                "the bag and deliver it again",
            )
    return None


def _bag_completeness(package: Package, bag: _FluxBag) -> None:
    """bagit's comparison of the manifests with the payload on disk: files it lists that
    are missing. (Files on disk it does not list are found per file: ``Package.claim``.)"""
    only_in_manifests, _ = bag.compare_manifests_with_fs()
    for path in sorted(only_in_manifests):
        package.problems.append(
            Problem(
                "content.missing_file",
                f"{CONTENT_FOLDER}/{path}",
                f"{CONTENT_FOLDER}/{shown(path)} is listed in the bag's manifest but was not "
                "delivered; deliver it, or re-create the bag without it",
                value=path,
            )
        )


# --- Flux content manifest ---------------------------------------------------------------


def _flux(content: ConfinedDir, found: list[Found], manifest: Found) -> Package:
    payload = [f for f in found if f is not manifest]
    package = Package(FLUX_MANIFEST, (), payload)
    name = manifest.parts[0]
    try:
        parsed = _read_content_manifest(content, manifest)
    except ManifestInvalid as exc:
        package.invalid = _invalid(
            manifest.shown,
            f"{manifest.shown} cannot be used, so no content file can be verified: {exc}",
        )
        return package
    present = {bagit.normalize_unicode(package.path_of(f)) for f in payload}
    for entry in parsed.files:
        if path_problem(entry.path) is not None:
            package.problems.append(_traversal(entry.path, manifest.shown, manifest.shown))
            continue
        path = normal_path(entry.path)
        package.claims[path] = Claim(
            {"sha256": entry.sha256.lower()}, entry.media_type, entry.record
        )
        if path not in present:
            package.problems.append(
                Problem(
                    "content.missing_file",
                    f"{CONTENT_FOLDER}/{path}",
                    f"{CONTENT_FOLDER}/{shown(path)} is listed in {name} but was not delivered; "
                    f"deliver it, or remove it from {name}",
                    value=entry.path,
                    record_key=entry.record,
                )
            )
    return package


def _read_content_manifest(content: ConfinedDir, manifest: Found) -> ContentManifest:
    if manifest.refused is not None:
        raise ManifestInvalid(manifest.refused.reason)
    if manifest.size > MANIFEST_MAX_BYTES:
        raise ManifestInvalid(
            f"it is {manifest.size:,} bytes; a manifest is at most {MANIFEST_MAX_BYTES:,} bytes"
        )
    try:
        with content.open_file(manifest.parts[0]) as handle:
            data = handle.head(MANIFEST_MAX_BYTES)
    except UnsafePath as exc:
        raise ManifestInvalid(exc.reason) from exc
    except OSError as exc:
        raise ManifestInvalid(f"it cannot be read ({exc.strerror or exc})") from exc
    return parse_manifest(data, manifest.shown, ContentManifest)


def _traversal(path: str, file: str, listing: str) -> Problem:
    why = path_problem(path) or "leaves the package"
    return Problem(
        "content.manifest_traversal",
        file,
        f"{listing} lists {shown(path)!r}, which {why}: Flux never follows it. List paths "
        f"relative to {CONTENT_FOLDER}/, inside it",
        value=shown(path),
    )


# --- reading files confined ------------------------------------------------------------------


@contextlib.contextmanager
def folder_of(content: ConfinedDir, parts: tuple[str, ...]) -> Iterator[ConfinedDir]:
    """The folder ``parts`` below the content folder, each opened without following a link."""
    opened: list[ConfinedDir] = []
    try:
        current = content
        for part in parts:
            current = current.subdir(part)
            opened.append(current)
        yield current
    finally:
        for folder in opened:
            folder.close()


@dataclass(frozen=True)
class Digests:
    """A file's checksums from one confined read, and the stat it had while read."""

    sha256: str
    others: dict[str, str]  # algorithm -> hex, for the other algorithms asked
    stat_key: str


def file_digests(folder: ConfinedDir, name: str, algorithms: Iterable[str] = ()) -> Digests | None:
    """The file's sha256 (the project's streamed, confined ``hash_confined``) and, when a bag
    also lists them, its other checksums; None when the file changed while being read."""
    hashed = hash_confined(folder, name)
    if hashed is None:
        return None
    sha256, key = hashed
    others = sorted({a for a in algorithms if a in ALGORITHMS} - {"sha256"})
    if not others:
        return Digests(sha256, {}, key)
    with folder.open_file(name) as handle, handle.reopen() as reader:
        hashers = {a: hashlib.new(a) for a in others}
        while chunk := reader.read(1 << 20):
            for hasher in hashers.values():
                hasher.update(chunk)
        if stat_key(handle.stat) != key or handle.changed() is not None:
            return None
    return Digests(sha256, {a: h.hexdigest() for a, h in hashers.items()}, key)


def checksum_difference(content: ConfinedDir, found: Found, expected: dict[str, str]) -> str | None:
    """How the file's checksums differ from ``expected`` (None: every one Flux verifies
    matches). Raises ``UnsafePath`` / ``OSError`` as reading it does."""
    with folder_of(content, found.parts[:-1]) as folder:
        digests = file_digests(folder, found.parts[-1], expected)
    if digests is None:
        return "it changed while Flux read it"
    return digest_difference(digests, expected)


def digest_difference(digests: Digests, expected: dict[str, str]) -> str | None:
    """The first algorithm whose digest differs, in words (None: all verified match)."""
    computed = {"sha256": digests.sha256, **digests.others}
    for algorithm in ALGORITHMS:
        if algorithm in expected and expected[algorithm] != computed.get(algorithm):
            return f"{algorithm} listed {expected[algorithm]}, the bytes give {computed[algorithm]}"
    return None
