"""Loading the definitions stays light: every run worker and step process pays for it."""

from __future__ import annotations

import json
import subprocess
import sys

from flux_pipelines.contracts.page import rule_catalogue_markdown
from flux_pipelines.contracts.registry import load_registry

# Imported only by the steps that train, save or load a model (or fit a monitor's forest),
# and DuckDB, imported by the steps that open a file (definitions.py freezes what the load
# built only while DuckDB is not imported: its bindings report frozen objects as leaks).
HEAVY = ("sklearn", "joblib", "scipy", "duckdb")

PROBE = """\
import gc, json, sys
from flux_pipelines.definitions import defs
keys = defs.resolve_asset_graph().get_all_asset_keys()
print(json.dumps({
    "heavy": sorted(m for m in sys.argv[1:] if m in sys.modules),
    "assets": len(keys),
    "gc_enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
}))
"""


def test_loading_the_definitions_imports_no_model_library() -> None:
    # A fresh interpreter: this process has imported scikit-learn through other tests.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *HEAVY], capture_output=True, text=True, check=True
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["heavy"] == [], f"loading the definitions imported {report['heavy']}"
    assert report["assets"] > 0
    assert report["gc_enabled"], "the garbage collector stays paused after the definitions load"
    # what the load built is out of the collector's reach: later collections (the step's,
    # the interpreter's exit) do not walk it again
    assert report["frozen"] > 10 * report["tracked"], report


def test_a_run_process_exits_without_leak_reports() -> None:
    # A step that opens DuckDB after the definitions froze their objects: nothing of DuckDB's
    # is frozen, so its bindings have nothing to report at exit.
    code = PROBE + (
        "import duckdb\nwith duckdb.connect() as conn:\n    conn.sql('SELECT 42').fetchall()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, check=True
    )
    assert "leaked" not in done.stderr, done.stderr[-2000:]


def test_agencies_with_the_same_overrides_share_one_contract() -> None:
    registry = load_registry()
    plain = [a for a in registry.agencies_for("contract_transactions") if not a.severity_overrides]
    first, second = (registry.latest_for("contract_transactions", a) for a in plain[:2])
    assert first is second is registry.latest("contract_transactions")
    assert rule_catalogue_markdown(first) is rule_catalogue_markdown(second)


def test_an_agency_override_is_still_its_own() -> None:
    registry = load_registry()
    dataset = "contract_transactions"
    overriding = next(a for a in registry.agencies_for(dataset) if a.severity_overrides)
    seen = registry.latest_for(dataset, overriding)
    assert seen is registry.latest_for(dataset, overriding)  # cached
    assert seen is not registry.latest(dataset)
    for rule_id, severity in overriding.severity_overrides[dataset].items():
        assert seen.rule_severity(rule_id) == severity
    assert "agency override" in rule_catalogue_markdown(seen)
    assert "agency override" not in rule_catalogue_markdown(registry.latest(dataset))
