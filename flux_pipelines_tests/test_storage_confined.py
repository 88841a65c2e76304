"""Issue 13, point 1 beyond landing/ and outbox/: an agency's warehouse and published
folders and files are written only as real folders of the home, never through a link."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from flux_pipelines.errors import StorageNotConfined
from flux_pipelines.names import agency_published
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import deliver, materialize

DAY = "2026-02-02"


BUILDERS = {
    "agency file": lambda w, d: w.agency_db("nasa"),
    "raw": lambda w, d: w.raw_root("nasa", "meteorites"),
    "models": lambda w, d: w.models_dir("nasa", "model"),
    "receipt": lambda w, d: w.receipt_path("nasa", "meteorites", d),
    "published": lambda w, d: w.published_dir("nasa", "meteorites"),
    "published file": lambda w, d: w.published_file("nasa", "meteorites", d),
    "catalog folder": lambda w, d: agency_published(w.root, "nasa"),
}


@pytest.mark.parametrize(
    "link",
    [
        "warehouse/nasa.duckdb",
        "warehouse/nasa/nasa.duckdb",
        "warehouse/nasa",
        "warehouse/nasa/raw",
        "warehouse/nasa/receipts/meteorites",
        "receipts/nasa",
        "receipts/nasa/meteorites",
        "published/nasa",
        "published/nasa/meteorites",
        f"published/nasa/meteorites/{DAY}.parquet",
    ],
)
def test_a_link_in_an_agencys_storage_is_refused(tmp_path: Path, link: str) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = home / link
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(elsewhere / "target")
    w, day = FluxWarehouse(home=str(home)), dt.date.fromisoformat(DAY)
    for what, build in BUILDERS.items():
        if _crosses(link, what):  # at or below the link: refused, naming the link
            with pytest.raises(StorageNotConfined, match="symbolic link") as refused:
                build(w, day)
            assert str(planted) in str(refused.value)
        else:  # elsewhere: built as usual
            assert not str(build(w, day)).startswith(f"{planted}/"), what


def _crosses(link: str, what: str) -> bool:
    """Whether the path ``what`` names lies at or below ``link``."""
    plain = {
        "agency file": "warehouse/nasa/nasa.duckdb",
        "raw": "warehouse/nasa/raw/meteorites",
        "models": "warehouse/nasa/models/model",
        "receipt": f"receipts/nasa/meteorites/{DAY}.json",
        "published": "published/nasa/meteorites",
        "published file": f"published/nasa/meteorites/{DAY}.parquet",
        "catalog folder": "published/nasa",
    }[what]
    return plain == link or plain.startswith(link + "/")


def test_a_load_never_writes_through_a_link(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    deliver(home, "nasa", "meteorites", DAY, rows=50, seed=4)
    (home / "published" / "nasa").mkdir(parents=True)
    (home / "published" / "nasa" / "meteorites").symlink_to(elsewhere)
    result = materialize(home, [("nasa", "meteorites")], DAY)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "symbolic link" in str(failure.step_failure_data.error)  # type: ignore[union-attr]
    assert list(elsewhere.iterdir()) == []  # nothing written where the link points
