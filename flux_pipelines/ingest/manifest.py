"""Delivery manifests: what the agency says it sent (rows and sha256 per file).

A manifest is optional. When a delivery folder holds ``manifest.json`` (or
``_manifest.json``), every file must match it: a file the manifest lists but that is not
there, a file it does not list, a different sha256 or a different row count is a
delivery-level fatal for that file, with the expected and found values in the reason.

    {"files": [{"name": "meteorites.csv", "rows": 1000, "sha256": "<64 hex>"}]}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAMES = ("manifest.json", "_manifest.json")


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
        names = [f.name for f in files]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"file(s) listed twice: {', '.join(repeated)}")
        return files

    def entry(self, name: str) -> ManifestEntry | None:
        return next((f for f in self.files if f.name == name), None)


class ManifestInvalid(ValueError):
    """The manifest itself cannot be trusted; every file of the delivery is rejected."""


def manifest_path(folder: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        path = folder / name
        if path.is_file():
            return path
    return None


def read_manifest(path: Path) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestInvalid(f"{path.name} is not readable JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ManifestInvalid(
            f"{path.name} does not follow the manifest format: {problems}"
        ) from exc


def write_manifest(folder: Path, rows: dict[str, int]) -> Path:
    """Write a manifest for files already in ``folder`` (used by the demo and tests)."""
    entries = [
        {
            "name": name,
            "rows": n,
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
        }
        for name, n in sorted(rows.items())
    ]
    path = folder / MANIFEST_NAMES[0]
    path.write_text(json.dumps({"files": entries}, indent=2), encoding="utf-8")
    return path
