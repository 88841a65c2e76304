"""The contracts shipped under contracts/datasets: they load, fit the real files and fail loudly.

- every ``contracts/datasets/<dataset>/<version>.odcs.yaml`` loads with ``load_contract``;
- every contract's columns cover the (normalised) header of the real file it was written
  from, so nothing lands in ``_unmapped`` (real data under ../shared/data; skipped when absent);
- rule ids are unique and stable, and the ids agencies see in reports exist;
- a broken contract is a ``ContractError`` naming the file and the problem.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import ColumnSpec, Contract
from flux_pipelines.errors import ContractError
from flux_pipelines.ingest.readers import inspect_file
from flux_pipelines.slugs import normalise_header

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = PROJECT_ROOT / "contracts" / "datasets"
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CONTRACT_FILES = sorted(DATASETS_DIR.glob("*/*.odcs.yaml"))

# The real file each dataset's contract was written from (relative to REAL_DATA).
REAL_SAMPLES: dict[str, str] = {
    "meteorites": "nasa/Meteorite_Landings.csv",
    "constituents": "nga/constituents.csv",
    "media_items": "nga/media_items.csv",
    "contract_transactions": "usaspending/Construction_PSCs_CY17Q3.csv",
    "ccn_cores": "ccn/studies/Abbott_2019/abbott_et_al_2019_cores.csv",
    "ccn_depthseries": "ccn/studies/Abbott_2019/abbott_et_al_2019_depthseries.csv",
    "objects_constituents": "nga/objects_constituents.csv",
    "account_obligations": "usaspending/account_obligations_link_update_FY18.csv",
    "award_obligations": "usaspending/awards_contracts_FY18_v2.csv",
    "tas_list": "usaspending/tas_list.csv",
}

# Datasets whose real data is no single delivered file with a header: their real data is
# loaded where its shape is built (the records nest, or the agency's export is made there).
COVERED_ELSEWHERE = {
    "artworks": "test_eligibility.py loads Tate's own one-object .json files",
    "audio_items": "test_eligibility.py exports the citizen-dj front matter as JSON Lines",
    "digital_objects": "test_exports.py describes the real content files in a delivery",
}


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _contract(dataset: str, version: str = "1.0.0") -> Contract:
    return load_contract(DATASETS_DIR / dataset / f"{version}.odcs.yaml")


# --- every shipped contract loads -----------------------------------------------------------


def test_contracts_are_shipped() -> None:
    datasets = {p.parent.name for p in CONTRACT_FILES}
    assert {"constituents", "media_items", "contract_transactions"} <= datasets


@pytest.mark.parametrize("path", CONTRACT_FILES, ids=_id)
def test_contract_loads(path: Path) -> None:
    contract = load_contract(path)
    assert contract.dataset == path.parent.name, "name must equal the dataset folder"
    assert contract.version == path.name.removesuffix(".odcs.yaml"), "version must match file"
    assert contract.columns, "a contract needs columns"


@pytest.mark.parametrize(
    ("dataset", "contract_id", "domain", "key"),
    [
        ("constituents", "constituents-v1", "collections", "constituentid"),
        ("media_items", "media-items-v1", "collections", "mediaid"),
        ("contract_transactions", "contract-transactions-v1", "spending", "transaction_id"),
    ],
)
def test_new_contracts_identity(dataset: str, contract_id: str, domain: str, key: str) -> None:
    contract = _contract(dataset)
    assert contract.id == contract_id
    assert contract.version == "1.0.0"
    assert contract.domain == domain
    assert contract.effective_from == dt.date(2000, 1, 1)
    assert contract.identifier == [key]
    assert contract.rule(f"{key}.unique").severity == "fatal"
    assert contract.rule(f"{key}.required").severity == "fatal"


# --- columns cover the real files' headers --------------------------------------------------


def _accepted_headers(contract: Contract) -> set[str]:
    names = set(contract.column_names)
    for column in contract.columns:
        names.update(normalise_header(s) for s in _spellings(column))
    return names


def _spellings(column: ColumnSpec) -> list[str]:
    """Header spellings a delivery may use: sourceNames and the pre-rename name."""
    return [*column.source_names, *([column.renamed_from] if column.renamed_from else [])]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "path", [p for p in CONTRACT_FILES if p.parent.name not in COVERED_ELSEWHERE], ids=_id
)
def test_contract_covers_real_header(path: Path) -> None:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not available at {REAL_DATA} (only on a development checkout)")
    dataset = path.parent.name
    assert dataset in REAL_SAMPLES, f"map a real sample of {dataset!r} in REAL_SAMPLES"
    sample = REAL_DATA / REAL_SAMPLES[dataset]
    if not sample.is_file():
        pytest.skip(f"real sample file {sample} is absent")
    contract = load_contract(path)
    # Flux's own reader: it knows Treasury's CR-only line ends
    normalised = [normalise_header(h) for h in inspect_file(sample).headers]
    assert len(set(normalised)) == len(normalised), f"{sample.name}: headers collide"
    unmapped = sorted(set(normalised) - _accepted_headers(contract))
    assert not unmapped, f"{_id(path)} does not map {unmapped} of {sample.name}"
    # a required column the real file lacks would reject every delivery of it
    missing_required = sorted(
        c.name
        for c in contract.columns
        if c.required
        and normalise_header(c.name) not in normalised
        and not {normalise_header(s) for s in _spellings(c)} & set(normalised)
    )
    assert not missing_required, f"{sample.name} lacks required columns {missing_required}"


@pytest.mark.realdata
def test_contract_transactions_has_every_column() -> None:
    sample = REAL_DATA / REAL_SAMPLES["contract_transactions"]
    if not sample.is_file():
        pytest.skip(f"real sample file {sample} is absent")
    header = [
        normalise_header(h) for h in pl.read_csv(sample, infer_schema=False, n_rows=0).columns
    ]
    assert len(header) == 64
    assert _contract("contract_transactions").column_names == header


# --- rule ids: unique, stable, and the ones reports rely on --------------------------------


@pytest.mark.parametrize("path", CONTRACT_FILES, ids=_id)
def test_rule_ids_unique_and_stable(path: Path) -> None:
    first = [r.id for r in load_contract(path).rules]
    second = [r.id for r in load_contract(path).rules]
    assert len(set(first)) == len(first), "rule ids must be unique within a contract"
    assert first == second, "rule ids (and their order) must not change between loads"


KNOWN_RULES: dict[str, dict[str, str]] = {
    "constituents": {
        "constituentid.unique": "fatal",
        "constituentid.type": "fatal",
        "preferreddisplayname.required": "fatal",
        "constituenttype.allowed_values": "fatal",
        "ulanid.pattern": "warning",
        "ulanid.unique": "warning",
        "wikidataid.pattern": "warning",
        "beginyear.minimum": "warning",
        "endyear.maximum": "warning",
        "visualbrowsernationality.allowed_values": "warning",
        "endyear_not_before_beginyear": "warning",
    },
    "media_items": {
        "mediaid.unique": "fatal",
        "mediatype.allowed_values": "fatal",
        "language.required": "fatal",
        "playurl.pattern": "warning",
        "duration.minimum": "warning",
        "duration.maximum": "warning",
        "presentationdate.type": "fatal",
        "releasedate.type": "fatal",
        "lastmodified.type": "fatal",
    },
    "contract_transactions": {
        "transaction_id.unique": "fatal",
        "action_date.type": "fatal",
        "federal_action_obligation.type": "fatal",
        "awarding_toptier_agency_name.required": "fatal",
        "recipient_unique_id.pattern": "warning",
        "parent_recipient_unique_id.pattern": "warning",
        "recipient_unique_id_not_placeholder": "warning",
        "parent_recipient_unique_id_not_placeholder": "warning",
        "pop_zip5.pattern": "warning",
        "recipient_location_zip5.pattern": "warning",
        "federal_action_obligation_not_negative": "warning",
        "federal_action_obligation_not_zero": "warning",
        "fiscal_year_matches_action_date": "warning",
    },
}


@pytest.mark.parametrize("dataset", sorted(KNOWN_RULES))
def test_known_rule_ids_exist(dataset: str) -> None:
    contract = _contract(dataset)
    ids = {r.id: r.severity for r in contract.rules}
    for rule_id, severity in KNOWN_RULES[dataset].items():
        assert rule_id in ids, f"{dataset}: rule {rule_id} is gone (reports and history use it)"
        assert ids[rule_id] == severity, f"{dataset}: {rule_id} should be {severity}"


def test_contract_transactions_conventions() -> None:
    contract = _contract("contract_transactions")
    award_id = contract.column("award_id")
    # awards repeat once per modification
    assert not award_id.unique and not award_id.primary_key
    assert "award_id.unique" not in {r.id for r in contract.rules}
    # NGA's abbreviation is literally "NA", which nullValues turn into null: must still load
    assert "NA" in contract.null_values
    assert not contract.column("awarding_toptier_agency_abbreviation").required
    assert contract.column("recipient_unique_id").pattern == "^[0-9]{9}$"
    assert contract.column("action_date").logical_type == "date"
    assert contract.column("federal_action_obligation").logical_type == "number"
    placeholder = contract.rule("recipient_unique_id_not_placeholder")
    assert placeholder.kind == "expression" and "123456787" in (placeholder.expression or "")


# --- broken contracts fail loudly, naming the file and the problem ------------------------

MINIMAL: dict[str, Any] = {
    "apiVersion": "v3.0.2",
    "kind": "DataContract",
    "id": "broken-v1",
    "name": "broken",
    "version": "1.0.0",
    "status": "active",
    "domain": "collections",
    "customProperties": [{"property": "effectiveFrom", "value": "2000-01-01"}],
    "schema": [
        {
            "name": "broken",
            "physicalType": "table",
            "properties": [
                {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
                {"name": "code", "logicalType": "string"},
            ],
        }
    ],
}


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "broken" / "1.0.0.odcs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _broken(mutate: str) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    props = doc["schema"][0]["properties"]
    if mutate == "unknown_logical_type":
        props[1]["logicalType"] = "varchar"
    elif mutate == "bad_regex":
        props[1]["logicalTypeOptions"] = {"pattern": "^[A-Z"}
    elif mutate == "rule_unknown_column":
        doc["schema"][0]["quality"] = [
            {
                "id": "code_known",
                "type": "custom",
                "engine": "flux",
                "implementation": "no_such_column > 0",
                "severity": "warning",
            }
        ]
    elif mutate == "duplicate_column":
        props.append({"name": "code", "logicalType": "string"})
    return doc


def test_minimal_contract_loads(tmp_path: Path) -> None:
    assert load_contract(_write(tmp_path, copy.deepcopy(MINIMAL))).identifier == ["id"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        ("unknown_logical_type", "logicalType 'varchar'"),
        ("bad_regex", "pattern '^[A-Z' is invalid"),
        ("rule_unknown_column", "unknown columns ['no_such_column']"),
        ("duplicate_column", "duplicate column names: ['code']"),
    ],
)
def test_broken_contract_raises(tmp_path: Path, mutate: str, problem: str) -> None:
    path = _write(tmp_path, _broken(mutate))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert str(path) in message, "the error must name the file to fix"
    assert problem in message, f"the error must say what is wrong: {message}"
    assert info.value.path == str(path)
