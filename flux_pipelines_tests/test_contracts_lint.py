"""Every shipped contract is valid ODCS: ``datacontract lint`` passes on it, and on what the
CCN importer writes; enum descriptions keep their full text.

The lint is the reference tool's (datacontract-cli, a dev dependency), run in-process through
its Python API: it validates against the ODCS JSON Schema bundled in the package, chosen by
the contract's ``apiVersion`` (v3.0.2), so it needs no network (sockets are refused while it
runs, to keep it so). Any check that does not pass fails the test, warnings included: an
"unknown fields are ignored" warning is how an enum description cut at its comma by YAML flow
syntax shows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from datacontract.data_contract import DataContract

from flux_pipelines.contracts.importers import ccn
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.errors import ContractError
from flux_pipelines_tests.test_ccn_importer import write_dictionary

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASETS = PROJECT_ROOT / "contracts" / "datasets"
CONTRACTS = sorted(DATASETS.glob("*/*.odcs.yaml"))
REAL_CCN = PROJECT_ROOT.parent / "shared" / "data" / "ccn"
ODCS_VERSION = "3.0.2"  # the apiVersion Flux contracts declare; lint picks its schema by it
LINTED = f"Data contract is valid against ODCS v{ODCS_VERSION}"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lint must work offline (only package registries are reachable in CI)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(f"network access during the contract lint: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def lint_problems(path: Path) -> list[str]:
    """Each ``datacontract lint`` check on ``path`` that did not pass, as
    ``<file>: <result>: <path in the document>: <message>`` (the reason starts with the path)."""
    run = DataContract(
        data_contract_file=str(path), all_errors=True, inline_references=False
    ).lint()
    problems = [
        f"{path}: {getattr(check.result, 'value', check.result)}: {check.reason or check.name}"
        for check in run.checks
        if check.result != "passed"
    ]
    if not problems and not any(check.name == LINTED for check in run.checks):
        names = [check.name for check in run.checks]
        problems.append(f"{path}: not linted against ODCS v{ODCS_VERSION} (checks: {names})")
    return problems


def assert_lints_clean(paths: list[Path]) -> None:
    assert paths, "nothing to lint"
    problems = [problem for path in paths for problem in lint_problems(path)]
    assert not problems, "datacontract lint found:\n" + "\n".join(problems)


# --- the shipped contracts ---------------------------------------------------------------------


def test_every_dataset_folder_has_a_contract() -> None:
    folders = sorted(p.name for p in DATASETS.iterdir() if p.is_dir())
    assert folders == sorted({p.parent.name for p in CONTRACTS})
    assert len(CONTRACTS) >= 11


@pytest.mark.parametrize(
    "path", CONTRACTS, ids=[p.relative_to(DATASETS).as_posix() for p in CONTRACTS]
)
def test_shipped_contract_lints_clean(path: Path) -> None:
    assert_lints_clean([path])


# Each fault the lint found once, put back into a copy: the lint must catch it again.
# (contract, shipped text, broken text, what the lint says)
REGRESSIONS: dict[str, tuple[str, str, str, str]] = {
    "logicalType timestamp": (
        "tas_list/1.0.0.odcs.yaml",
        "{name: dt_end, logicalType: date, physicalType: timestamp,",
        "{name: dt_end, logicalType: timestamp,",
        "properties.dt_end.logicalType: 'timestamp' is not one of",
    ),
    "exclusiveMinimum as a number": (
        "media_items/1.0.0.odcs.yaml",
        "{minimum: 0, exclusiveMinimum: true, maximum: 43200}",
        "{exclusiveMinimum: 0, maximum: 43200}",
        "properties.duration.logicalTypeOptions.exclusiveMinimum: 0 is not of type 'boolean'",
    ),
    "library check without rule": (
        "ccn_depthseries/1.0.0.odcs.yaml",
        "      type: library\n      rule: nullValues\n",
        "      type: library\n      metric: nullValues\n",
        "properties.fraction_organic_matter.quality[0]: 'rule' is a required property",
    ),
    "dimension existence": (
        "account_obligations/1.0.0.odcs.yaml",
        "        severity: fatal\n",
        "        severity: fatal\n        dimension: existence\n",
        "quality[0].dimension: 'existence' is not one of",
    ),
    "custom rule without implementation": (
        "award_obligations/1.0.0.odcs.yaml",
        "        implementation:\n          rule: sumReconciliation\n",
        "        extra:\n          rule: sumReconciliation\n",
        "quality[0]: 'implementation' is a required property",
    ),
    "enum description cut at its comma": (
        "contract_transactions/1.0.0.odcs.yaml",
        '{value: SBA, description: "Small business set-aside, total"}',
        "{value: SBA, description: Small business set-aside, total}",
        "properties.type_set_aside.enum[1]: unknown fields are ignored: 'total'",
    ),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_lint_catches_a_broken_copy(tmp_path: Path, case: str) -> None:
    contract, shipped, broken, message = REGRESSIONS[case]
    text = (DATASETS / contract).read_text(encoding="utf-8")
    assert text.count(shipped) == 1, f"{contract} no longer holds {shipped!r}: update this case"
    path = tmp_path / Path(contract).name
    path.write_text(text.replace(shipped, broken), encoding="utf-8")
    problems = lint_problems(path)
    assert problems, f"{case}: the lint passed a broken copy of {contract}"
    assert all(p.startswith(f"{path}: ") for p in problems), problems
    assert any(message in p for p in problems), problems


def test_cli_lint_exit_status(tmp_path: Path) -> None:
    """The ``datacontract`` command of the venv agrees: 0 on a shipped contract, 1 on a
    broken copy (the command is what contributors run by hand)."""
    command = Path(sys.executable).with_name("datacontract")
    path = DATASETS / "meteorites" / "2.0.0.odcs.yaml"
    ok = subprocess.run([command, "lint", path], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.odcs.yaml"
    text = path.read_text(encoding="utf-8")
    broken.write_text(text.replace("logicalType: string", "logicalType: timestamp", 1))
    wide = {**os.environ, "COLUMNS": "500"}  # rich wraps the report at the terminal width
    bad = subprocess.run(
        [command, "lint", broken], capture_output=True, text=True, check=False, env=wide
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "'timestamp' is not one of" in bad.stdout


# --- the CCN importer's output -----------------------------------------------------------------


def test_ccn_importer_writes_valid_odcs(tmp_path: Path) -> None:
    """Every mapping branch of the importer (the tiny dictionary of its own tests)."""
    source = write_dictionary(tmp_path / "ccn")
    ccn.main(["--source", str(source), "--out", str(tmp_path / "out"), "--tables", "all"])
    written = sorted((tmp_path / "out").glob("*/*.odcs.yaml"))
    assert len(written) == 4
    assert_lints_clean(written)


@pytest.mark.realdata
@pytest.mark.skipif(
    not (REAL_CCN / ccn.STRUCTURE_FILE).is_file(),
    reason=f"real CCN data not found at {REAL_CCN} (the shared data folder is absent)",
)
def test_ccn_importer_writes_valid_odcs_for_every_real_table(tmp_path: Path) -> None:
    ccn.main(["--source", str(REAL_CCN), "--out", str(tmp_path), "--tables", "all"])
    written = sorted(tmp_path.glob("*/*.odcs.yaml"))
    assert len(written) == 7
    assert_lints_clean(written)


# --- enum descriptions keep their full text ----------------------------------------------------


def test_shipped_enum_descriptions_keep_their_commas() -> None:
    transactions = load_contract(DATASETS / "contract_transactions" / "1.0.0.odcs.yaml")
    set_aside = {
        v.value: v.description for v in transactions.column("type_set_aside").allowed_values
    }
    assert set_aside["SBA"] == "Small business set-aside, total"
    assert set_aside["HMP"] == "HBCU or minority institution set-aside, partial"
    media = load_contract(DATASETS / "media_items" / "1.0.0.odcs.yaml")
    assert media.column("mediatype").allowed_values[0].description == (
        "A sound recording (audio guide, lecture, podcast)"
    )


ENUM_CONTRACT = """\
apiVersion: v3.0.2
kind: DataContract
id: items-v1
name: items
version: 1.0.0
status: active
domain: collections
schema:
  - name: items
    physicalType: table
    properties:
      - name: set_aside
        logicalType: string
        enum:
          - {value: SBA, description: DESCRIPTION}
"""


def test_enum_description_with_commas_keeps_its_full_text(tmp_path: Path) -> None:
    path = tmp_path / "1.0.0.odcs.yaml"
    path.write_text(ENUM_CONTRACT.replace("DESCRIPTION", '"Set-aside, total, or partial"'))
    contract = load_contract(path)
    assert contract.column("set_aside").allowed_values[0].description == (
        "Set-aside, total, or partial"
    )
    assert_lints_clean([path])


def test_enum_description_cut_at_a_comma_is_a_contract_error(tmp_path: Path) -> None:
    path = tmp_path / "1.0.0.odcs.yaml"
    path.write_text(ENUM_CONTRACT.replace("DESCRIPTION", "Set-aside, total, or partial"))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert str(path) in message
    assert "column set_aside: enum[0] (value 'SBA')" in message
    assert 'quote the description: description: "Set-aside, total, or partial"' in message
