"""The machinery of the hostile-delivery corpus (``test_hostile_corpus.py``); holds no data.

A *kind* of hostile delivery is a builder that plants files, links and folders in a real
landing zone under ``tmp_path`` plus the outcome a demanding user expects. ``run_kind``
puts it through the two real paths every delivery takes:

1. the landing sensors' scan (``scan_zone`` and ``scan_dataset``, as each tick calls them):
   the findings they report (path below ``landing/`` -> rule) and whether they request a
   run of the test agency's day;
2. the loader (``delivered_files`` + ``delivery_manifest`` + ``load_partition`` into a real
   DuckDB file and raw Parquet), as the ingest step and ``flux load`` call it;

and returns what happened, with the DuckDB connection still open for recounts. The
invariants every kind must keep are checked by ``check_invariants``.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flux_pipelines.contracts import model
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import DELIVERY_RULES, Contract
from flux_pipelines.contracts.registry import Agency
from flux_pipelines.contracts.validator import SHORT_ROW_RULE
from flux_pipelines.defs.ingest.landing import scan_dataset, scan_zone
from flux_pipelines.ingest import confine
from flux_pipelines.ingest.delivery import (
    READ_WHOLE_REJECTIONS,
    PartitionResult,
    delivered_files,
    delivery_manifest,
    load_partition,
)
from flux_pipelines.ingest.manifest import COMPLETION_MARKER, MANIFEST_NAMES
from flux_pipelines_tests.conftest import DAY, contract_doc, make_loader, write_contract

AGENCY, OTHER, DATASET, OTHER_DATASET = "test-agency", "other-agency", "items", "things"
D = DAY.isoformat()
# Unique values planted where the test agency must never reach: a CSV elsewhere on the host
# and another agency's delivery. Each is a valid row value: followed, it would load.
CANARY = "Canary7f3a9c"
THEIRS = "Theirs5b81e4"
PASSWD = Path("/etc/passwd")

HEADER = "id,name,code,kind,amount,day,flag,note"
GOOD_ROWS = 3  # rows of good.csv, all of them valid
QUIET = 30.0  # the shipped default quiet period
LATER = 3600.0  # scans look from an hour on: every quiet period and grace has passed

# The test contract: one rule of every row-rule kind the loader compiles.
PROPERTIES: list[dict[str, Any]] = [
    {
        "name": "id",
        "logicalType": "integer",
        "required": True,
        "primaryKey": True,
        "logicalTypeOptions": {"minimum": 1},
    },
    {
        "name": "name",
        "logicalType": "string",
        "required": True,
        "logicalTypeOptions": {"minLength": 2, "maxLength": 40},
    },
    {
        "name": "code",
        "logicalType": "string",
        "logicalTypeOptions": {"pattern": "^[A-Z]{2}[0-9]{2}$"},
    },
    {
        "name": "kind",
        "logicalType": "string",
        "enum": [{"value": "alpha"}, {"value": "beta"}, {"value": "gamma"}],
    },
    {
        "name": "amount",
        "logicalType": "number",
        "logicalTypeOptions": {"minimum": 0, "maximum": 1000},
    },
    {"name": "day", "logicalType": "date"},
    {"name": "flag", "logicalType": "boolean"},
    {
        "name": "note",
        "logicalType": "string",
        "logicalTypeOptions": {"maxLength": 80},
        "customProperties": [{"property": "severity", "value": {"max_length": "warning"}}],
    },
]
QUALITY: list[dict[str, Any]] = [
    {
        "id": "amount_needs_kind",
        "name": "An amount comes with its kind",
        "type": "custom",
        "engine": "flux",
        "implementation": "amount IS NULL OR kind IS NOT NULL",
        "severity": "fatal",
        "dimension": "completeness",
        "description": "an amount needs its kind",
    }
]


def corpus_contract(root: Path) -> Contract:
    return load_contract(write_contract(root, contract_doc(PROPERTIES, quality=QUALITY)))


def delivery_rule_ids() -> set[str]:
    """Every fixed ``delivery.*`` rule: the catalogue's, and the landing rules wherever they
    live while they are being merged into it."""
    return set(DELIVERY_RULES) | set(getattr(confine, "LANDING_RULES", {}))


def fixed_row_rule_ids() -> set[str]:
    """Row rules every contract has whatever its columns (``row.short``), wherever the
    catalogue keeps them."""
    return {SHORT_ROW_RULE} | set(getattr(model, "FIXED_ROW_RULES", {}))


def row(
    id: object = 101,
    name: str = "Widget",
    code: str = "AB12",
    kind: str = "alpha",
    amount: str = "10.5",
    day: str = D,
    flag: str = "true",
    note: str = "fine",
) -> str:
    """One CSV record of the test contract, fields joined as given (quote them yourself)."""
    return ",".join([str(id), name, code, kind, amount, day, flag, note])


def good_rows(ids: Sequence[int], name: str = "Item") -> list[str]:
    return [row(i, f"{name} {i}", f"AB{i % 100:02d}", amount=f"{i}.5") for i in ids]


def printable(text: str) -> str:
    """A path as logs show it: bytes of a name that are not UTF-8 as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- the context a builder plants into ----------------------------------------------------------


@dataclass
class Ctx:
    tmp: Path

    @property
    def landing(self) -> Path:
        return self.tmp / "landing"

    @property
    def day(self) -> Path:
        """The test agency's delivery day folder (``landing/test-agency/items/<DAY>``)."""
        return self.landing / AGENCY / DATASET / D

    @property
    def other_day(self) -> Path:
        return self.landing / OTHER / DATASET / D

    @property
    def theirs(self) -> Path:
        return self.other_day / "theirs.csv"

    @property
    def canary(self) -> Path:
        return self.tmp / "elsewhere" / "host_secret.csv"

    @property
    def warehouse(self) -> Path:
        return self.tmp / "warehouse"

    def write(self, name: str | bytes, data: bytes | str, folder: Path | None = None) -> Path:
        """A file in ``folder`` (default the day folder); a bytes name is written as is."""
        folder = self.day if folder is None else folder
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(name, bytes):
            path = Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
        else:
            path = folder / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def csv(
        self, name: str | bytes, records: Sequence[str], *, header: str = HEADER, eol: str = "\n"
    ) -> Path:
        text = eol.join([header, *records]) + eol
        return self.write(name, text)

    def link(self, name: str, target: Path | str, folder: Path | None = None) -> Path:
        folder = self.day if folder is None else folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(target)
        return folder / name

    def socket(self, name: str) -> Path:
        """A UNIX socket at ``name`` in the day folder (bound where the path is short enough,
        then moved in: a socket path is limited to about 100 bytes)."""
        self.day.mkdir(parents=True, exist_ok=True)
        short = Path(tempfile.mkdtemp(prefix="flux-sock-", dir="/tmp"))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.bind(str(short / "s"))
                os.replace(short / "s", self.day / name)
        finally:
            for leftover in short.iterdir():
                leftover.unlink()
            short.rmdir()
        return self.day / name

    def sparse(self, name: str, size: int, head: bytes = b"") -> Path:
        """A file of ``size`` bytes, ``head`` then a hole (no disk blocks, reads as NULs)."""
        path = self.write(name, head)
        with path.open("r+b") as handle:
            handle.truncate(size)
        return path

    def age(self, path: Path, seconds: float) -> None:
        stamp = time.time() - seconds
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def plant_surroundings(ctx: Ctx) -> None:
    """What lies around every kind: a canary CSV elsewhere on the host and another agency's
    delivery, both valid rows with unique values the test agency must never load."""
    ctx.canary.parent.mkdir(parents=True)
    ctx.canary.write_text(
        "\n".join([HEADER, *good_rows([301, 302], name=CANARY)]) + "\n", encoding="utf-8"
    )
    ctx.write(
        "theirs.csv", "\n".join([HEADER, *good_rows([201, 202], THEIRS)]) + "\n", ctx.other_day
    )
    ctx.age(ctx.theirs, 2 * QUIET)  # complete: the other agency's run is always due


# --- a kind and its expected outcome -----------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The outcome a demanding user wants.

    ``files``: every entry the load reports (display name) -> None when it loads, else the
    ``delivery.*`` rule it is rejected with (good.csv is added as loaded unless named);
    ``unnamed``: more rejected entries, by rule, whose shown name the corpus does not fix.
    ``curated`` / ``quarantined`` / ``warned``: rows of the loaded files other than good.csv.
    ``rules``: every row rule that fires (quarantine and warnings), exactly.
    ``findings``: what the sensors report (path below landing/ -> rule), exactly.
    ``run``: whether a sensor requests a run of the test agency's day.
    ``check``: more assertions on the loaded data (the DuckDB connection, the result).
    """

    files: Mapping[str, str | None] = field(default_factory=dict)
    # rejected entries whose shown name is not fixed (a name that is not UTF-8): rule -> count
    unnamed: Mapping[str, int] = field(default_factory=dict)
    curated: int = 0
    quarantined: int = 0
    warned: int = 0
    rules: frozenset[str] = frozenset()
    findings: Mapping[str, str] = field(default_factory=dict)
    run: bool = True
    check: Callable[[duckdb.DuckDBPyConnection, PartitionResult], None] | None = None


@dataclass(frozen=True)
class Kind:
    """One hostile kind of delivery: its builder, the outcome expected, and how it runs."""

    name: str
    family: str
    build: Callable[[Ctx], object]
    expect: Expect
    good: bool = True  # also deliver good.csv (3 valid rows) beside the hostile entry
    scan_after: float = LATER  # how long after the build the sensors look
    marker_required: bool = False  # the agency must signal completion (_SUCCESS / manifest)
    chunk_rows: int = 1000
    # Called once the loader has listed the files (a file vanishing in between, say) ...
    after_listing: Callable[[Ctx], object] | None = None
    # ... or while the loader reads ``target`` (after its first chunk): a writer at work.
    during_read: Callable[[Ctx], object] | None = None
    target: str = ""
    # The paths handed to the loader, when not those ``delivered_files`` lists.
    paths: Callable[[Ctx], list[Path]] | None = None
    xfail: str | None = None  # why today's outcome is wrong (the kind is xfail, strict)

    @property
    def expected_files(self) -> dict[str, str | None]:
        files = dict(self.expect.files)
        if self.good:
            files.setdefault("good.csv", None)
        return files

    @property
    def rules_expected(self) -> set[str]:
        """Every rule id this kind's outcome names (files, findings, row rules)."""
        return (
            {r for r in self.expected_files.values() if r}
            | set(self.expect.unnamed)
            | set(self.expect.findings.values())
            | set(self.expect.rules)
        )


@dataclass
class Ran:
    """What one kind did on the real paths."""

    ctx: Ctx
    contract: Contract
    findings: dict[str, str]
    reasons: dict[str, str]
    runs: set[str]
    listed: list[Path]
    result: PartitionResult | None
    conn: duckdb.DuckDBPyConnection
    raw_dir: Path
    scan_seconds: float
    load_seconds: float


def agencies() -> list[Agency]:
    return [
        Agency(id=AGENCY, name="Test", datasets=(DATASET,), onboarded=DAY),
        Agency(
            id=OTHER,
            name="Other",
            datasets=(DATASET, OTHER_DATASET),
            onboarded=DAY,
        ),
    ]


def scan(
    ctx: Ctx, *, now: float, marker_required: bool
) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """One tick's worth of every sensor over the landing zone: (findings path -> rule,
    path -> reason, run-requested days as agency/dataset/day)."""
    registry = agencies()
    delivered = {a.id: a.datasets for a in registry}
    found = list(scan_zone(ctx.landing, delivered, now))
    runs: set[str] = set()
    for dataset in (DATASET, OTHER_DATASET):
        delivering = [a for a in registry if dataset in a.datasets]
        result = scan_dataset(
            ctx.landing,
            dataset,
            delivering,
            {},
            now=now,
            quiet_seconds=QUIET,
            marker_required=[AGENCY] if marker_required else [],
            others=[a.id for a in registry if dataset not in a.datasets],
        )
        found += result.findings
        runs |= {f"{d.agency.id}/{dataset}/{d.day.isoformat()}" for d in result.changed}
    return (
        {printable(f.path): f.rule for f in found},
        {printable(f.path): f.reason for f in found},
        runs,
    )


def run_kind(kind: Kind, tmp: Path, contract: Contract) -> Ran:
    ctx = Ctx(tmp)
    plant_surroundings(ctx)
    if kind.good:
        ctx.csv("good.csv", good_rows(range(1, GOOD_ROWS + 1)))
    kind.build(ctx)

    started = time.monotonic()
    findings, reasons, runs = scan(
        ctx, now=time.time() + kind.scan_after, marker_required=kind.marker_required
    )
    scan_seconds = time.monotonic() - started

    started = time.monotonic()
    listed = delivered_files(ctx.day) if os.path.lexists(ctx.day) else []
    files = kind.paths(ctx) if kind.paths is not None else listed
    if kind.after_listing is not None:
        kind.after_listing(ctx)
    ctx.warehouse.mkdir()
    conn = duckdb.connect(str(ctx.warehouse / f"{AGENCY}.duckdb"))
    loader = make_loader(conn, contract, ctx.warehouse, chunk_rows=kind.chunk_rows)
    result = None
    if files:
        manifest = delivery_manifest(ctx.day)
        result = load_partition(loader, files, manifest)
    return Ran(
        ctx, contract, findings, reasons, runs, listed, result, conn, loader.raw_dir,
        scan_seconds, time.monotonic() - started,
    )  # fmt: skip


# --- recounts -----------------------------------------------------------------------------------


def one(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> Any:
    return conn.execute(sql, list(params)).fetchone()[0]  # type: ignore[index]


def raw_rows(raw_dir: Path) -> pl.DataFrame:
    parts = sorted(raw_dir.glob("*.parquet"))
    return pl.read_parquet(parts) if parts else pl.DataFrame()


def everything_stored(ran: Ran) -> str:
    """Every value Flux stored for the test agency: each table of its DuckDB file and each
    Parquet file under its warehouse folder (raw, staging leftovers included)."""
    texts: list[str] = []
    tables = ran.conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
    ).fetchall()
    for (table,) in tables:
        texts += [repr(r) for r in ran.conn.execute(f'SELECT * FROM "{table}"').fetchall()]
    for part in ran.ctx.warehouse.rglob("*.parquet"):
        texts += [repr(r) for r in pl.read_parquet(part).rows()]
    return "\n".join(texts)


def landing_entries(landing: Path) -> list[str]:
    """Every entry below ``landing/`` (links and special files not followed), as paths
    below it."""
    found: list[str] = []
    for folder, dirs, files in os.walk(landing, followlinks=False):
        below = Path(folder).relative_to(landing)
        for name in dirs + files:
            found.append(str(below / name) if below.parts else name)
    return found


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def row_rule_kind(contract: Contract, rule_id: str) -> str:
    return rule_id if rule_id in fixed_row_rule_ids() else contract.rule(rule_id).kind


def is_control_name(name: str) -> bool:
    return name in MANIFEST_NAMES or name == COMPLETION_MARKER


def rejected_keeps_raw(rule_id: str) -> bool:
    return rule_id in READ_WHOLE_REJECTIONS
