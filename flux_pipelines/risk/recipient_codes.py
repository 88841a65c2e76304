"""Which industry (NAICS) and product (PSC) codes each recipient has been paid under.

A contractor that has built roads for years and is suddenly paid for medical supplies is
where reviews look first. The state is a count per (recipient, kind, code), persisted in
the agency file; like the amount statistics it keeps a per-day ledger, so a re-loaded day
is taken out exactly before it is counted again, and memory is O(recipient x codes used).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl

from flux_pipelines.risk.recipient_history import day_in_ledger, for_recipients

if TYPE_CHECKING:
    import duckdb


CODES_TABLE = "_flux_recipient_codes"
CODES_LEDGER = "_flux_recipient_code_days"


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CODES_TABLE} (recipient VARCHAR NOT NULL, "
        "kind VARCHAR NOT NULL, code VARCHAR NOT NULL, n BIGINT NOT NULL, "
        "PRIMARY KEY (recipient, kind, code))"
    ).fetchall()
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CODES_LEDGER} (day DATE NOT NULL, recipient VARCHAR "
        "NOT NULL, kind VARCHAR NOT NULL, code VARCHAR NOT NULL, n BIGINT NOT NULL)"
    ).fetchall()


def day_codes(frame: pl.DataFrame, recipient: str, codes: dict[str, str]) -> pl.DataFrame:
    """(recipient, kind, code, n) of the day; ``codes`` maps kind -> column."""
    parts = [
        frame.select(
            pl.col(recipient).alias("recipient"),
            pl.lit(kind).alias("kind"),
            pl.col(column).cast(pl.String).str.strip_chars().alias("code"),
        )
        for kind, column in codes.items()
    ]
    return (
        pl.concat(parts)
        .filter(pl.col("recipient").is_not_null() & pl.col("code").is_not_null())
        .group_by("recipient", "kind", "code")
        .agg(pl.len().cast(pl.Int64).alias("n"))
    )


def take_out_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """Remove the day's earlier counts, if any (inside the caller's transaction)."""
    if not day_in_ledger(conn, CODES_LEDGER, day):
        return
    conn.execute(
        f"UPDATE {CODES_TABLE} c SET n = c.n - d.n FROM {CODES_LEDGER} d WHERE d.day = ? "
        "AND c.recipient = d.recipient AND c.kind = d.kind AND c.code = d.code",
        [day],
    ).fetchall()
    conn.execute(f"DELETE FROM {CODES_TABLE} WHERE n <= 0").fetchall()
    conn.execute(f"DELETE FROM {CODES_LEDGER} WHERE day = ?", [day]).fetchall()


def fold_in_day(conn: duckdb.DuckDBPyConnection, day: dt.date, counts: pl.DataFrame) -> None:
    """Add the day's counts and remember them in the ledger (caller's transaction)."""
    conn.register("_flux_codes", counts)
    try:
        conn.execute(
            f"INSERT INTO {CODES_TABLE} SELECT recipient, kind, code, n FROM _flux_codes "
            "ON CONFLICT (recipient, kind, code) DO UPDATE SET n = n + excluded.n"
        ).fetchall()
        conn.execute(
            f"INSERT INTO {CODES_LEDGER} SELECT ?, recipient, kind, code, n FROM _flux_codes",
            [day],
        ).fetchall()
    finally:
        conn.unregister("_flux_codes")


def seen_codes(conn: duckdb.DuckDBPyConnection, recipients: pl.Series) -> pl.DataFrame:
    """(recipient, kind, code, n) counted for these recipients over every folded day."""
    return for_recipients(
        conn,
        recipients,
        f"SELECT recipient, kind, code, n FROM {CODES_TABLE} JOIN _flux_wanted USING (recipient)",
        [],
    )


def codes_before(
    conn: duckdb.DuckDBPyConnection, day: dt.date, recipients: pl.Series
) -> pl.DataFrame:
    """The same, from the ledger of the days before ``day`` only (re-scoring an old day)."""
    return for_recipients(
        conn,
        recipients,
        f"SELECT recipient, kind, code, sum(n)::BIGINT AS n FROM {CODES_LEDGER} "
        "JOIN _flux_wanted USING (recipient) WHERE day < ? GROUP BY ALL",
        [day],
    )
