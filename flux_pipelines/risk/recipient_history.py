"""Per-recipient running statistics of obligations, persisted in the agency file.

Each recipient keeps (n, mean, m2) of its obligations on a signed-log scale
(sign(x) * ln(1 + |x|): amounts span nine orders of magnitude, and "far from its own
history" means a factor, not a dollar difference). Days are folded in with Chan's parallel
form of Welford's update, so the state is O(recipients) whatever the number of days and a
day is one vectorised merge. A ledger of each day's own (n, mean, m2) per recipient lets a
re-loaded day be taken out exactly before it is folded in again (runs stay idempotent).
NaN and infinite amounts are never folded in; a recipient with one value or no spread has
no z-score (``None``), and says so instead of dividing by zero.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl

from flux_pipelines.sql import frame as sql_frame

if TYPE_CHECKING:
    import duckdb


STATE_TABLE = "_flux_recipient_stats"
LEDGER_TABLE = "_flux_recipient_day_stats"


def signed_log(amount: pl.Expr) -> pl.Expr:
    return amount.sign() * amount.abs().log1p()


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (recipient VARCHAR PRIMARY KEY, "
        "n BIGINT NOT NULL, mean DOUBLE NOT NULL, m2 DOUBLE NOT NULL)"
    ).fetchall()
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (day DATE NOT NULL, "
        "recipient VARCHAR NOT NULL, n BIGINT NOT NULL, mean DOUBLE NOT NULL, "
        "m2 DOUBLE NOT NULL)"
    ).fetchall()


def day_statistics(frame: pl.DataFrame, recipient: str, amount: str) -> pl.DataFrame:
    """One row per recipient: n, mean and m2 of the day's finite signed-log amounts."""
    value = signed_log(pl.col(amount).cast(pl.Float64))
    return (
        frame.select(pl.col(recipient).alias("recipient"), value.alias("x"))
        .filter(pl.col("recipient").is_not_null() & pl.col("x").is_finite())
        .group_by("recipient")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("x").mean().alias("mean"),
            ((pl.col("x") - pl.col("x").mean()) ** 2).sum().alias("m2"),
        )
    )


STD = "CASE WHEN n > 1 THEN sqrt(m2 / (n - 1)) END AS std"


def for_recipients(
    conn: duckdb.DuckDBPyConnection, recipients: pl.Series, sql: str, params: list[object]
) -> pl.DataFrame:
    """Run ``sql`` with the recipients registered as ``_flux_wanted(recipient)``."""
    conn.register("_flux_wanted", pl.DataFrame({"recipient": recipients.unique()}))
    try:
        return sql_frame(conn, sql, params or None)
    finally:
        conn.unregister("_flux_wanted")


def history_of(conn: duckdb.DuckDBPyConnection, recipients: pl.Series) -> pl.DataFrame:
    """The recipients' running statistics over every folded day (absent: no history)."""
    return for_recipients(
        conn,
        recipients,
        f"SELECT recipient, n, mean, {STD} FROM {STATE_TABLE} JOIN _flux_wanted USING (recipient)",
        [],
    )


def history_before(
    conn: duckdb.DuckDBPyConnection, day: dt.date, recipients: pl.Series
) -> pl.DataFrame:
    """The statistics of the days before ``day`` only, merged from the ledger (Chan's sum).

    Used when a day is re-scored after later days were folded in, so a day's score never
    depends on what arrived after it.
    """
    return for_recipients(
        conn,
        recipients,
        f"""WITH d AS (SELECT l.* FROM {LEDGER_TABLE} l JOIN _flux_wanted USING (recipient)
                        WHERE l.day < ?),
                 t AS (SELECT recipient, sum(n) AS n, sum(n * mean) / sum(n) AS mean
                         FROM d GROUP BY recipient),
                 m AS (SELECT t.recipient, t.n, t.mean,
                              sum(d.m2) + sum(d.n * (d.mean - t.mean) ^ 2) AS m2
                         FROM t JOIN d USING (recipient) GROUP BY ALL)
            SELECT recipient, n, mean, {STD} FROM m""",
        [day],
    )


def has_later_days(conn: duckdb.DuckDBPyConnection, day: dt.date) -> bool:
    return conn.execute(f"SELECT count(*) FROM {LEDGER_TABLE} WHERE day > ?", [day]).fetchall() != [
        (0,)
    ]


def fold_day(conn: duckdb.DuckDBPyConnection, day: dt.date, stats: pl.DataFrame) -> None:
    """Replace the day's contribution to the state by ``stats`` (one transaction)."""
    ensure_tables(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        take_out_day(conn, day)
        fold_in_day(conn, day, stats)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def day_in_ledger(conn: duckdb.DuckDBPyConnection, ledger: str, day: dt.date) -> bool:
    """Whether ``day`` was folded in before: a day loaded for the first time (the daily
    flow, a backfill) has nothing to take out, and skips the merge and deletes."""
    return bool(conn.execute(f"SELECT 1 FROM {ledger} WHERE day = ? LIMIT 1", [day]).fetchall())


def take_out_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """Remove the day's earlier contribution, if any (inside the caller's transaction)."""
    if not day_in_ledger(conn, LEDGER_TABLE, day):
        return
    _merge(conn, f"SELECT recipient, n, mean, m2 FROM {LEDGER_TABLE} WHERE day = ?", [day], -1)
    conn.execute(f"DELETE FROM {LEDGER_TABLE} WHERE day = ?", [day]).fetchall()
    conn.execute(f"DELETE FROM {STATE_TABLE} WHERE n <= 0").fetchall()


def fold_in_day(conn: duckdb.DuckDBPyConnection, day: dt.date, stats: pl.DataFrame) -> None:
    """Add the day's statistics and remember them in the ledger (caller's transaction)."""
    conn.register("_flux_day", stats)
    try:
        _merge(conn, "SELECT recipient, n, mean, m2 FROM _flux_day", [], +1)
        conn.execute(
            f"INSERT INTO {LEDGER_TABLE} SELECT ?, recipient, n, mean, m2 FROM _flux_day",
            [day],
        ).fetchall()
    finally:
        conn.unregister("_flux_day")


def _merge(conn: duckdb.DuckDBPyConnection, source: str, params: list[object], sign: int) -> None:
    """Chan et al.: fold (sign +1) or take out (sign -1) a batch's (n, mean, m2) per recipient.

    Adding B to A: n = na + nb, d = mb - ma, mean = ma + d nb / n, m2 = m2a + m2b + d^2 na nb / n.
    Taking B out of AB solves the same equations for A.
    """
    if sign > 0:
        update = """
            n = s.n + b.n,
            mean = s.mean + (b.mean - s.mean) * b.n / (s.n + b.n),
            m2 = s.m2 + b.m2 + (b.mean - s.mean) ^ 2 * s.n * b.n / (s.n + b.n)"""
    else:
        rest_mean = "CASE WHEN s.n > b.n THEN (s.n * s.mean - b.n * b.mean) / (s.n - b.n) END"
        update = f"""
            n = s.n - b.n,
            mean = coalesce({rest_mean}, 0),
            m2 = greatest(0, coalesce(
                s.m2 - b.m2 - (b.mean - {rest_mean}) ^ 2 * (s.n - b.n) * b.n / s.n, 0))"""
    conn.execute(
        f"UPDATE {STATE_TABLE} s SET {update} FROM ({source}) b WHERE s.recipient = b.recipient",
        params,
    ).fetchall()
    if sign > 0:
        conn.execute(
            f"INSERT INTO {STATE_TABLE} SELECT b.recipient, b.n, b.mean, b.m2 FROM ({source}) b "
            f"WHERE b.recipient NOT IN (SELECT recipient FROM {STATE_TABLE})",
            params,
        ).fetchall()
