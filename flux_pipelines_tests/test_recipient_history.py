"""Per-recipient running statistics: Chan/Welford merges in DuckDB against numpy."""

from __future__ import annotations

import datetime as dt
import math
import random

import duckdb
import numpy as np
import polars as pl
import pytest

from flux_pipelines.risk.recipient_history import (
    STATE_TABLE,
    day_statistics,
    ensure_tables,
    fold_day,
    has_later_days,
    history_before,
    history_of,
)

DAY = dt.date(2025, 3, 3)


def _day_frame(seed: int, rows: int = 400) -> pl.DataFrame:
    rng = random.Random(seed)
    recipients = [f"R{rng.randrange(12)}" for _ in range(rows)]
    amounts = [rng.lognormvariate(9, 2) * rng.choice((1, 1, 1, -1)) for _ in range(rows)]
    amounts[:4] = [math.nan, math.inf, -math.inf, 0.0]
    recipients[4] = None  # type: ignore[call-overload]
    frame = pl.DataFrame({"recipient": recipients, "amount": amounts})
    constant = pl.DataFrame({"recipient": ["CONST"] * 3, "amount": [5000.0] * 3})
    return pl.concat([frame, constant])


def _expected(frames: list[pl.DataFrame]) -> dict[str, tuple[int, float, float | None]]:
    """n, mean and sample std per recipient, from numpy over every finite value at once."""
    values: dict[str, list[float]] = {}
    for frame in frames:
        for recipient, amount in frame.iter_rows():
            if recipient is not None and math.isfinite(amount):
                values.setdefault(recipient, []).append(
                    math.copysign(math.log1p(abs(amount)), amount)
                )
    return {
        r: (len(v), float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None)
        for r, v in values.items()
    }


def _state(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, float, float | None]]:
    everyone = pl.Series(
        [r for (r,) in conn.execute(f"SELECT recipient FROM {STATE_TABLE}").fetchall()]
    )
    return {r: (n, m, s) for r, n, m, s in history_of(conn, everyone).iter_rows()}


def _assert_matches(got: dict, want: dict) -> None:  # type: ignore[type-arg]
    assert set(got) == set(want)
    for recipient, (n, mean, std) in want.items():
        assert got[recipient][0] == n, recipient
        assert got[recipient][1] == pytest.approx(mean, rel=1e-9, abs=1e-9), recipient
        if std is None:
            assert got[recipient][2] is None
        else:
            assert got[recipient][2] == pytest.approx(std, rel=1e-7, abs=1e-9), recipient


def test_folding_days_matches_numpy_over_all_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))
    ensure_tables(conn)
    frames = [_day_frame(seed) for seed in range(6)]
    for i, frame in enumerate(frames):
        fold_day(conn, DAY + dt.timedelta(days=i), day_statistics(frame, "recipient", "amount"))
    want = _expected(frames)
    _assert_matches(_state(conn), want)
    state = _state(conn)
    assert state["CONST"][:2] == (18, pytest.approx(math.log1p(5000.0)))
    assert state["CONST"][2] == pytest.approx(0.0, abs=1e-9)  # no spread, never negative
    assert None not in state  # a row without a recipient teaches nothing


def test_reloading_a_day_replaces_its_contribution(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))
    ensure_tables(conn)
    frames = [_day_frame(seed) for seed in range(4)]
    for i, frame in enumerate(frames):
        fold_day(conn, DAY + dt.timedelta(days=i), day_statistics(frame, "recipient", "amount"))
    corrected = _day_frame(99, rows=50)  # day 2 delivered again, different and smaller
    fold_day(conn, DAY + dt.timedelta(days=2), day_statistics(corrected, "recipient", "amount"))
    fold_day(conn, DAY + dt.timedelta(days=2), day_statistics(corrected, "recipient", "amount"))
    _assert_matches(_state(conn), _expected([frames[0], frames[1], corrected, frames[3]]))


def test_taking_out_every_day_leaves_no_recipient(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))
    ensure_tables(conn)
    frame = _day_frame(1)
    fold_day(conn, DAY, day_statistics(frame, "recipient", "amount"))
    empty = day_statistics(frame.clear(), "recipient", "amount")
    fold_day(conn, DAY, empty)
    assert conn.execute(f"SELECT count(*) FROM {STATE_TABLE}").fetchall() == [(0,)]


def test_history_before_a_day_ignores_later_days(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = duckdb.connect(str(tmp_path / "a.duckdb"))
    ensure_tables(conn)
    frames = [_day_frame(seed) for seed in range(5)]
    for i in (4, 0, 3, 1, 2):  # folded out of order, as a backfill after a late day may
        fold_day(conn, DAY + dt.timedelta(days=i), day_statistics(frames[i], "recipient", "amount"))
    assert has_later_days(conn, DAY + dt.timedelta(days=2))
    assert not has_later_days(conn, DAY + dt.timedelta(days=4))
    everyone = pl.Series([f"R{i}" for i in range(12)] + ["CONST", "NOBODY"])
    before = history_before(conn, DAY + dt.timedelta(days=2), everyone)
    got = {r: (n, m, s) for r, n, m, s in before.iter_rows()}
    _assert_matches(got, _expected(frames[:2]))
