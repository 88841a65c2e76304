"""The demo generator: realistic rows, and planted defects that the validator finds exactly.

The validator is the independent judge here: every test compares what the generator says
it planted with what ``RowValidator`` (or, for uniqueness, a plain duplicate count) finds.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.contracts.validator import RowValidator
from flux_pipelines.demo import generator as generator_module
from flux_pipelines.demo.generator import (
    GeneratedDelivery,
    GenerationError,
    RowsRequest,
    UnsupportedPatternError,
    generate_landing,
    generate_many,
    generate_rows,
    parse_pattern,
    sample_pattern,
    write_delivery,
    write_large_csv,
)
from flux_pipelines.demo.realism import REALISM, Occasion
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import ROW

DEMO_DIR = Path(generator_module.__file__).parent
# Modules allowed to know particular datasets: the dataset plug-ins, the demo's story (data
# the generic steps apply), and the package __init__ that imports the plug-ins to register.
PLUG_INS = {"spending.py"}
DATASET_AWARE = {*PLUG_INS, "scenario.py", "__init__.py"}

TINY = """\
apiVersion: v3.0.2
kind: DataContract
id: tiny-v1
name: tiny
version: 1.0.0
status: active
domain: science
customProperties:
  - {property: effectiveFrom, value: "2020-01-01"}
  - {property: nullValues, value: ["", "NA", "n/a"]}
schema:
  - name: tiny
    properties:
      - name: sample_code
        logicalType: string
        required: true
        primaryKey: true
        logicalTypeOptions: {pattern: "^[A-Z]{2}-[0-9]{3}(-[a-z])?$"}
        customProperties:
          - {property: sourceNames, value: ["Sample Code"]}
      - name: wikidata_id
        logicalType: string
        logicalTypeOptions: {pattern: "^Q[1-9][0-9]*$"}
      - name: homepage
        logicalType: string
        logicalTypeOptions:
          pattern: "^https?://(www\\\\.)?(example|sample)\\\\.(org|net)/[a-z0-9_-]{2,10}$"
      - name: title
        logicalType: string
        required: true
        logicalTypeOptions: {minLength: 3, maxLength: 80}
      - name: status
        logicalType: string
        enum: [{value: open}, {value: closed}]
      - name: closed_on
        logicalType: date
        logicalTypeOptions: {format: "%d/%m/%Y"}
      - name: depth_min
        logicalType: number
        required: true
        logicalTypeOptions: {minimum: 0, maximum: 1000}
      - name: depth_max
        logicalType: number
        required: true
        logicalTypeOptions: {minimum: 0, maximum: 1000}
      - name: thickness
        logicalType: number
        logicalTypeOptions: {minimum: 0}
      - name: count
        logicalType: integer
        logicalTypeOptions: {exclusiveMinimum: 0, exclusiveMaximum: 50}
        customProperties:
          - {property: severity, value: {maximum: warning}}
      - name: verified
        logicalType: boolean
    quality:
      - {id: depth_order, type: custom, engine: flux, implementation: "depth_min <= depth_max"}
      - id: closed_has_date
        type: custom
        engine: flux
        implementation: "status <> 'closed' OR closed_on IS NOT NULL"
        severity: warning
      - id: date_needs_status
        type: custom
        engine: flux
        implementation: "closed_on IS NULL OR status IS NOT NULL"
      - id: thickness_is_span
        type: custom
        engine: flux
        implementation: "thickness = depth_max - depth_min"
      - id: homepage_only_when_open
        type: custom
        engine: flux
        implementation: "homepage IS NULL OR status = 'open'"
"""


def _write_contract(root: Path, text: str = TINY, dataset: str = "tiny") -> Path:
    path = root / "datasets" / dataset / "1.0.0.odcs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Contract:
    return load_contract(_write_contract(tmp_path))


def _registry_contracts() -> list[object]:
    """Every contract version in the registry; a broken registry fails its test, not collection."""
    try:
        registry = load_registry()
    except ConfigurationError as exc:
        return [pytest.param(exc, id="registry")]
    return [pytest.param(c, id=c.id) for versions in registry.contracts.values() for c in versions]


def _found(contract: Contract, delivery: GeneratedDelivery) -> pl.DataFrame:
    violations = RowValidator(contract).validate(delivery.contract_frame("f.csv")).violations
    return violations.select(pl.col(ROW).alias("row_number"), "rule_id").unique()


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("row_number", "rule_id").sort("row_number", "rule_id")


def _duplicated_rows(contract: Contract, frame: pl.DataFrame, column: str) -> set[int]:
    """Rows (1-based) whose key, read as the validator reads text, occurs more than once."""
    key = frame[column].str.strip_chars()
    key = pl.select(
        pl.when(key.is_in(list(contract.null_values))).then(None).otherwise(key)
    ).to_series()
    repeated = key.is_duplicated() & key.is_not_null()
    return {i + 1 for i in repeated.arg_true().to_list()}


def _assert_planted_is_found(contract: Contract, delivery: GeneratedDelivery) -> None:
    unique = {r.id: r for r in contract.rules if r.kind == "unique"}
    planted = delivery.planted
    row_planted = planted.filter(~pl.col("rule_id").is_in(list(unique)))
    assert _sorted(_found(contract, delivery)).equals(_sorted(row_planted))
    frame = delivery.contract_frame()
    for rule_id, rule in unique.items():
        assert rule.column is not None
        rows = set(planted.filter(pl.col("rule_id") == rule_id)["row_number"].to_list())
        assert _duplicated_rows(contract, frame, rule.column) == rows, rule_id


@pytest.mark.parametrize("contract", _registry_contracts())
def test_registry_contract_defects_are_exactly_what_the_validator_finds(
    contract: Contract | ConfigurationError,
) -> None:
    if isinstance(contract, ConfigurationError):
        raise contract
    delivery = generate_rows(contract, 2000, seed=11, defect_rate=0.05)
    assert delivery.frame.height == 2000
    assert all(dtype == pl.String for dtype in delivery.frame.dtypes)
    assert delivery.planted.height >= 50
    assert set(delivery.planted["rule_id"]) <= {r.id for r in contract.rules}
    _assert_planted_is_found(contract, delivery)


def test_tiny_contract_plants_every_rule_kind_and_every_row_rule(tiny: Contract) -> None:
    delivery = generate_rows(tiny, 2000, seed=3, defect_rate=0.05)
    _assert_planted_is_found(tiny, delivery)
    planted = set(delivery.planted["rule_id"])
    kinds = {tiny.rule(r).kind for r in planted}
    assert kinds == {r.kind for r in tiny.rules}
    assert {r.id for r in tiny.rules if r.kind == "expression"} <= planted
    # warnings are planted defects too, and such rows still load
    assert "count.maximum" in planted


def test_valid_rows_look_like_the_contract(tiny: Contract) -> None:
    delivery = generate_rows(tiny, 3000, seed=5, defect_rate=0.0)
    assert delivery.planted.height == 0
    assert "Sample Code" in delivery.frame.columns  # first source name as delivered header
    frame = delivery.contract_frame()
    assert RowValidator(tiny).validate(frame).violations.height == 0
    assert frame["sample_code"].n_unique() == frame.height
    homepage = frame["homepage"].drop_nulls()
    assert homepage.str.starts_with("https://").any() and homepage.str.starts_with("http://").any()
    assert frame["wikidata_id"].null_count() > 0  # optional columns are sometimes empty
    assert frame["title"].str.contains("\n").any()  # a quoted newline, as exports have
    assert frame["title"].str.contains(r"[^\x00-\x7f]").any()  # non-ASCII names
    depth = frame.select(pl.col("depth_min", "depth_max").cast(pl.Float64))
    assert (depth["depth_min"] <= depth["depth_max"]).all()
    assert (depth["depth_min"].round(0) != depth["depth_min"]).any()  # numbers have decimals


def test_same_seed_same_delivery_other_seed_other_delivery(tiny: Contract) -> None:
    first = generate_rows(tiny, 500, seed=42, defect_rate=0.05)
    again = generate_rows(tiny, 500, seed=42, defect_rate=0.05)
    other = generate_rows(tiny, 500, seed=43, defect_rate=0.05)
    assert first.frame.equals(again.frame)
    assert first.planted.equals(again.planted)
    assert not first.frame.equals(other.frame)


def test_deliveries_generated_together_are_the_ones_generated_alone(
    tiny: Contract, tmp_path: Path
) -> None:
    """generate_many shares validator calls across deliveries (and contracts) in lockstep;
    no delivery may notice: each is byte for byte what generate_rows makes alone."""
    twin = load_contract(_write_contract(tmp_path / "twin"))  # same rules, its own validator
    requests = [
        RowsRequest(tiny, 300, seed=1, defect_rate=0.05),
        RowsRequest(twin, 200, seed=1, defect_rate=0.1),
        RowsRequest(tiny, 120, seed=2, defect_rate=0.0),
        RowsRequest(tiny, 5, seed=3, defect_rate=0.5),
    ]
    together = generate_many(requests)
    assert [d.frame.height for d in together] == [300, 200, 120, 5]
    for request, delivery in zip(requests, together, strict=True):
        contract, n_rows, seed, rate = request
        alone = generate_rows(contract, n_rows, seed=seed, defect_rate=rate)
        assert delivery.frame.equals(alone.frame)
        assert delivery.planted.equals(alone.planted)
        _assert_planted_is_found(contract, delivery)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[0-9]{9}$",
        r"^Q[0-9]+$",
        r"^https?://(www\.)?[a-z0-9-]{3,12}\.(org|com)(/[A-Za-z0-9_]*)?$",
        r"^(CC|NC|SC)-\d{2,4}[a-z]?$",
        r"^[^,;]{1,5}\.[A-F]{3}$",
        r"^(?:ab|c)*x{0,2}$",
        r"^\w+\s\S{2}$",
    ],
)
def test_pattern_samples_match_their_pattern(pattern: str) -> None:
    values = sample_pattern(pattern, 400, seed=9).to_list()
    assert all(re.search(pattern, v) for v in values), [
        v for v in values if not re.search(pattern, v)
    ]
    assert len(set(values)) > 1


def test_unsupported_pattern_is_refused() -> None:
    with pytest.raises(UnsupportedPatternError):
        parse_pattern(r"^(?=x)[a-z]+$")
    with pytest.raises(UnsupportedPatternError):
        parse_pattern(r"^\p{L}+$")


def test_contradictory_contract_is_a_generation_error(tmp_path: Path) -> None:
    text = TINY.replace("depth_min <= depth_max", "depth_min > depth_min + 1")
    contract = load_contract(_write_contract(tmp_path, text))
    with pytest.raises(GenerationError, match="depth_order"):
        generate_rows(contract, 50, seed=1)


def test_bom_crlf_csv_round_trips_with_embedded_newlines(tiny: Contract, tmp_path: Path) -> None:
    delivery = generate_rows(tiny, 300, seed=8, defect_rate=0.05)
    path = write_delivery(delivery.frame, tmp_path / "tiny.csv", bom=True, crlf=True)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") >= delivery.frame.height
    back = pl.read_csv(path, infer_schema=False)
    assert back.columns == delivery.frame.columns
    assert back.equals(delivery.frame)
    assert back["title"].str.contains("\n").any()


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_other_formats_keep_values_as_text(tiny: Contract, tmp_path: Path, fmt: str) -> None:
    delivery = generate_rows(tiny, 200, seed=2)
    path = write_delivery(delivery.frame, tmp_path / f"tiny.{fmt}")
    schema = dict.fromkeys(delivery.frame.columns, pl.String)
    readers = {
        "jsonl": lambda: pl.read_ndjson(path, schema=schema),
        "json": lambda: pl.read_json(path, schema=schema),
        "parquet": lambda: pl.read_parquet(path),
    }
    assert readers[fmt]().equals(delivery.frame)


def test_large_csv_streams_chunks_with_continuous_rows_and_unique_keys(
    tiny: Contract, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    planted = write_large_csv(tiny, path, 5_000, seed=4, chunk_rows=1_200, defect_rate=0.05)
    frame = pl.read_csv(path, infer_schema=False).rename({"Sample Code": "sample_code"})
    assert frame.height == 5_000
    delivery = GeneratedDelivery(
        frame=frame, planted=planted, headers={c: c for c in tiny.column_names}
    )
    last = planted["row_number"].max()
    assert isinstance(last, int) and last > 4 * 1_200  # planted rows in the last chunk too
    _assert_planted_is_found(tiny, delivery)


def _two_labs(tmp_path: Path) -> Registry:
    """A registry of two agencies delivering the tiny dataset."""
    contracts = tmp_path / "contracts"
    _write_contract(contracts)
    (contracts / "agencies.yaml").write_text(
        textwrap.dedent(
            """\
            agencies:
              - {id: lab-one, name: Lab One, datasets: [tiny]}
              - {id: lab-two, name: Lab Two, datasets: [tiny]}
            """
        ),
        encoding="utf-8",
    )
    return load_registry(contracts)


def test_landing_layout_formats_and_determinism(tmp_path: Path) -> None:
    registry = _two_labs(tmp_path)
    first = generate_landing(tmp_path / "a", registry, days=3, seed=1, rows_per_delivery=60)
    again = generate_landing(tmp_path / "b", registry, days=3, seed=1, rows_per_delivery=60)
    assert len(first) == 2 * 3
    suffixes = sorted(p.suffix for p in first)
    assert suffixes.count(".jsonl") == 1 and suffixes.count(".parquet") == 1
    for path in first:
        agency, dataset, day, name = path.relative_to(tmp_path / "a").parts
        assert dataset == "tiny" and agency in {"lab-one", "lab-two"}
        assert name == f"tiny_{day}{path.suffix}"
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in again
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, again, strict=True))
    heights = {pl.read_csv(p, infer_schema=False).height for p in first if p.suffix == ".csv"}
    assert len(heights) > 1  # row counts vary per day


def test_a_dataset_plug_in_reshapes_that_datasets_landing_deliveries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """landing.py knows no dataset: a plug-in registered for one is looked up and applied
    to each of its deliveries, after the generic steps, with where the delivery belongs."""
    registry = _two_labs(tmp_path)
    plain = generate_landing(tmp_path / "plain", registry, days=2, seed=1, rows_per_delivery=40)
    seen: list[tuple[str, dt.date, int]] = []

    def shout(delivery: GeneratedDelivery, occasion: Occasion) -> GeneratedDelivery:
        seen.append((occasion.agency, occasion.day, occasion.seed))
        title = pl.col(delivery.headers["title"]).str.to_uppercase()
        return dataclasses.replace(delivery, frame=delivery.frame.with_columns(title))

    monkeypatch.setitem(REALISM, "tiny", shout)
    loud = generate_landing(tmp_path / "loud", registry, days=2, seed=1, rows_per_delivery=40)
    days = sorted({day for _, day, _ in seen})
    assert sorted(seen) == [(a, d, 1) for a in ("lab-one", "lab-two") for d in days]
    assert len(days) == 2
    csvs = [(a, b) for a, b in zip(plain, loud, strict=True) if a.suffix == ".csv"]
    assert csvs
    for before, after in csvs:
        was, now = (pl.read_csv(p, infer_schema=False) for p in (before, after))
        assert now.drop("title").equals(was.drop("title"))  # only the plug-in's change
        assert now["title"].equals(was["title"].str.to_uppercase())
        assert not now["title"].equals(was["title"])


def test_the_generic_generator_names_and_imports_no_dataset() -> None:
    """Dataset knowledge lives in plug-ins (and the demo's story), never in the generic
    steps: no shipped dataset id in their strings, no import of a plug-in module."""
    datasets = {d for agency in load_registry().agencies for d in agency.datasets}
    plug_ins = {f"flux_pipelines.demo.{name.removesuffix('.py')}" for name in PLUG_INS}
    generic = sorted(p for p in DEMO_DIR.glob("*.py") if p.name not in DATASET_AWARE)
    assert {p.name for p in generic} >= {"landing.py", "landing_plan.py", "rows.py", "values.py"}
    for path in generic:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = list(ast.walk(tree))
        strings = [n.value for n in nodes if isinstance(n, ast.Constant) and type(n.value) is str]
        named = {d for d in datasets for text in strings if re.search(rf"\b{d}\b", text)}
        assert not named, f"{path.name} names {sorted(named)}"
        imported = {n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)}
        assert not imported & plug_ins, f"{path.name} imports {sorted(imported & plug_ins)}"


def test_the_spending_plug_in_is_registered_whichever_demo_module_is_imported() -> None:
    """The package registers its plug-ins on import, so an entry point that imports only
    landing.py still gets spending's realism (fresh interpreter: nothing imported before)."""
    code = (
        "import sys\n"
        "from flux_pipelines.demo.landing import generate_landing\n"
        "from flux_pipelines.demo.realism import realism_for\n"
        "plug_in = realism_for('contract_transactions')\n"
        "assert plug_in is not None and plug_in.__module__ == 'flux_pipelines.demo.spending'\n"
        "assert realism_for('meteorites') is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
