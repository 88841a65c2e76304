"""Delivery manifests: what the agency says it sent (rows and sha256 per file).

A manifest is optional. When a delivery folder holds ``manifest.json`` (or
``_manifest.json``), every file must match it: a file the manifest lists but that is not
there, a file it does not list, a different sha256 or a different row count is a
delivery-level fatal for that file, with the expected and found values in the reason.

    {"files": [{"name": "meteorites.csv", "rows": 1000, "sha256": "<64 hex>"}]}

The other completion signal is ``_SUCCESS`` (``COMPLETION_MARKER``): an empty file written
after the last data file, saying "this day is complete" without listing anything. Either
one lets the landing sensor load a day as soon as it is complete rather than after a quiet
period, and either one is required of agencies the sensor is told to wait for
(``FLUX_LANDING_REQUIRE_MARKER``). A manifest is read confined to the agency's landing folder
(``confine.py``): a manifest that is a link, a folder or larger than 4 MiB is invalid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flux_pipelines.config_files import problems
from flux_pipelines.errors import UnsafePath
from flux_pipelines.files import sha256_file
from flux_pipelines.ingest.confine import (
    LANDING,
    landing_root_of,
    open_dir_under,
    open_file_under,
)

MANIFEST_NAMES = ("manifest.json", "_manifest.json")
COMPLETION_MARKER = "_SUCCESS"
MANIFEST_MAX_BYTES = 4 << 20


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    rows: int = Field(ge=0, description="data rows, header excluded")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    files: list[ManifestEntry] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _unique_names(cls, files: list[ManifestEntry]) -> list[ManifestEntry]:
        _refuse_repeats([f.name for f in files])
        return files

    def entry(self, name: str) -> ManifestEntry | None:
        return next((f for f in self.files if f.name == name), None)


def _refuse_repeats(names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"file(s) listed twice: {', '.join(repeated)}")


class ContentManifestEntry(BaseModel):
    """One content file (``flux_pipelines/content``): its path inside the content folder, its
    sha256, optionally its media type (``image/jpeg``, ``text/plain; charset=utf-8``) and the
    record it belongs to (the record's key). The path is kept as written: the content package
    refuses one that leaves the folder (``content.manifest_traversal``), never follows it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    media_type: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;.*)?$", max_length=255
    )
    record: str | None = Field(default=None, min_length=1, max_length=1024)


class ContentManifest(BaseModel):
    """A content folder's own manifest, the same file name and shape as a delivery's:

    {"files": [{"path": "images/a.jpg", "sha256": "<64 hex>", "media_type": "image/jpeg",
                "record": "N01234"}]}
    """

    model_config = ConfigDict(extra="allow")

    files: list[ContentManifestEntry] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _unique_paths(cls, files: list[ContentManifestEntry]) -> list[ContentManifestEntry]:
        _refuse_repeats([f.path for f in files])
        return files


M = TypeVar("M", Manifest, ContentManifest)


class ManifestInvalid(ValueError):
    """The manifest itself cannot be trusted; every file of the delivery is rejected."""


def manifest_path(folder: Path) -> Path | None:
    """The delivery's manifest (``manifest.json`` first). Any entry of that name counts, a
    link or a folder too, so a manifest that cannot be trusted is rejected, never skipped;
    a day folder that is itself not confined has none (its delivery is rejected whole)."""
    try:
        with open_dir_under(landing_root_of(folder, 3), folder, zone=LANDING) as opened:
            for name in MANIFEST_NAMES:
                if opened.lstat(name) is not None:
                    return folder / name
    except (UnsafePath, OSError):
        return None
    return None


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``, read confined (never through a link) and bounded in size."""
    try:
        with open_file_under(landing_root_of(path, 4), path, zone=LANDING) as handle:
            if handle.stat.st_size > MANIFEST_MAX_BYTES:
                raise ManifestInvalid(
                    f"{path.name} is {handle.stat.st_size:,} bytes; a manifest lists files "
                    f"and is at most {MANIFEST_MAX_BYTES:,} bytes"
                )
            data = handle.head(MANIFEST_MAX_BYTES)
    except UnsafePath as exc:
        raise ManifestInvalid(f"{path.name} cannot be used: {exc.reason}") from exc
    except OSError as exc:
        raise ManifestInvalid(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    return parse_manifest(data, path.name, Manifest)


def parse_manifest(data: bytes, name: str, model: type[M]) -> M:
    """A manifest's bytes (already read confined and bounded) as ``model``; ManifestInvalid
    naming ``name`` and every bad entry otherwise."""
    try:
        return model.model_validate(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestInvalid(f"{name} is not readable JSON: {exc}") from exc
    except ValidationError as exc:
        raise ManifestInvalid(
            f"{name} does not follow the manifest format: {problems(exc.errors())}"
        ) from exc


def write_manifest(folder: Path, rows: dict[str, int]) -> Path:
    """Write a manifest for files already in ``folder`` (used by the demo and tests)."""
    entries = [
        {
            "name": name,
            "rows": n,
            "sha256": sha256_file(folder / name),
        }
        for name, n in sorted(rows.items())
    ]
    path = folder / MANIFEST_NAMES[0]
    path.write_text(json.dumps({"files": entries}, indent=2), encoding="utf-8")
    return path
