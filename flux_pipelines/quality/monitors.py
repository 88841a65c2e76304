"""Anomaly monitors per agency and dataset: each delivery against the agency's own history.

State lives in the agency file: ``_flux_monitor_state`` holds Welford statistics (n, mean,
m2) per metric and seasonal bucket, O(1) in the number of days; ``_flux_metric_history``
keeps each day's values so a re-loaded day is first removed from the statistics (runs are
idempotent) and so the Isolation Forest has vectors to learn from.

Rules, in order of trust:
- DPLA's gates (ingestion3 defaults): row count drops 15% (WARN) / 30% (ERROR) below the
  baseline; reject rate rises 10 (WARN) / 20 (ERROR) points above it.
- z-scores for null rates and numeric means: |z| >= 3 WARN, >= 5 ERROR, and only for a
  change that also matters (>= 5 points of null rate, >= 10% of a mean): with a hundred
  columns, chance alone crosses z = 3 every few days.
- An Isolation Forest over the day's metric vector once 30 earlier days exist, fitted on
  the earlier days plus the judged ones (one fit per step, so a year-long backfill fits
  once): WARN only, when the day is more isolated than every earlier day. A normal day is
  the most isolated by chance with probability 1/(n+1) (2.4% at 40 days, 0.3% at a
  year), hence WARN and never ERROR.

Seasonality: federal reporting is weekly and monthly. The expected value of a day is its
weekday level (``dow:<0-6>``, from 4 values; ``all`` from 7 values before that) times (row
count) or plus (rates, means) a month-position effect: the day's residual against its
weekday level, kept per day of month (``dom:<1-31>``) and per days to the month's end
(``eom:<0-30>``), taken from whichever of the two varied least in history and used only
when significant (|mean| > 4 standard errors, from 3 values). The baseline is chosen from
history, never by how well it excuses the day being judged. With no history at all the day
only teaches.

A metric that raised an ERROR is recorded but not folded into the statistics, so one bad
delivery does not widen the band the next one is judged by; after ``relearn_after`` ERROR
deliveries in a row the new level is taken as normal and folded in again.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from flux_pipelines.contracts.ddl import PARTITION
from flux_pipelines.quality.metrics import MEAN, NULL_RATE, REJECT_RATE, ROW_COUNT
from flux_pipelines.quality.welford import RunningStats

if TYPE_CHECKING:
    import duckdb


STATE_TABLE = "_flux_monitor_state"
HISTORY_TABLE = "_flux_metric_history"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class MonitorConfig(BaseModel):
    """Thresholds (DPLA's defaults for volume and reject rate)."""

    model_config = ConfigDict(frozen=True)
    count_drop_warn_pct: float = 15.0
    count_drop_error_pct: float = 30.0
    reject_rise_warn_points: float = 10.0
    reject_rise_error_points: float = 20.0
    z_warn: float = 3.0
    z_error: float = 5.0
    min_null_change_points: float = 5.0
    min_mean_change_pct: float = 10.0
    min_history_all: int = 7
    min_history_dow: int = 4
    min_history_dom: int = 3
    season_significance_se: float = 4.0
    relearn_after: int = 5
    seasonality: bool = True
    forest_min_history: int = 30
    forest_max_history: int = 365


@dataclass(frozen=True)
class Finding:
    metric: str
    rule: str  # monitor.count_drop | monitor.reject_rate_rise | monitor.zscore | ...
    severity: str  # WARN | ERROR
    value: float
    expected: float | None
    message: str
    z: float | None = None

    def __str__(self) -> str:
        return f"{self.severity} {self.rule}: {self.message}"


@dataclass
class MonitorResult:
    day: dt.date
    metrics: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> str | None:
        severities = {f.severity for f in self.findings}
        return "ERROR" if "ERROR" in severities else ("WARN" if severities else None)


SEASON = "season:"  # prefix of a metric's residual against its weekday level


@dataclass(frozen=True)
class _Baseline:
    """What a metric is expected to be on a day, how much it varies, and why."""

    expected: float
    std: float | None  # None: no spread in history (a constant)
    label: str


def level_buckets(day: dt.date) -> list[str]:
    return ["all", f"dow:{day.weekday()}"]


def month_buckets(day: dt.date) -> list[str]:
    last = calendar.monthrange(day.year, day.month)[1]
    return [f"dom:{day.day}", f"eom:{last - day.day}"]


def _is_ratio(metric: str) -> bool:
    """Volumes scale (a month-end weekend is a weekend x the month-end factor); rates add."""
    return metric == ROW_COUNT


def evaluate_and_record(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    day: dt.date,
    metrics: dict[str, float],
    config: MonitorConfig | None = None,
    *,
    forest: bool = True,
) -> MonitorResult:
    """Judge the day against history without it, then fold it in (idempotent per day).

    ``forest=False`` leaves the Isolation Forest to ``forest_findings`` (one fit for all the
    days of a backfill instead of one per day).
    """
    config = config or MonitorConfig()
    _ensure_tables(conn)
    state = _load_state(conn, dataset)
    for metric, value in _history_of_day(conn, dataset, day).items():
        for key in _state_keys(metric, day):
            state.setdefault(key, RunningStats()).remove(value)
    result = MonitorResult(day=day, metrics=metrics)
    skipped = sorted(m for m, v in metrics.items() if not math.isfinite(v))
    if skipped:
        result.notes.append(f"not finite, not judged: {', '.join(skipped)}")
    previous = _previous_delivery(conn, dataset, day)
    for metric, value in metrics.items():
        if math.isfinite(value):
            finding = _judge(metric, value, day, state, config, previous.get(metric))
            if finding is not None:
                result.findings.append(finding)
    if not any(state.get((m, "all"), RunningStats()).n for m in metrics):
        result.notes.append("first delivery: no history yet, nothing judged")
    folded = _fold(conn, dataset, day, state, config, result)
    _save(conn, dataset, day, state, metrics, folded)
    if forest:
        found = forest_findings(conn, dataset, [day], config).get(day)
        if isinstance(found, Finding):
            result.findings.append(found)
        elif found:
            result.notes.append(found)
    return result


def _state_keys(metric: str, day: dt.date) -> list[tuple[str, str]]:
    """The statistics a recorded value was folded into (residuals by month position)."""
    names = month_buckets(day) if metric.startswith(SEASON) else level_buckets(day)
    return [(metric, bucket) for bucket in names]


def _fold(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    day: dt.date,
    state: dict[tuple[str, str], RunningStats],
    config: MonitorConfig,
    result: MonitorResult,
) -> dict[str, float]:
    """Fold the day into the statistics; returns what was folded (values and residuals)."""
    errors = {f.metric for f in result.findings if f.severity == "ERROR"}
    streaks = _error_streaks(conn, dataset, day, errors)
    folded: dict[str, float] = {}
    for metric, value in result.metrics.items():
        if not math.isfinite(value):
            continue
        level = _level(metric, day, state, config)
        # Judged with too little history, or against the overall level while its weekday is
        # still being learned, an ERROR may be the normal (a first Sunday): fold it in.
        learning = level is None or (config.seasonality and level[0] == "baseline")
        if metric in errors and not learning:
            if streaks.get(metric, 0) + 1 < config.relearn_after:
                continue
            result.notes.append(
                f"{metric}: {config.relearn_after} ERROR deliveries in a row; "
                "its new level is learned as normal"
            )
        if level is not None:
            _, stats = level
            residual = _residual(metric, value, stats.mean)
            if residual is not None:
                folded[SEASON + metric] = residual
        folded[metric] = value
    for metric, value in folded.items():
        for key in _state_keys(metric, day):
            state.setdefault(key, RunningStats()).add(value)
    return folded


def _residual(metric: str, value: float, level: float) -> float | None:
    if _is_ratio(metric):
        return value / level if level > 0 else None
    return value - level


def _error_streaks(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date, metrics: set[str]
) -> dict[str, int]:
    """How many deliveries in a row before the day each metric was left out (an ERROR)."""
    if not metrics:
        return {}
    rows = conn.execute(
        f"""SELECT metric, count(*) FROM (
              SELECT metric, folded, {PARTITION},
                     max(CASE WHEN folded THEN {PARTITION} END) OVER (PARTITION BY metric)
                       AS last_folded
              FROM {HISTORY_TABLE}
              WHERE dataset = ? AND {PARTITION} < ? AND metric IN (SELECT unnest(?)))
            WHERE NOT folded AND ({PARTITION} > last_folded OR last_folded IS NULL)
            GROUP BY 1""",
        [dataset, day, sorted(metrics)],
    ).fetchall()
    return {str(m): int(n) for m, n in rows}


def _judge(
    metric: str,
    value: float,
    day: dt.date,
    state: dict[tuple[str, str], RunningStats],
    config: MonitorConfig,
    previous: float | None,
) -> Finding | None:
    baseline = _baseline(metric, day, state, config)
    if metric == ROW_COUNT:
        return _count_drop(value, baseline, previous, config)
    if metric == REJECT_RATE:
        return _reject_rise(value, baseline, previous, config)
    return _zscore(metric, value, baseline, config)


def _level(
    metric: str, day: dt.date, state: dict[tuple[str, str], RunningStats], config: MonitorConfig
) -> tuple[str, RunningStats] | None:
    """The weekday's statistics once there are enough of them, else the overall ones."""
    if config.seasonality:
        stats = state.get((metric, f"dow:{day.weekday()}"))
        if stats is not None and stats.n >= config.min_history_dow:
            return f"{WEEKDAYS[day.weekday()]} baseline", stats
    stats = state.get((metric, "all"))
    if stats is not None and stats.n >= config.min_history_all:
        return "baseline", stats
    return None


def _month_effect(
    metric: str, day: dt.date, state: dict[tuple[str, str], RunningStats], config: MonitorConfig
) -> tuple[str, RunningStats] | None:
    """The month position (day of month or days to month end) that varied least in history,
    with its effect when that effect is significant."""
    candidates = [
        (stats.std, bucket, stats)
        for bucket in month_buckets(day)
        if (stats := state.get((SEASON + metric, bucket))) is not None
        and stats.n >= config.min_history_dom
    ]
    if not candidates:
        return None
    _, bucket, stats = min(candidates, key=lambda c: c[0])
    neutral = 1.0 if _is_ratio(metric) else 0.0
    standard_error = stats.std / math.sqrt(stats.n)
    if abs(stats.mean - neutral) <= config.season_significance_se * standard_error:
        return None
    return _month_position(bucket), stats


def _month_position(bucket: str) -> str:
    kind, number = bucket.split(":")
    if kind == "dom":
        return f"day {number} of the month"
    return "the last day of the month" if number == "0" else f"{number} days before month end"


def _baseline(
    metric: str, day: dt.date, state: dict[tuple[str, str], RunningStats], config: MonitorConfig
) -> _Baseline | None:
    level = _level(metric, day, state, config)
    if level is None:
        return None
    name, stats = level
    label = f"{name} {stats.mean:,.2f} (n={stats.n})"
    effect = _month_effect(metric, day, state, config) if config.seasonality else None
    if effect is None:
        return _Baseline(stats.mean, stats.std if stats.n > 1 else None, label)
    position, season = effect
    if _is_ratio(metric):
        expected, std = stats.mean * season.mean, stats.mean * season.std
        label += f" x {season.mean:.2f} on {position} (n={season.n})"
    else:
        # a residual spread from a few months is not trusted to be narrower than the level's
        expected, std = stats.mean + season.mean, max(season.std, stats.std)
        label += f" {season.mean:+,.2f} on {position} (n={season.n})"
    return _Baseline(expected, std, f"expected {expected:,.2f}: {label}")


def _count_drop(
    value: float,
    baseline: _Baseline | None,
    previous: float | None,
    config: MonitorConfig,
) -> Finding | None:
    expected = baseline.expected if baseline else previous
    if expected is None or expected <= 0:
        return None
    drop = 100.0 * (expected - value) / expected
    severity = _level_of(drop, config.count_drop_warn_pct, config.count_drop_error_pct)
    if severity is None:
        return None
    against = baseline.label if baseline else f"previous delivery {expected:,.0f}"
    return Finding(
        ROW_COUNT,
        "monitor.count_drop",
        severity,
        value,
        expected,
        f"row_count {value:,.0f} is {drop:.0f}% below the {against}",
    )


def _reject_rise(
    value: float,
    baseline: _Baseline | None,
    previous: float | None,
    config: MonitorConfig,
) -> Finding | None:
    expected = baseline.expected if baseline else previous
    if expected is None:
        return None
    rise = value - expected
    severity = _level_of(rise, config.reject_rise_warn_points, config.reject_rise_error_points)
    if severity is None:
        return None
    against = baseline.label if baseline else f"previous delivery {expected:.1f}%"
    return Finding(
        REJECT_RATE,
        "monitor.reject_rate_rise",
        severity,
        value,
        expected,
        f"reject rate {value:.1f}% is {rise:.1f} points above the {against}",
    )


def _zscore(
    metric: str, value: float, baseline: _Baseline | None, config: MonitorConfig
) -> Finding | None:
    if baseline is None:
        return None
    expected = baseline.expected
    change = abs(value - expected)
    if metric.startswith(NULL_RATE) and change < config.min_null_change_points:
        return None
    if metric.startswith(MEAN) and change < abs(expected) * config.min_mean_change_pct / 100:
        return None
    if baseline.std is None or baseline.std <= 1e-12 * max(1.0, abs(expected)):
        # A constant history: any real change is worth a look, never an ERROR by itself.
        return Finding(
            metric, "monitor.constant_changed", "WARN", value, expected,
            f"{metric} is {value:,.4g}; it was always {expected:,.4g} ({baseline.label})",
        )  # fmt: skip
    z = (value - expected) / baseline.std
    severity = _level_of(abs(z), config.z_warn, config.z_error)
    if severity is None:
        return None
    return Finding(
        metric, "monitor.zscore", severity, value, expected,
        f"{metric} {value:,.4g} is {z:+.1f} standard deviations from the {baseline.label}",
        z,
    )  # fmt: skip


def _level_of(amount: float, warn: float, error: float) -> str | None:
    if amount >= error:
        return "ERROR"
    return "WARN" if amount >= warn else None


def forest_findings(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    days: list[dt.date],
    config: MonitorConfig | None = None,
) -> dict[dt.date, Finding | str]:
    """Isolation Forest verdicts for recorded days, from one fit over them and their history.

    The forest is fitted on the earlier days plus the judged days (trees split only within
    the values they see, so a day beyond every earlier value is isolated only if it is among
    them); a day is flagged when it is more isolated than every day before it.
    """
    config = config or MonitorConfig()
    if not days:
        return {}
    first, last = min(days), max(days)
    rows = conn.execute(
        f"SELECT {PARTITION}, metric, value FROM {HISTORY_TABLE} "
        f"WHERE dataset = ? AND {PARTITION} <= ? AND {PARTITION} >= ? "
        "AND NOT starts_with(metric, ?)",
        [dataset, last, first - dt.timedelta(days=config.forest_max_history), SEASON],
    ).fetchall()
    known = sorted({r[0] for r in rows})
    earlier = {d: sum(1 for k in known if k < d) for d in days}
    if all(n < config.forest_min_history for n in earlier.values()):
        wanted = config.forest_min_history
        note = f"isolation forest waits for {wanted} days of history"
        return {d: f"{note} ({earlier[d]} so far)" for d in days}
    from sklearn.ensemble import IsolationForest  # ~0.5 s to import: only when used

    names = sorted({r[1] for r in rows})
    index = {d: i for i, d in enumerate(known)}
    column = {m: j for j, m in enumerate(names)}
    vectors = np.full((len(known), len(names)), np.nan)
    for d, metric, value in rows:
        vectors[index[d], column[metric]] = value
    medians = np.nanmedian(np.where(np.isnan(vectors).all(axis=0), 0.0, vectors), axis=0)
    vectors = np.where(np.isnan(vectors), medians, vectors)
    center, scale = vectors.mean(axis=0), vectors.std(axis=0)
    scale[scale == 0] = 1.0
    scaled = (vectors - center) / scale
    scores = IsolationForest(n_estimators=200, random_state=0).fit(scaled).score_samples(scaled)
    verdicts: dict[dt.date, Finding | str] = {}
    for day in days:
        if day not in index or earlier[day] < config.forest_min_history:
            verdicts[day] = f"isolation forest waits for {config.forest_min_history} days"
            continue
        i = index[day]
        score, floor = float(scores[i]), float(scores[:i].min())
        if score < floor:
            worst = names[int(np.argmax(np.abs(scaled[i])))]
            verdicts[day] = Finding(
                "vector", "monitor.isolation_forest", "WARN", score, floor,
                f"the day's metrics are more isolated than any of the {i} earlier days "
                f"(score {score:.3f} < {floor:.3f}); furthest from normal: {worst}",
            )  # fmt: skip
    return verdicts


def _previous_delivery(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date
) -> dict[str, float]:
    """Row count and reject rate of the latest earlier delivery (DPLA's comparison)."""
    rows = conn.execute(
        f"SELECT metric, arg_max(value, {PARTITION}) FROM {HISTORY_TABLE} "
        f"WHERE dataset = ? AND metric IN (?, ?) AND {PARTITION} < ? GROUP BY 1",
        [dataset, ROW_COUNT, REJECT_RATE, day],
    ).fetchall()
    return {str(m): float(v) for m, v in rows}


def _ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (dataset VARCHAR NOT NULL, "
        "metric VARCHAR NOT NULL, bucket VARCHAR NOT NULL, n BIGINT NOT NULL, "
        "mean DOUBLE NOT NULL, m2 DOUBLE NOT NULL)"
    ).fetchall()
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (dataset VARCHAR NOT NULL, "
        f"{PARTITION} DATE NOT NULL, metric VARCHAR NOT NULL, value DOUBLE NOT NULL)"
    ).fetchall()
    conn.execute(  # files from before ERROR values were kept out of the statistics
        f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN IF NOT EXISTS folded BOOLEAN DEFAULT true"
    ).fetchall()


def _load_state(
    conn: duckdb.DuckDBPyConnection, dataset: str
) -> dict[tuple[str, str], RunningStats]:
    rows = conn.execute(
        f"SELECT metric, bucket, n, mean, m2 FROM {STATE_TABLE} WHERE dataset = ?", [dataset]
    ).fetchall()
    return {(m, b): RunningStats(int(n), float(mean), float(m2)) for m, b, n, mean, m2 in rows}


def _history_of_day(
    conn: duckdb.DuckDBPyConnection, dataset: str, day: dt.date
) -> dict[str, float]:
    rows = conn.execute(
        f"SELECT metric, value FROM {HISTORY_TABLE} "
        f"WHERE dataset = ? AND {PARTITION} = ? AND folded",
        [dataset, day],
    ).fetchall()
    return {str(m): float(v) for m, v in rows}


def _insert(conn: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """One bulk insert (executemany goes row by row)."""
    if frame.height == 0:
        return
    conn.register("_flux_rows", frame)
    try:
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _flux_rows").fetchall()
    finally:
        conn.unregister("_flux_rows")


def _save(
    conn: duckdb.DuckDBPyConnection,
    dataset: str,
    day: dt.date,
    state: dict[tuple[str, str], RunningStats],
    metrics: dict[str, float],
    folded: dict[str, float],
) -> None:
    """Replace the dataset's statistics and the day's values in one transaction."""
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {STATE_TABLE} WHERE dataset = ?", [dataset]).fetchall()
        _insert(
            conn,
            STATE_TABLE,
            pl.DataFrame(
                [(dataset, m, b, s.n, s.mean, s.m2) for (m, b), s in state.items() if s.n],
                schema=["dataset", "metric", "bucket", "n", "mean", "m2"],
                orient="row",
            ),
        )
        conn.execute(
            f"DELETE FROM {HISTORY_TABLE} WHERE dataset = ? AND {PARTITION} = ?", [dataset, day]
        ).fetchall()
        _insert(
            conn,
            HISTORY_TABLE,
            pl.DataFrame(
                [
                    (dataset, day, m, v, m in folded)
                    for m, v in {**metrics, **folded}.items()
                    if math.isfinite(v)
                ],
                schema=["dataset", PARTITION, "metric", "value", "folded"],
                orient="row",
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
