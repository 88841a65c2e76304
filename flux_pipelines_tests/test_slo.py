"""SLOs measured on a real home: real deliveries, real loads through Dagster, a real instance.

Days of nasa/meteorites (deadline 09:00 UTC daily):
  A 2026-01-05 arrived 08:00 on its day (on time), loaded now: fresh; arrived before any
    28-day window ending now, so outside curated_within and nothing_lost
  B 2026-01-06 arrived now, loaded now: curated within minutes; delivered after its deadline
  C 2026-01-07 nothing delivered: late
  D 2026-01-08 landed two hours ago, never loaded: lost, and not curated after 15 minutes
  E 2026-01-09 a file rejected whole: the run fails; rejected with a reason (not lost)
  F 2026-01-10 landed just now, not loaded yet: no verdict yet
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from flux_pipelines.cli.main import app
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.names import agency_receipts
from flux_pipelines.ops.slo import SloFile, evaluate, load_slos
from flux_pipelines_tests.conftest import deliver, materialize

AGENCY, DATASET = "nasa", "meteorites"
A, B, C, D, E, F = (f"2026-01-{n:02d}" for n in range(5, 11))


def _objectives(run_target: float = 0.5) -> SloFile:
    return SloFile.model_validate(
        {
            "version": "1.0.0",
            "objectives": [
                {
                    "id": "curated",
                    "description": "curated in 15 min",
                    "target": 0.5,
                    "window": "28d",
                    "indicator": {"kind": "curated_within", "minutes": 15},
                    "agencies": [AGENCY],
                },
                {
                    "id": "runs",
                    "description": "runs succeed",
                    "target": run_target,
                    "window": "28d",
                    "indicator": {"kind": "run_success"},
                },
                {
                    "id": "lost",
                    "description": "nothing lost",
                    "target": 1.0,
                    "window": "28d",
                    "indicator": {"kind": "nothing_lost", "grace_minutes": 60},
                    "agencies": [AGENCY],
                },
                {
                    "id": "fresh",
                    "description": "fresh",
                    "target": 0.5,
                    "window": "5d",
                    "indicator": {"kind": "freshness"},
                    "agencies": [AGENCY],
                },
            ],
        }
    )


def _set_mtime(home: Path, day: str, when: dt.datetime) -> None:
    for f in (home / "landing" / AGENCY / DATASET / day).iterdir():
        os.utime(f, (when.timestamp(), when.timestamp()))


def _reject_whole(home: Path, day: str) -> None:
    folder = home / "landing" / AGENCY / DATASET / day
    folder.mkdir(parents=True)
    (folder / "meteorites.csv").write_bytes(b"id,name\n1,Caf\x94\n")  # not UTF-8


def _by_id(results: list) -> dict:
    return {r.id: r for r in results}


def test_slos_measured_on_a_real_home_match_a_recount(tmp_path: Path) -> None:
    home, registry = tmp_path, load_registry()
    instance = dg.DagsterInstance.ephemeral()
    deliver(home, AGENCY, DATASET, A, 40, seed=1)
    _set_mtime(home, A, dt.datetime.fromisoformat(f"{A}T08:00:00+00:00"))
    deliver(home, AGENCY, DATASET, B, 40, seed=2)
    deliver(home, AGENCY, DATASET, D, 40, seed=4)
    _set_mtime(home, D, dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    _reject_whole(home, E)
    assert materialize(home, [(AGENCY, DATASET)], A, instance=instance).success
    assert materialize(home, [(AGENCY, DATASET)], B, instance=instance).success

    before = _by_id(evaluate(home, instance, registry, now=_now(), slos=_objectives()))
    assert (before["runs"].good, before["runs"].total) == (2, 2)
    assert before["runs"].budget_left == pytest.approx(1.0)
    assert before["runs"].status == "met"

    assert not materialize(home, [(AGENCY, DATASET)], E, instance=instance).success
    deliver(home, AGENCY, DATASET, F, 40, seed=6)
    results = _by_id(evaluate(home, instance, registry, now=_now(), slos=_objectives()))

    # run_success: recounted from the instance's run records by status
    runs = instance.get_runs()
    succeeded = sum(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    failed = sum(r.status == dg.DagsterRunStatus.FAILURE for r in runs)
    assert (succeeded, failed) == (2, 1)
    run_slo = results["runs"]
    assert (run_slo.good, run_slo.total) == (succeeded, succeeded + failed)
    assert run_slo.ratio == pytest.approx(2 / 3)
    # the budget: (1 - 0.5) x 3 = 1.5 bad runs allowed, 1 spent: 0.5 left, down from 1.0
    assert run_slo.allowed_bad == pytest.approx(1.5)
    assert run_slo.budget_left == pytest.approx(0.5)
    assert run_slo.budget_left < before["runs"].budget_left
    assert run_slo.budget_left_pct == pytest.approx(33.33)
    assert run_slo.status == "burning"

    # nothing_lost: landing files recounted against the receipts (F is within its grace)
    lost = results["lost"]
    unaccounted = _files_without_receipt(home)
    assert unaccounted == {f"{D}/meteorites.csv", f"{F}/meteorites.csv"}
    assert (lost.good, lost.total) == (2, 3)  # B and E accounted for; D lost; A before window
    assert lost.status == "exhausted" and lost.budget_left == pytest.approx(-1.0)
    assert any(f"{D}/meteorites.csv" in example for example in lost.examples)

    # curated_within: B curated within seconds, E rejected within seconds, D not after 2 h
    curated = results["curated"]
    assert (curated.good, curated.total) == (2, 3)
    assert any(D in example for example in curated.examples)

    # freshness over the 5 days before 2026-01-09 12:00: meteorites A on time, B delivered
    # after its deadline, C and D late, E failed; contract_transactions never delivered
    fresh = _by_id(
        evaluate(
            home,
            instance,
            registry,
            now=dt.datetime(2026, 1, 9, 12, tzinfo=dt.UTC),
            slos=_objectives(),
        )
    )["fresh"]
    assert (fresh.good, fresh.total) == (1, 10)
    assert f"{AGENCY}/{DATASET} {C}: late" in fresh.examples


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)


def _files_without_receipt(home: Path) -> set[str]:
    """Landing files no receipt names (read straight from the files, not through Flux)."""
    found = set()
    landing = home / "landing" / AGENCY / DATASET
    for day in sorted(p.name for p in landing.iterdir()):
        receipt = agency_receipts(home, AGENCY) / DATASET / f"{day}.json"
        named = json.loads(receipt.read_text())["files"] if receipt.exists() else {}
        found |= {f"{day}/{f.name}" for f in (landing / day).iterdir() if f.name not in named}
    return found


def test_slo_report_prints_the_table_and_exits_1_when_a_budget_is_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flux_pipelines.instance.config import prepare_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    for name in [k for k in os.environ if k.startswith("DAGSTER_PG")]:
        monkeypatch.delenv(name)
    prepare_dagster_home(tmp_path)
    slos = tmp_path / "slos.yaml"
    import yaml

    doc = _objectives(run_target=0.999).model_dump(mode="json")
    doc["objectives"] = [o for o in doc["objectives"] if o["id"] != "fresh"]  # no days now
    slos.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("FLUX_SLOS", str(slos))
    deliver(tmp_path, AGENCY, DATASET, B, 40, seed=2)
    with dg.DagsterInstance.get() as instance:
        assert materialize(tmp_path, [(AGENCY, DATASET)], B, instance=instance).success
    runner = CliRunner()
    ok = runner.invoke(app, ["slo", "report", "--home", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "runs" in ok.output and "1/1" in ok.output and "met" in ok.output

    deliver(tmp_path, AGENCY, DATASET, D, 40, seed=4)
    _set_mtime(tmp_path, D, dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    time.sleep(0.01)
    bad = runner.invoke(app, ["slo", "report", "--home", str(tmp_path), "--json"])
    assert bad.exit_code == 1, bad.output
    doc = {o["id"]: o for o in json.loads(bad.output)["objectives"]}
    assert (doc["lost"]["good"], doc["lost"]["total"], doc["lost"]["status"]) == (
        1,
        2,
        "exhausted",
    )
    assert doc["runs"]["status"] == "met"

    refused = runner.invoke(app, ["slo", "report", "--home", str(tmp_path), "--window", "3w"])
    assert refused.exit_code == 2 and "3w" in refused.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": "4 weeks"}, "objectives.0.window"),
        ({"target": 1.5}, "objectives.0.target"),
        ({"indicator": {"kind": "uptime"}}, "objectives.0.indicator"),
        ({"indicator": {"kind": "curated_within"}}, "minutes"),
        ({"extra": 1}, "objectives.0.extra"),
    ],
)
def test_a_bad_slo_file_is_refused_naming_the_entry(
    tmp_path: Path, change: dict, message: str
) -> None:
    import yaml

    doc = _objectives().model_dump(mode="json")
    doc["objectives"][0] |= change
    path = tmp_path / "slos.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigurationError, match=message) as refused:
        load_slos(path)
    assert str(path) in str(refused.value)


def test_the_shipped_slo_file_loads_and_repeated_ids_are_refused(tmp_path: Path) -> None:
    import yaml

    shipped = load_slos()
    assert {o.indicator.kind for o in shipped.objectives} == {
        "curated_within",
        "run_success",
        "nothing_lost",
        "freshness",
    }
    doc = _objectives().model_dump(mode="json")
    doc["objectives"][1]["id"] = doc["objectives"][0]["id"]
    path = tmp_path / "slos.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigurationError, match="repeated: curated"):
        load_slos(path)
