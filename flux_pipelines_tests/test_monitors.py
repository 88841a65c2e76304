"""The anomaly monitors on real DuckDB state: Welford, DPLA rules, seasonality, the forest."""

from __future__ import annotations

import datetime as dt
import random

import duckdb
import numpy as np
import pytest

from flux_pipelines.quality.metrics import REJECT_RATE, ROW_COUNT
from flux_pipelines.quality.monitors import (
    STATE_TABLE,
    MonitorConfig,
    MonitorResult,
    evaluate_and_record,
)
from flux_pipelines.quality.welford import RunningStats

START = dt.date(2026, 1, 5)  # a Monday


def _feed(conn: duckdb.DuckDBPyConnection, series: list[dict[str, float]], **cfg: object):  # type: ignore[no-untyped-def]
    config = MonitorConfig(**cfg)  # type: ignore[arg-type]
    return [
        evaluate_and_record(conn, "items", START + dt.timedelta(days=i), m, config)
        for i, m in enumerate(series)
    ]


def _steady(
    n: int, rows: float = 1000.0, reject: float = 2.0, seed: int = 1
) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [
        {ROW_COUNT: rows * rng.uniform(0.97, 1.03), REJECT_RATE: reject + rng.uniform(-0.5, 0.5)}
        for _ in range(n)
    ]


def _rules(result: MonitorResult) -> dict[str, str]:
    return {f.rule: f.severity for f in result.findings}


def test_welford_matches_numpy_with_large_offsets_and_removal() -> None:
    rng = np.random.default_rng(3)
    values = 1e9 + rng.normal(0, 5, 10_000)
    stats = RunningStats()
    for v in values:
        stats.add(float(v))
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.variance == pytest.approx(values.var(ddof=1), rel=1e-6)
    for v in values[5000:]:
        stats.remove(float(v))
    assert stats.n == 5000
    assert stats.mean == pytest.approx(values[:5000].mean(), rel=1e-12)
    assert stats.variance == pytest.approx(values[:5000].var(ddof=1), rel=1e-4)


def test_non_finite_values_are_ignored_and_constant_history_has_no_z() -> None:
    stats = RunningStats()
    assert not stats.add(float("nan")) and not stats.add(float("inf"))
    for _ in range(5):
        stats.add(7.0)
    assert stats.n == 5 and stats.variance == 0.0
    assert stats.z(9.0) is None


def test_first_deliveries_teach_and_never_judge(conn: duckdb.DuckDBPyConnection) -> None:
    first = _feed(conn, [{ROW_COUNT: 1000.0, REJECT_RATE: 1.0}])[0]
    assert first.findings == [] and any("first delivery" in n for n in first.notes)


@pytest.mark.parametrize(("drop", "expected"), [(0.40, "ERROR"), (0.20, "WARN"), (0.05, None)])
def test_count_drop_uses_dpla_thresholds(
    conn: duckdb.DuckDBPyConnection, drop: float, expected: str | None
) -> None:
    series = [*_steady(20), {ROW_COUNT: 1000 * (1 - drop), REJECT_RATE: 2.0}]
    last = _feed(conn, series)[-1]
    assert _rules(last).get("monitor.count_drop") == expected
    if expected:
        finding = next(f for f in last.findings if f.rule == "monitor.count_drop")
        assert f"{round(drop * 100)}% below" in finding.message or "% below" in finding.message
        assert last.worst == expected


def test_reject_rate_rise_of_25_points_is_an_error(conn: duckdb.DuckDBPyConnection) -> None:
    last = _feed(conn, [*_steady(20), {ROW_COUNT: 1000.0, REJECT_RATE: 27.0}])[-1]
    assert _rules(last)["monitor.reject_rate_rise"] == "ERROR"


def test_with_two_deliveries_the_baseline_is_the_previous_delivery(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    results = _feed(
        conn, [{ROW_COUNT: 1000.0, REJECT_RATE: 1.0}, {ROW_COUNT: 600.0, REJECT_RATE: 1.0}]
    )
    finding = results[1].findings[0]
    assert finding.rule == "monitor.count_drop" and finding.severity == "ERROR"
    assert "previous delivery 1,000" in finding.message


def _weekly(weeks: int) -> list[dict[str, float]]:
    """Weekdays ~1000 rows, weekends ~200 (20%)."""
    rng = random.Random(5)
    out = []
    for i in range(weeks * 7):
        weekend = (START + dt.timedelta(days=i)).weekday() >= 5
        out.append(
            {ROW_COUNT: (200 if weekend else 1000) * rng.uniform(0.95, 1.05), REJECT_RATE: 2.0}
        )
    return out


def test_a_normal_sunday_is_not_a_volume_drop_with_seasonality(
    conn: duckdb.DuckDBPyConnection, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    results = _feed(conn, _weekly(6))
    sundays = [r for r in results[35:] if r.day.weekday() == 6]
    assert sundays and all("monitor.count_drop" not in _rules(r) for r in sundays)
    # Without seasonality the same Sundays are ERRORs against the all-days baseline.
    plain = duckdb.connect(str(tmp_path / "plain.duckdb"))
    flat = _feed(plain, _weekly(6), seasonality=False)
    assert all(
        _rules(r).get("monitor.count_drop") == "ERROR" for r in flat[35:] if r.day.weekday() == 6
    )
    # And a Monday at weekend volume is still caught with seasonality on.
    monday = evaluate_and_record(
        conn, "items", START + dt.timedelta(days=42), {ROW_COUNT: 250.0, REJECT_RATE: 2.0}
    )
    assert _rules(monday)["monitor.count_drop"] == "ERROR"
    assert "Monday baseline" in monday.findings[0].message


def test_re_evaluating_a_day_is_idempotent(conn: duckdb.DuckDBPyConnection) -> None:
    series = [*_steady(10), {ROW_COUNT: 500.0, REJECT_RATE: 2.0}]
    first = _feed(conn, series)[-1]
    query = f"SELECT metric, bucket, n, mean FROM {STATE_TABLE} ORDER BY 1, 2"
    state = conn.execute(query).fetchall()
    again = evaluate_and_record(conn, "items", first.day, series[-1])
    assert [str(f) for f in again.findings] == [str(f) for f in first.findings]
    after = conn.execute(query).fetchall()
    assert [r[:3] for r in after] == [r[:3] for r in state]  # same n: not counted twice
    assert [r[3] for r in after] == pytest.approx([r[3] for r in state], rel=1e-12)


def test_null_rate_jump_is_judged_by_z_score_and_practical_change(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    rng = random.Random(2)
    series = [
        {ROW_COUNT: 1000.0, REJECT_RATE: 1.0, "null_rate.name": 2.0 + rng.uniform(-0.5, 0.5)}
        for _ in range(15)
    ]
    results = _feed(conn, [*series, {ROW_COUNT: 1000.0, REJECT_RATE: 1.0, "null_rate.name": 40.0}])
    assert _rules(results[-1])["monitor.zscore"] == "ERROR"
    assert not any(r.findings for r in results[8:15])


def test_isolation_forest_flags_a_vector_outside_history(conn: duckdb.DuckDBPyConnection) -> None:
    rng = random.Random(9)
    normal = [
        {ROW_COUNT: 1000 * rng.uniform(0.97, 1.03), REJECT_RATE: 2 + rng.uniform(-0.3, 0.3),
         "mean.amount": 50 + rng.uniform(-1, 1)}
        for _ in range(40)
    ]  # fmt: skip
    results = _feed(conn, normal)
    assert all("monitor.isolation_forest" not in _rules(r) for r in results[30:])
    usual = evaluate_and_record(
        conn, "items", START + dt.timedelta(days=40),
        {ROW_COUNT: 1005.0, REJECT_RATE: 2.05, "mean.amount": 50.2},
    )  # fmt: skip
    assert usual.findings == []
    far = evaluate_and_record(
        conn, "items", START + dt.timedelta(days=41),
        {ROW_COUNT: 1000.0, REJECT_RATE: 2.0, "mean.amount": 500.0},
    )  # fmt: skip
    assert _rules(far)["monitor.isolation_forest"] == "WARN"


def _monthly(days: int, seed: int = 3) -> list[dict[str, float]]:
    """Weekdays ~1000 rows, weekends ~200, x1.8 on the last two days of every month."""
    rng = random.Random(seed)
    out = []
    for i in range(days):
        day = START + dt.timedelta(days=i)
        rows = 200.0 if day.weekday() >= 5 else 1000.0
        if (day + dt.timedelta(days=2)).month != day.month:
            rows *= 1.8
        out.append({ROW_COUNT: rows * rng.uniform(0.95, 1.05), REJECT_RATE: 2.0})
    return out


def test_month_end_peaks_on_weekends_are_normal_and_weekday_drops_still_caught(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    """Weekday and month-end effects combine (a month-end Saturday is ~360 rows): judged
    against either alone, the day after a peak or a month-end weekend looks like a drop."""
    results = [  # no forest: 400 fits would only slow the test down
        evaluate_and_record(conn, "items", START + dt.timedelta(days=i), m, forest=False)
        for i, m in enumerate(_monthly(400))
    ]
    judged = results[120:]
    month_end_weekends = [
        r
        for r in judged
        if r.day.weekday() >= 5 and (r.day + dt.timedelta(days=2)).month != r.day.month
    ]
    assert len(month_end_weekends) >= 4
    assert all(r.worst is None for r in judged), [str(f) for r in judged for f in r.findings]
    # A Thursday 22% short of its weekday level, mid-month: WARN against the Thursday level.
    thursday = START + dt.timedelta(days=402)
    assert thursday.weekday() == 3 and thursday.day == 11
    mild = evaluate_and_record(
        conn, "items", thursday, {ROW_COUNT: 780.0, REJECT_RATE: 2.0}, forest=False
    )
    assert _rules(mild) == {"monitor.count_drop": "WARN"}
    # The last day of a month at a plain weekday's volume is a drop against the month-end level.
    last = dt.date(2027, 3, 31)  # a Wednesday, 450 days in
    flat = evaluate_and_record(
        conn, "items", last, {ROW_COUNT: 1000.0, REJECT_RATE: 2.0}, forest=False
    )
    [finding] = flat.findings
    assert finding.severity == "ERROR" and "on the last day of the month" in finding.message


def test_an_error_value_does_not_widen_the_baseline_until_it_persists(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    series = [*_steady(20), {ROW_COUNT: 400.0, REJECT_RATE: 2.0}]
    drop = _feed(conn, series, seasonality=False)[-1]
    assert _rules(drop)["monitor.count_drop"] == "ERROR"
    n_rows = f"SELECT n FROM {STATE_TABLE} WHERE metric = ? AND bucket = 'all'"
    assert conn.execute(n_rows, [ROW_COUNT]).fetchall() == [(20,)]  # the ERROR is left out
    assert conn.execute(n_rows, [REJECT_RATE]).fetchall() == [(21,)]  # a normal one is not
    config = MonitorConfig(seasonality=False, relearn_after=3)
    same = {ROW_COUNT: 400.0, REJECT_RATE: 2.0}
    later = [
        evaluate_and_record(conn, "items", drop.day + dt.timedelta(days=k), same, config)
        for k in (1, 2)
    ]
    assert [r.worst for r in later] == ["ERROR", "ERROR"]
    assert any("new level is learned" in note for note in later[-1].notes)  # third in a row
    assert conn.execute(n_rows, [ROW_COUNT]).fetchall() == [(21,)]
