"""Contract evolution: what a new version changes for agencies and analysts, and how the
curated table follows a column whose type changed.

A dataset keeps one curated table across versions, typed by the newest version. When a
version changes a column's type, the table's column is converted in the load's own
transaction (``migrate_types``) after every stored value has been proven convertible
without loss: a value that would not convert (``'$149,800'`` to a number) or would change
(``2.5`` to an integer, a timestamp's time of day to a date) refuses the migration with a
``ContractMigrationError`` naming the agency file, dataset, column, versions and examples,
and nothing is changed. Each conversion applied is recorded in ``_flux_migrations``.

``diff`` compares two versions the way ``flux contracts diff`` shows them: each change,
and whether it can break an agency's deliveries (a file valid before may now be rejected
or quarantined) or an analyst's queries (a column gone, renamed, retyped, or holding
values it did not hold before).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flux_pipelines.contracts.ddl import create_table_sql
from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import ColumnSpec, Contract, Rule
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import MIGRATIONS_TABLE, PARTITION
from flux_pipelines.sql import quote

if TYPE_CHECKING:
    import duckdb

EXAMPLES = 3  # values quoted in a refusal

MIGRATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "VARCHAR NOT NULL"),
    ("column_name", "VARCHAR NOT NULL"),
    ("from_type", "VARCHAR NOT NULL"),
    ("to_type", "VARCHAR NOT NULL"),
    ("contract_version", "VARCHAR NOT NULL"),
    ("rows_converted", "BIGINT NOT NULL"),
    ("run_id", "VARCHAR NOT NULL"),
    ("applied_at", "TIMESTAMP NOT NULL"),
)


class ContractMigrationError(ConfigurationError):
    """A contract version's change cannot be applied to the data already stored."""


@dataclass(frozen=True)
class TypeMigration:
    """One column converted in place: recorded, logged and followed by a republish."""

    dataset: str
    column: str
    from_type: str
    to_type: str
    rows: int

    def describe(self) -> str:
        return (
            f"{self.dataset}.{self.column}: converted {self.rows:,} stored row(s) from "
            f"{self.from_type} to {self.to_type}"
        )


def migrate_types(
    conn: duckdb.DuckDBPyConnection,
    *,
    agency: str,
    table: str,
    wanted: dict[str, str],
    have: dict[str, str],
    contract: Contract,
    run_id: str,
) -> list[TypeMigration]:
    """Convert each column of ``table`` whose stored DuckDB type differs from ``wanted``
    (name -> type), all or nothing: the caller's transaction undoes a partial set."""
    changed = {
        name: (have[name], sql_type)
        for name, sql_type in wanted.items()
        if name in have and have[name] != sql_type
    }
    migrations = []
    for name, (old, new) in changed.items():
        rows = _refuse_lossy(conn, agency, table, name, old, new, contract)
        conn.execute(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(name)} SET DATA TYPE {new}")
        migrations.append(TypeMigration(contract.dataset, name, old, new, rows))
    if migrations:
        _record(conn, migrations, contract.version, run_id)
    return migrations


def _refuse_lossy(
    conn: duckdb.DuckDBPyConnection,
    agency: str,
    table: str,
    column: str,
    old: str,
    new: str,
    contract: Contract,
) -> int:
    """The stored non-null values, once none would fail or change in the conversion."""
    c = quote(column)
    lost = f"TRY_CAST({c} AS {new}) IS NULL"
    if old != "VARCHAR":  # text is re-read as the new type; a typed value must round-trip
        lost += f" OR CAST(TRY_CAST({c} AS {new}) AS {old}) IS DISTINCT FROM {c}"
    ((stored, bad, days, first, last, examples),) = conn.execute(
        f"""SELECT count({c}), count(*) FILTER ({lost}),
                   count(DISTINCT {PARTITION}) FILTER ({lost}),
                   min({PARTITION}) FILTER ({lost}), max({PARTITION}) FILTER ({lost}),
                   list(DISTINCT CAST({c} AS VARCHAR)) FILTER ({lost})[1:{EXAMPLES}]
              FROM {quote(table)} WHERE {c} IS NOT NULL"""
    ).fetchall()
    if bad:
        raise ContractMigrationError(
            f"agency {agency}, dataset {contract.dataset}: contract {contract.version} "
            f"stores column {column!r} as {new} (it is {old} in the table), but {bad:,} of "
            f"{stored:,} stored value(s) on {days} day(s) ({first}..{last}) would not convert "
            f"without loss, e.g. {', '.join(repr(v) for v in examples)}. Nothing was "
            f"changed and the day was not loaded. Keep the column's type in "
            f"{contract.version}, or give the new meaning a new column name (the old one keeps "
            "its history), then load again."
        )
    return int(stored)


def _record(
    conn: duckdb.DuckDBPyConnection,
    migrations: list[TypeMigration],
    version: str,
    run_id: str,
) -> None:
    conn.execute(create_table_sql(MIGRATIONS_TABLE, list(MIGRATION_COLUMNS)))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.executemany(
        f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (m.dataset, m.column, m.from_type, m.to_type, version, m.rows, run_id, now)
            for m in migrations
        ],
    )


# --------------------------------------------------------------------------- diff

Audience = Literal["agencies", "analysts"]


@dataclass(frozen=True)
class Change:
    """One difference between two versions, and whom it can break."""

    subject: str  # a column or rule id
    what: str
    breaks: tuple[Audience, ...] = ()


def diff(old: Contract, new: Contract) -> list[Change]:
    """Every change from ``old`` to ``new`` (same dataset), columns first, then rules."""
    return [*_column_changes(old, new), *_rule_changes(old, new)]


def is_breaking(changes: list[Change], audience: Audience) -> bool:
    return any(audience in c.breaks for c in changes)


def _column_changes(old: Contract, new: Contract) -> list[Change]:
    before = {c.name: c for c in old.columns}
    changes: list[Change] = []
    matched: set[str] = set()
    for column in new.columns:
        previous = before.get(column.name)
        if previous is None and column.renamed_from in before:
            previous = before[column.renamed_from]
            changes.append(
                Change(
                    column.name,
                    f"renamed from {previous.name!r} (deliveries may keep the old header; "
                    "stored rows move to the new name)",
                    ("analysts",),
                )
            )
        if previous is None:
            changes.append(_added(column))
            continue
        matched.add(previous.name)
        changes += _column_edits(previous, column)
    for name in before.keys() - matched:
        changes.append(
            Change(
                name,
                "removed (the table keeps it; days loaded under the new version leave it empty)",
                ("analysts",),
            )
        )
    return changes


def _added(column: ColumnSpec) -> Change:
    if column.required:
        return Change(
            column.name,
            f"added, required ({column.logical_type}): files without it are rejected",
            ("agencies",),
        )
    return Change(column.name, f"added, optional ({column.logical_type})")


def _column_edits(old: ColumnSpec, new: ColumnSpec) -> list[Change]:
    changes: list[Change] = []
    if old.logical_type != new.logical_type:
        # a change every stored value survives (the migration proves others value by value)
        widening = new.logical_type in type_row(old.logical_type).widens_to
        changes.append(
            Change(
                new.name,
                f"type {old.logical_type} -> {new.logical_type} (the table's column is "
                "converted at the first load; "
                + ("every stored value converts)" if widening else "refused if a stored value "
                   "would not convert)"),
                ("analysts",) if widening else ("agencies", "analysts"),
            )
        )  # fmt: skip
    if old.required != new.required:
        changes.append(
            Change(new.name, "now required", ("agencies",))
            if new.required
            else Change(new.name, "now optional: new rows may leave it empty", ("analysts",))
        )
    return changes


def _rule_changes(old: Contract, new: Contract) -> list[Change]:
    renamed = {c.renamed_from: c.name for c in new.columns if c.renamed_from}
    before = {_renamed_id(r, renamed): r for r in old.rules}
    after = {r.id: r for r in new.rules}
    changes: list[Change] = []
    renamed_to = set(renamed.values())
    added = {c.name for c in new.columns} - {c.name for c in old.columns} - renamed_to
    for rule_id in sorted(after.keys() - before.keys()):  # ids name column and kind
        rule = after[rule_id]
        # a rule of a column new in this version judges values no earlier file sent
        breaking = rule.severity == "fatal" and rule.column not in added
        breaks: tuple[Audience, ...] = ("agencies",) if breaking else ()
        changes.append(Change(rule_id, f"new {rule.severity} rule: {rule.expected}", breaks))
    for rule_id in sorted(before.keys() - after.keys()):
        rule = before[rule_id]
        breaks = ("analysts",) if rule.severity == "fatal" else ()
        changes.append(
            Change(rule_id, f"rule removed (was {rule.severity}: {rule.expected})", breaks)
        )
    for rule_id in sorted(before.keys() & after.keys()):
        direction = _direction(old, new, after[rule_id])
        changes += _rule_edits(before[rule_id], after[rule_id], direction)
    return changes


def _renamed_id(rule: Rule, renamed: dict[str, str]) -> str:
    """A rule's id once its column took the new version's name (ids start with the column)."""
    if rule.column in renamed and rule.id.startswith(f"{rule.column}."):
        return renamed[rule.column] + rule.id[len(rule.column) :]
    return rule.id


Direction = Literal["tighter", "looser", "changed"]


def _direction(old: Contract, new: Contract, rule: Rule) -> Direction:
    """Whether a rule that kept its id now accepts fewer values, more, or other ones."""
    if rule.column is None or rule.column not in new.column_names:
        return "changed"
    after = new.column(rule.column)
    names = {c.name: c for c in old.columns}
    before = names.get(rule.column) or names.get(after.renamed_from or "")
    if before is None:
        return "changed"
    bounds = {
        "minimum": (before.minimum, after.minimum, 1),
        "maximum": (before.maximum, after.maximum, -1),
        "min_length": (before.min_length, after.min_length, 1),
        "max_length": (before.max_length, after.max_length, -1),
    }
    if rule.kind in bounds:
        was, now, sign = bounds[rule.kind]
        if was is None or now is None or was == now:
            return "changed"
        return "tighter" if (now - was) * sign > 0 else "looser"
    if rule.kind == "allowed_values":
        was_set = {v.value for v in before.allowed_values}
        now_set = {v.value for v in after.allowed_values}
        if now_set < was_set:
            return "tighter"
        if now_set > was_set:
            return "looser"
    return "changed"


def _rule_edits(old: Rule, new: Rule, direction: Direction) -> list[Change]:
    changes: list[Change] = []
    if old.severity != new.severity:
        tighter = new.severity == "fatal"
        changes.append(
            Change(
                new.id,
                f"severity {old.severity} -> {new.severity}"
                + (": rows it flags are now quarantined" if tighter else ": rows it flags "
                   "now load, with a warning"),
                ("agencies",) if tighter else ("analysts",),
            )
        )  # fmt: skip
    if (old.expected, old.expression) != (new.expected, new.expression):
        fatal = new.severity == "fatal"
        options: dict[str, tuple[str, tuple[Audience, ...]]] = {
            "tighter": ("tighter: rows that passed may now be quarantined", ("agencies",)),
            "looser": ("looser: curated rows may now hold values it kept out", ("analysts",)),
            "changed": ("changed: some rows that passed may fail and others pass",
                        ("agencies", "analysts")),
        }  # fmt: skip
        words, breaks = options[direction]
        changes.append(
            Change(
                new.id,
                f"{words} ({old.expected!r} -> {new.expected!r})",
                breaks if fatal else (),
            )
        )
    return changes
