"""PII and classification: the same query returns hashes to a plain agency analyst, names in
clear to the agency's personal-data group and to operators, masks restricted columns, and
leaves public columns and row counts untouched, in every copy Flux publishes.

Real contracts (ODCS files), a real agency DuckDB file loaded by the real loader, the real
``publish_partition``, the cross-agency select the cross-agency asset runs, and the catalogs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flux_pipelines.access.masking import (
    ENTITLED_FOLDER,
    PII_KEY_ENV,
    Reader,
    held_by,
    masked_select,
    pii_key,
    select_list,
    shared_select,
    source_file,
    treatment,
    treatments,
)
from flux_pipelines.access.policy import default_policy
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.page import contract_page
from flux_pipelines.contracts.registry import Agency, load_registry
from flux_pipelines.defs.published.catalogs import write_catalog
from flux_pipelines.errors import ConfigurationError, ContractError
from flux_pipelines.ingest.delivery import PartitionLoader, load_partition
from flux_pipelines.resources.warehouse import FluxWarehouse, publish_partition
from flux_pipelines_tests.conftest import contract_doc, write_contract

DAY1, DAY2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
DATASET = "payees"
PROPERTIES: list[dict[str, Any]] = [
    {"name": "payment_id", "logicalType": "integer", "primaryKey": True, "required": True},
    {"name": "amount", "logicalType": "number"},  # public (the default)
    {"name": "region", "logicalType": "string", "classification": "internal"},
    {"name": "salary", "logicalType": "number", "classification": "restricted"},
    {
        "name": "recipient_name",
        "logicalType": "string",
        "classification": "public",
        "customProperties": [{"property": "personalData", "value": True}],
    },
]
HEADER = "payment_id,amount,region,salary,recipient_name"
DELIVERIES = {
    ("agency-a", DAY1): ["1,10.5,north,50000,Jane Roe", "2,20,south,61000,Jane Roe",
                         "3,7.25,north,42000,Acme Corp", "4,3,east,39000,"],
    ("agency-a", DAY2): ["5,99,north,70000,Jane Roe", "6,1,west,30500,John Doe"],
    ("agency-b", DAY1): ["1,5,north,45000,Jane Roe", "2,8,north,52000,Globex LLC"],
}  # fmt: skip
SAME_QUERY = "SELECT recipient_name, count(*) AS n FROM {source} GROUP BY 1 ORDER BY 2 DESC, 1"


def _hmac(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(PII_KEY_ENV, raising=False)  # the per-home key
    return tmp_path / "home"


def _contract(tmp_path: Path) -> Contract:
    return load_contract(
        write_contract(tmp_path / "contracts", contract_doc(PROPERTIES, name=DATASET))
    )


def _load_and_publish(home: Path, contract: Contract) -> FluxWarehouse:
    """Each agency-day loaded into the agency's working file and published, as the asset does."""
    warehouse = FluxWarehouse(home=str(home))
    for (agency, day), rows in DELIVERIES.items():
        folder = home / "landing" / agency / DATASET / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "payees.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
        with warehouse.connect(agency) as conn:
            loader = PartitionLoader(
                conn,
                agency=agency,
                contract=contract,
                day=day,
                run_id=f"run-{day}",
                raw_root=warehouse.raw_root(agency, DATASET),
            )
            result = load_partition(loader, [folder / "payees.csv"])
            assert result.rows_curated == len(rows)
            publish_partition(
                conn, warehouse, agency, DATASET, DATASET, day, columns=contract.columns
            )
    return warehouse


def _query(sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as conn:
        return conn.execute(sql).fetchall()


def _files(pattern: Path) -> str:
    return f"read_parquet('{pattern}')"


def _cross_agency_copy(home: Path, contract: Contract) -> Path:
    """The cross-agency copy built by the select the cross-agency asset runs."""
    files = [source_file(home, agency, DATASET, day.isoformat()) for agency, day in DELIVERIES]
    target = home / "published" / "cross_agency" / f"{DATASET}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as conn:
        select = shared_select(conn, home, files, treatments(contract.columns, "cross_agency"))
        conn.execute(f"COPY ({select}) TO '{target}' (FORMAT parquet)")
    return target


def test_the_same_query_is_hashed_for_analysts_and_clear_for_entitled_readers(
    tmp_path: Path, home: Path
) -> None:
    contract = _contract(tmp_path)
    warehouse = _load_and_publish(home, contract)
    key = pii_key(home)
    published = home / "published" / "agency-a"
    analysts = published / DATASET / "*.parquet"
    entitled = published / ENTITLED_FOLDER / DATASET / "*.parquet"
    cross = _cross_agency_copy(home, contract)

    clear_counts = [("Jane Roe", 3), ("Acme Corp", 1), ("John Doe", 1), (None, 1)]
    # the agency's personal-data group: its own copy, names in clear
    assert _query(SAME_QUERY.format(source=_files(entitled))) == clear_counts
    # the operator: the working file, through the operator's select list (all clear)
    with duckdb.connect(str(warehouse.agency_db("agency-a")), read_only=True) as conn:
        names = [r[0] for r in conn.execute("DESCRIBE payees").fetchall()]
        operator = f"(SELECT {masked_select(contract.columns, 'operator', names)} FROM payees)"
        assert conn.execute(SAME_QUERY.format(source=operator)).fetchall() == clear_counts
    # a plain agency analyst: the same groups and counts, each name a keyed hash
    hashed = _query(SAME_QUERY.format(source=_files(analysts)))
    assert sorted(hashed, key=str) == sorted(
        [(_hmac(key, name) if name else None, n) for name, n in clear_counts], key=str
    )
    assert "Jane Roe" not in str(hashed)
    jane = _hmac(key, "Jane Roe")
    # consistent across days, agencies and the cross-agency copy: analysts can still join
    for day in (DAY1, DAY2):
        day_names = _query(
            f"SELECT DISTINCT recipient_name FROM {_files(published / DATASET / f'{day}.parquet')}"
        )
        assert (jane,) in day_names
    shared = _query(
        f"SELECT agency, recipient_name, count(*) FROM {_files(cross)} "
        "WHERE recipient_name IS NOT NULL GROUP BY ALL ORDER BY 1, 3 DESC, 2"
    )
    assert (("agency-a", jane, 3) in shared) and (("agency-b", jane, 1) in shared)
    assert {r[1] for r in shared} == {
        _hmac(key, n) for n in ("Jane Roe", "Acme Corp", "John Doe", "Globex LLC")
    }


def test_restricted_masked_public_untouched_counts_identical(tmp_path: Path, home: Path) -> None:
    contract = _contract(tmp_path)
    _load_and_publish(home, contract)
    published = home / "published" / "agency-a"
    copies = {
        "analysts": _files(published / DATASET / "*.parquet"),
        "entitled": _files(published / ENTITLED_FOLDER / DATASET / "*.parquet"),
        "cross": f"(FROM {_files(_cross_agency_copy(home, contract))} WHERE agency = 'agency-a')",
    }
    working = 6
    for name, source in copies.items():
        rows = _query(
            f"SELECT count(*), count(salary), sum(amount), string_agg(DISTINCT region, ',' "
            f"ORDER BY region), typeof(any_value(salary)) FROM {source}"
        )
        # restricted: NULL of its own type for every reader but the operator (the entitled
        # group is entitled to personal data, not to restricted columns)
        assert rows == [(working, 0, 140.75, "east,north,south,west", "DOUBLE")], name
    # the footer says what each copy holds, so a builder never hashes a hash
    day1 = published / DATASET / f"{DAY1}.parquet"
    clear1 = published / ENTITLED_FOLDER / DATASET / f"{DAY1}.parquet"
    with duckdb.connect() as conn:
        assert held_by(conn, [day1, clear1]) == {
            day1: {"recipient_name": "hash", "salary": "mask"},
            clear1: {"salary": "mask"},
        }


def test_entitled_copy_only_when_needed_and_removed_with_the_day(
    tmp_path: Path, home: Path
) -> None:
    contract = _contract(tmp_path)
    warehouse = _load_and_publish(home, contract)
    clear_day2 = home / "published" / "agency-a" / ENTITLED_FOLDER / DATASET / f"{DAY2}.parquet"
    assert clear_day2.is_file()
    with warehouse.connect("agency-a") as conn:
        conn.execute("DELETE FROM payees WHERE _partition_date = ?", [DAY2])
        assert (
            publish_partition(
                conn, warehouse, "agency-a", DATASET, DATASET, DAY2, columns=contract.columns
            )
            is None
        )
    assert not clear_day2.exists()
    assert not warehouse.published_file("agency-a", DATASET, DAY2).exists()
    # a dataset whose analysts' copy hides only restricted columns: no second copy
    restricted_only = contract.model_copy(
        update={
            "columns": tuple(
                c.model_copy(update={"personal_data": False}) for c in contract.columns
            )
        }
    )
    with warehouse.connect("agency-a") as conn:
        publish_partition(
            conn, warehouse, "agency-a", DATASET, DATASET, DAY1, columns=restricted_only.columns
        )
    assert not (
        home / "published" / "agency-a" / ENTITLED_FOLDER / DATASET / f"{DAY1}.parquet"
    ).exists()
    day1 = _files(warehouse.published_file("agency-a", DATASET, DAY1))
    assert _query(f"SELECT count(salary), count(DISTINCT recipient_name) FROM {day1}") == [(0, 2)]


def test_catalogs_masked_for_analysts_clear_for_the_personal_data_group(
    tmp_path: Path, home: Path
) -> None:
    contract = _contract(tmp_path)
    warehouse = _load_and_publish(home, contract)
    agency = Agency(id="agency-a", name="Agency A", datasets=(DATASET,))
    path, rows = write_catalog(warehouse, agency)
    entitled = path.parent / ENTITLED_FOLDER / path.name
    assert rows == {DATASET: 6}
    for catalog, expect_clear in ((path, False), (entitled, True)):
        with duckdb.connect(str(catalog), read_only=True) as conn:
            got = conn.execute(SAME_QUERY.format(source=DATASET)).fetchall()
        assert (("Jane Roe", 3) in got) is expect_clear, catalog
        assert sum(n for _, n in got) == 6


def test_policy_resolution_personal_wins_and_unknown_readers_fail_closed(tmp_path: Path) -> None:
    columns = {c.name: c for c in _contract(tmp_path).columns}
    policy = default_policy().masking
    expected: dict[Reader, tuple[str, ...]] = {
        # reader: amount, region, salary, recipient_name
        "operator": ("clear", "clear", "clear", "clear"),
        "agency_analyst": ("clear", "clear", "mask", "hash"),
        "own_agency_personal": ("clear", "clear", "mask", "clear"),
        "cross_agency": ("clear", "clear", "mask", "hash"),
    }
    for reader, wanted in expected.items():
        got = tuple(
            treatment(columns[n], reader, policy)
            for n in ("amount", "region", "salary", "recipient_name")
        )
        assert got == wanted, reader
    # a restricted personal column gets the stricter of the two
    both = columns["salary"].model_copy(update={"personal_data": True})
    assert treatment(both, "own_agency_personal", policy) == "mask"
    with pytest.raises(ConfigurationError, match="unknown reader 'viewer'"):
        treatment(columns["amount"], "viewer", policy)  # type: ignore[arg-type]


def test_hashing_needs_the_key_bound_and_a_real_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with duckdb.connect() as conn, pytest.raises(duckdb.Error, match="hashing key is not bound"):
        conn.execute(
            f"SELECT {select_list(['x'], {'x': 'hash'})} FROM (SELECT 'a' AS x)"
        ).fetchall()
    key = pii_key(home)
    path = home / "state" / "pii.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and pii_key(home) == key
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        pii_key(home)
    monkeypatch.setenv(PII_KEY_ENV, "short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        pii_key(home)
    monkeypatch.setenv(PII_KEY_ENV, "k" * 40)
    assert pii_key(home) == b"k" * 40


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"classification": "secret"},
            "column salary: classification 'secret' is not one of public, internal, restricted",
        ),
        (
            {"customProperties": [{"property": "personalData", "value": "yes"}]},
            "column salary: customProperty personalData must be true or false",
        ),
    ],
)
def test_a_bad_marking_is_refused_naming_file_and_column(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    properties = [{**p, **change} if p["name"] == "salary" else p for p in PROPERTIES]
    path = write_contract(tmp_path, contract_doc(properties, name=DATASET))
    with pytest.raises(ContractError, match=message) as caught:
        load_contract(path)
    assert str(path) in str(caught.value)


def test_contract_page_shows_classification_and_personal_data(tmp_path: Path) -> None:
    page = contract_page(_contract(tmp_path))
    assert "| `salary` | number |  |  | restricted |  |" in page
    assert "| `recipient_name` | string |  |  | public | yes |" in page


# Person-name (and person-identifying) columns of the shipped contracts.
PERSONAL = {
    "contract_transactions": {"recipient_name", "recipient_name_ts_vector"},
    "award_obligations": {"recipient"},
    "constituents": {
        "preferreddisplayname", "forwarddisplayname", "lastname", "displaydate",
        "beginyear", "endyear", "ulanid", "wikidataid",
    },
    "objects_constituents": {"zipcode"},
    "meteorites": {"observed_by"},
    "artworks": {"all_artists"},
    "audio_items": {"contributors"},
}  # fmt: skip


def test_shipped_person_columns_are_marked_personal() -> None:
    registry = load_registry()
    for dataset, versions in registry.contracts.items():
        marked = {c.name for v in versions for c in v.columns if c.personal_data}
        assert marked == PERSONAL.get(dataset, set()), dataset
    # organisation-only and scientific datasets stay public throughout
    for dataset in ("account_obligations", "tas_list", "ccn_cores", "ccn_depthseries"):
        assert {c.classification for c in registry.latest(dataset).columns} == {"public"}


def test_spending_outputs_hash_recipient_names_and_links_still_match(home: Path) -> None:
    """Through Dagster: Treasury's transactions (with risk scores) and award file; the
    cross-agency copy, the recipient links and the risk scores carry names hashed, and the
    links still match names that differ only in case (matching ran on names in clear)."""
    import dagster as dg
    import polars as pl

    from flux_pipelines.defs.published.cross_agency import build_cross_agency_asset
    from flux_pipelines.defs.spending.reconciliation import recipient_links_asset
    from flux_pipelines.defs.spending.risk import SCORES
    from flux_pipelines.names import scores_key
    from flux_pipelines_tests.conftest import assets_holding, deliver_transactions, materialize

    day = "2026-03-02"
    registry = load_registry()
    deliver_transactions(home, "treasury", day, rows=120, seed=7)
    assert materialize(home, [("treasury", "contract_transactions")], day).success
    warehouse = FluxWarehouse(home=str(home))
    with duckdb.connect(str(warehouse.agency_db("treasury")), read_only=True) as conn:
        pairs = conn.execute(
            "SELECT DISTINCT recipient_name, awarding_toptier_agency_name FROM "
            "contract_transactions WHERE recipient_name IS NOT NULL ORDER BY 1 LIMIT 5"
        ).fetchall()
    names = [n for n, _ in pairs]
    awards = home / "landing" / "treasury" / "award_obligations" / day
    awards.mkdir(parents=True)
    pl.DataFrame(
        {
            "agency": [a for _, a in pairs],  # the links block by awarding agency
            "subagency": [None] * len(names),
            "recipient": [n.lower() for n in names],  # normalised matches only in clear
            "obligation": [1000.0] * len(names),
        }
    ).write_csv(awards / "award_obligations.csv")
    assert materialize(home, [("treasury", "award_obligations")], day).success
    resources = {"warehouse": warehouse}
    assets = [build_cross_agency_asset("contract_transactions", registry)]
    assert dg.materialize(assets, resources=resources).success
    assert dg.materialize(recipient_links_asset(registry), resources=resources).success

    key = pii_key(home)
    hashed = {_hmac(key, n) for n in names}
    cross = home / "published" / "cross_agency"
    shared = _query(
        f"SELECT DISTINCT recipient_name FROM {_files(cross / 'contract_transactions.parquet')}"
    )
    assert hashed <= {r[0] for r in shared} and not set(names) & {r[0] for r in shared}
    matched = pl.read_parquet(cross / "recipient_links_matched.parquet")
    assert set(matched["left_name"]) == hashed  # every name linked, shown hashed
    assert set(matched["method"]) == {"normalised"}
    assert set(matched["right_name"]) == {_hmac(key, n.lower()) for n in names}
    score_key = scores_key(registry.agency("treasury"))
    assert dg.materialize(
        assets_holding([score_key]), selection=[score_key], partition_key=day,
        resources=resources,
    ).success  # fmt: skip
    scores = home / "published" / "treasury" / SCORES / f"{day}.parquet"
    clear_scores = home / "published" / "treasury" / ENTITLED_FOLDER / SCORES / f"{day}.parquet"
    assert hashed <= {r[0] for r in _query(f"SELECT recipient_name FROM {_files(scores)}")}
    assert set(names) <= {
        r[0] for r in _query(f"SELECT recipient_name FROM {_files(clear_scores)}")
    }
