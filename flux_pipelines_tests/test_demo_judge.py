"""The demo generator's judge and its bytes.

The generator asks ``oracle.broken_rules`` which rules each candidate row breaks; it runs
the validator's own expressions but stops before the report, so it must agree with
``RowValidator.validate`` row for row, rule for rule, in the same order, on every shipped
contract, for generated rows and for hostile text. And the same seed must give the same
bytes whatever is refactored: the digest below was recorded before the generator was made
faster and must only change when the generated deliveries are meant to change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.contracts.validator import RowValidator
from flux_pipelines.demo.generator import generate_many, generate_rows, write_large_csv
from flux_pipelines.demo.oracle import broken_rules, violation_frame
from flux_pipelines.demo.rows import RowsRequest
from flux_pipelines.names import FILE, ROW
from flux_pipelines_tests.test_generator import TINY

# Text agencies really send, typed or not: nulls, exponents, signs, overflow, non-ASCII
# digits, impossible dates, long text. Spread over every column of the hostile rows.
HOSTILE = [
    "", "  ", "NA", "n/a", "1e309", "-1e-400", "5.0", "-0", "+7", "05", "0x10", "1,000",
    "NaN", "inf", "abc", "\uff11\uff12", "2026-02-30", "2026-1-5", "2026-01-05T25:00:00",
    "9007199254740993", "99999999999999999999", "true", "Y", "x" * 300, " open ",
]  # fmt: skip


def _shipped() -> list[Contract]:
    registry = load_registry()
    datasets = sorted({d for agency in registry.agencies for d in agency.datasets})
    return [registry.latest(d) for d in datasets]


def _with_hostile_rows(contract: Contract, frame: pl.DataFrame, rows: int) -> pl.DataFrame:
    """``frame`` (contract columns, text) followed by ``rows`` rows of hostile text."""
    names = contract.column_names
    hostile = pl.DataFrame(
        {
            name: [HOSTILE[(i * 7 + k) % len(HOSTILE)] for i in range(rows)]
            for k, name in enumerate(names)
        },
        schema=dict.fromkeys(names, pl.String),
    )
    return pl.concat([frame.select(names), hostile])


@pytest.mark.parametrize("contract", _shipped(), ids=lambda c: c.id)
def test_the_judge_finds_what_validate_reports(contract: Contract) -> None:
    delivery = generate_rows(contract, 120, seed=5, defect_rate=0.2)
    rows = _with_hostile_rows(contract, delivery.contract_frame().drop(FILE, ROW), 60)
    validator = RowValidator(contract)
    chunk = rows.with_columns(
        pl.lit("f.csv").alias(FILE), pl.int_range(0, rows.height, dtype=pl.Int64).alias(ROW)
    )
    reported = validator.validate(chunk).violations.select(ROW, "rule_id")
    hits = broken_rules(validator, rows)
    judged = violation_frame(hits)
    assert reported.height > 0  # defects and hostile text break rules
    assert judged.equals(reported)
    # a slice (one delivery of a batch) gets its own rows, counted from its start
    start, end = 50, 140
    mine = reported.filter(pl.col(ROW).is_between(start, end, closed="left"))
    assert violation_frame(hits, start, end).equals(mine.with_columns(pl.col(ROW) - start))


def _digest(tmp_path: Path, tiny: Contract) -> str:
    """sha256 over what the generator makes of the tiny contract: deliveries alone and in
    lockstep, their planted tables, and a streamed CSV (BOM + CRLF, several chunks)."""
    out = hashlib.sha256()
    for n_rows, seed, rate in [(300, 42, 0.05), (57, 7, 0.2), (1, 3, 0.0)]:
        delivery = generate_rows(tiny, n_rows, seed=seed, defect_rate=rate)
        out.update(delivery.frame.write_csv().encode())
        out.update(delivery.planted.write_csv().encode())
    requests = [RowsRequest(tiny, 80 + i, 100 + i, 0.1) for i in range(3)]
    for delivery in generate_many(requests):
        out.update(delivery.frame.write_csv().encode())
        out.update(delivery.planted.write_csv().encode())
    path = tmp_path / "big.csv"
    planted = write_large_csv(
        tiny, path, 2_500, seed=9, chunk_rows=1_000, defect_rate=0.05, bom=True, crlf=True
    )
    out.update(path.read_bytes())
    out.update(planted.write_csv().encode())
    return out.hexdigest()


# Recorded with the generator before its speed-up (issue 14 point 7), same polars.
TINY_DIGEST = "1e5db6cb428656514cee1af36fe76542e20da97db21f118ba4027f8287708d5f"


def test_the_same_seed_gives_the_recorded_bytes(tmp_path: Path) -> None:
    """Update TINY_DIGEST only when generated deliveries are meant to change (a new draw,
    a new defect kind); a refactor or a speed-up must leave it as it is."""
    contract_path = tmp_path / "datasets" / "tiny" / "1.0.0.odcs.yaml"
    contract_path.parent.mkdir(parents=True)
    contract_path.write_text(TINY, encoding="utf-8")
    tiny = load_contract(contract_path)
    assert _digest(tmp_path, tiny) == TINY_DIGEST
