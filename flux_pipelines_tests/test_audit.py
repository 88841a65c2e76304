"""The audit trail: chain format, tamper detection, torn-write repair, parallel writers, CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flux_pipelines.audit import (
    AuditRecord,
    AuditTrail,
    contract_version_record,
    delivery_record,
    load_record,
    override_record,
    publication_record,
    quarantine_record,
    report_record,
)
from flux_pipelines.audit.cli import audit_app
from flux_pipelines.errors import AuditTrailCorrupt

runner = CliRunner()
GENESIS = "0" * 64
DAY = "2026-01-05"


def sample_records(n: int) -> list[AuditRecord]:
    """n records cycling through every kind, with distinct payloads."""
    makers: list[Callable[[int], AuditRecord]] = [
        lambda i: contract_version_record("meteorites", f"1.0.{i}", f"{i:064x}"),
        lambda i: delivery_record(
            "nasa", "meteorites", DAY, file=f"f{i}.csv", sha256=f"{i:064x}", size=100 + i
        ),
        lambda i: load_record(
            "nga",
            "meteorites",
            "2026-01-06",
            run_id=f"run-{i}",
            rows_read=10 + i,
            rows_curated=9 + i,
            rows_quarantined=1,
            contract_version="1.0.0",
        ),
        lambda i: quarantine_record(
            "nasa", "meteorites", DAY, file=f"f{i}.csv", rule_id="mass.range", rows=i
        ),
        lambda i: publication_record(
            "nasa", "meteorites", DAY, target=f"/p/{i}.parquet", rows=i, sha256=None
        ),
        lambda i: override_record(
            "ana", f"reason é {i}", agency="dod", dataset="spending", day=DAY, overrides="chk"
        ),
        lambda i: report_record([f"/reports/{i}.html"], agency="nasa", day=DAY),
    ]
    return [makers[i % len(makers)](i) for i in range(n)]


def build(home: Path, n: int = 10) -> AuditTrail:
    trail = AuditTrail(home)
    records = sample_records(n)
    trail.append(records[0])
    trail.append_many(records[1:4])
    for record in records[4:]:
        trail.append(record)
    return trail


def read_lines(trail: AuditTrail) -> list[str]:
    return trail.path.read_text(encoding="utf-8").splitlines()


def write_lines(trail: AuditTrail, lines: list[str]) -> None:
    trail.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def sha(obj: dict[str, Any]) -> str:
    """The documented hash, computed independently of the module."""
    body = {k: v for k, v in obj.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def found(trail: AuditTrail) -> list[tuple[str, int | None, int | None]]:
    report = trail.verify()
    for p in report.problems:  # every message names where
        if p.line is not None:
            assert f"line {p.line}" in p.message, p.message
        if p.seq is not None:
            assert f"seq {p.seq}" in p.message, p.message
    return [(p.kind, p.line, p.seq) for p in report.problems]


# --- format and reading --------------------------------------------------------------------


def test_chain_is_written_as_documented_and_verifies(tmp_path: Path) -> None:
    trail = build(tmp_path, 10)
    records = [json.loads(line) for line in read_lines(trail)]
    assert [r["seq"] for r in records] == list(range(1, 11))
    assert records[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    for r in records:
        assert r["hash"] == sha(r)
        assert r["ts"].endswith("Z")
        assert set(r) == {
            "seq", "ts", "kind", "agency", "dataset", "day", "run_id", "payload", "prev_hash",
            "hash",
        }  # fmt: skip
    assert records[2]["kind"] == "load" and records[2]["run_id"] == "run-2"
    assert records[5]["payload"]["reason"] == "reason é 5"  # stored as UTF-8, not escaped
    assert "reason é 5" in read_lines(trail)[5]

    report = trail.verify()
    assert report.ok and report.problems == [] and report.notices == []
    assert (report.records, report.head_seq, report.head_hash) == (10, 10, records[-1]["hash"])
    anchor = json.loads((tmp_path / "audit" / "head.json").read_text())
    assert anchor == {"seq": 10, "hash": records[-1]["hash"]}


def test_append_many_returns_linked_entries(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    first = trail.append(sample_records(1)[0])
    batch = trail.append_many(sample_records(5))
    assert [e.seq for e in batch] == [2, 3, 4, 5, 6]
    assert batch[0].prev_hash == first.hash
    assert [e.hash for e in batch] == [json.loads(x)["hash"] for x in read_lines(trail)[1:]]
    assert trail.append_many([]) == []
    assert len(read_lines(trail)) == 6


def test_iter_records_filters_and_streams(tmp_path: Path) -> None:
    trail = build(tmp_path, 21)
    loads = list(trail.iter_records(kind="load"))
    assert [e.seq for e in loads] == [3, 10, 17] and all(e.agency == "nga" for e in loads)
    nasa_day = list(trail.iter_records(agency="nasa", dataset="meteorites", day=DAY))
    assert {e.kind for e in nasa_day} == {"delivery", "quarantine", "publication"}
    assert len(nasa_day) == 9
    assert list(trail.iter_records(agency="nasa", day="2026-01-06")) == []
    with trail.path.open("ab") as f:
        f.write(b'{"seq": 22, "ts": "2026')  # torn tail: skipped, not an error
    assert len(list(trail.iter_records())) == 21


def test_bad_records_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    trail = build(tmp_path, 3)
    before = trail.path.read_bytes()
    with pytest.raises(ValueError, match="kind"):
        AuditRecord("deleted", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        AuditRecord("load", {}, day="05/01/2026")
    with pytest.raises(TypeError):
        trail.append_many([sample_records(1)[0], AuditRecord("load", {"x": {1, 2}})])
    with pytest.raises(ValueError):
        trail.append(AuditRecord("load", {"x": float("nan")}))
    assert trail.path.read_bytes() == before
    assert trail.verify().ok


# --- tampering -----------------------------------------------------------------------------


def edit_payload(lines: list[str]) -> list[str]:
    obj = json.loads(lines[3])
    obj["payload"]["rows"] = 999_999
    lines[3] = json.dumps(obj)
    return lines


def edit_ts(lines: list[str]) -> list[str]:
    lines[3] = lines[3].replace('"ts":"2', '"ts":"1', 1)
    return lines


def delete_middle(lines: list[str]) -> list[str]:
    del lines[4]
    return lines


def delete_first(lines: list[str]) -> list[str]:
    del lines[0]
    return lines


def swap(lines: list[str]) -> list[str]:
    lines[4], lines[5] = lines[5], lines[4]
    return lines


def insert_forged(lines: list[str]) -> list[str]:
    """A record claiming seq 5, linked to seq 4 and with a correct self-hash."""
    forged = json.loads(lines[4])
    forged["payload"] = {"file": "never-delivered.csv", "rows": 1}
    forged["hash"] = sha(forged)
    lines.insert(4, json.dumps(forged, ensure_ascii=False))
    return lines


def garbage_middle(lines: list[str]) -> list[str]:
    lines[4] = lines[4][:40]
    return lines


def rewrite_last(lines: list[str]) -> list[str]:
    """Edit the last record and recompute its hash: the chain alone cannot tell."""
    obj = json.loads(lines[-1])
    obj["payload"] = {"paths": ["/elsewhere.html"]}
    obj["hash"] = sha(obj)
    lines[-1] = json.dumps(obj)
    return lines


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (edit_payload, [("edited", 4, 4)]),
        (edit_ts, [("edited", 4, 4)]),
        (delete_middle, [("removed", 5, 5)]),
        (delete_first, [("removed", 1, 1)]),
        (swap, [("reordered", 6, 5)]),
        (insert_forged, [("inserted", 5, 5)]),
        (garbage_middle, [("malformed", 5, None)]),
        (rewrite_last, [("rewritten", 10, 10)]),
    ],
)
def test_each_kind_of_tampering_is_found_where_it_happened(
    tmp_path: Path,
    tamper: Callable[[list[str]], list[str]],
    expected: list[tuple[str, int | None, int | None]],
) -> None:
    trail = build(tmp_path, 10)
    assert trail.verify().ok
    write_lines(trail, tamper(read_lines(trail)))
    assert found(trail) == expected
    assert not trail.verify().ok


def test_several_tamperings_are_each_reported_once(tmp_path: Path) -> None:
    trail = build(tmp_path, 12)
    lines = insert_forged(swap(read_lines(trail)))  # forged copy of seq 6, then 6 and 5 swapped
    write_lines(trail, lines[:-2])
    assert found(trail) == [("inserted", 5, 6), ("reordered", 7, 5), ("truncated", 12, 11)]


def test_a_cut_tail_is_found_through_the_anchor_and_appends_refuse(tmp_path: Path) -> None:
    trail = build(tmp_path, 10)
    write_lines(trail, read_lines(trail)[:7])
    assert found(trail) == [("truncated", 8, 8)]
    cut = trail.path.read_bytes()
    with pytest.raises(AuditTrailCorrupt, match=r"ends at seq 7 but head\.json anchors seq 10"):
        trail.append(sample_records(1)[0])
    assert trail.path.read_bytes() == cut  # the evidence is not buried under a new anchor
    assert json.loads(trail.anchor_path.read_text())["seq"] == 10

    trail.path.unlink()  # the whole trail removed under its anchor
    assert found(trail) == [("truncated", 1, 1)]


def test_a_cut_tail_is_found_even_without_head_json(tmp_path: Path) -> None:
    """Deleting head.json as well no longer hides a cut tail: the second anchor (state/)
    still says how long the trail was (test_audit_tamper.py has the other cases)."""
    trail = build(tmp_path, 10)
    write_lines(trail, read_lines(trail)[:7])
    trail.anchor_path.unlink()
    report = trail.verify()
    assert not report.ok
    assert found(trail) == [("truncated", 8, 8)]
    assert [n.kind for n in report.notices] == ["no_anchor"]


def test_an_edited_middle_record_does_not_block_appends_or_hide(tmp_path: Path) -> None:
    trail = build(tmp_path, 6)
    write_lines(trail, edit_payload(read_lines(trail)))
    trail.append(sample_records(1)[0])
    assert found(trail) == [("edited", 4, 4)]


# --- torn writes ---------------------------------------------------------------------------


@pytest.mark.parametrize("torn", [b'{"seq":7,"ts":"2026-01-0', b'{"seq":7,"ts":"20\x00\x00\n'])
def test_a_torn_last_line_is_a_notice_then_moved_aside(tmp_path: Path, torn: bytes) -> None:
    trail = build(tmp_path, 6)
    with trail.path.open("ab") as f:
        f.write(torn)
    report = trail.verify()
    assert report.ok and report.records == 6
    assert [(n.kind, n.line) for n in report.notices] == [("torn", 7)]

    entry = trail.append(sample_records(1)[0])
    assert entry.seq == 7
    aside = list(trail.dir.glob("trail.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    report = trail.verify()
    assert report.ok and report.notices == []
    assert (report.records, report.head_seq, report.head_hash) == (7, 7, entry.hash)


def test_a_torn_line_in_the_middle_is_tampering(tmp_path: Path) -> None:
    trail = build(tmp_path, 6)
    lines = read_lines(trail)
    lines.insert(3, lines[3][:30])  # a partial copy of seq 4, then seq 4 itself
    write_lines(trail, lines)
    assert found(trail) == [("malformed", 4, None)]


# --- several writers -----------------------------------------------------------------------


def _writer(home: str, worker: int, count: int, start: Any) -> None:
    start.wait()
    trail = AuditTrail(Path(home))
    for i in range(count):
        trail.append(AuditRecord("load", {"worker": worker, "i": i}, agency=f"agency-{worker}"))


def test_parallel_processes_keep_one_valid_chain(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)  # every writer imported and ready before the first append
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 200, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    trail = AuditTrail(tmp_path)
    report = trail.verify()
    assert report.ok, report.problems
    assert report.records == 800 and report.head_seq == 800
    entries = list(trail.iter_records())
    assert [e.seq for e in entries] == list(range(1, 801))
    written = sorted((int(str(e.payload["worker"])), int(str(e.payload["i"]))) for e in entries)
    assert written == [(w, i) for w in range(4) for i in range(200)]
    switches = sum(a.agency != b.agency for a, b in itertools.pairwise(entries))
    assert switches > 3  # the writers really interleaved (not one after the other)


# --- CLI -----------------------------------------------------------------------------------


def test_cli_verify_exit_codes_and_output(tmp_path: Path) -> None:
    missing = runner.invoke(audit_app, ["verify", "--home", str(tmp_path)])
    assert missing.exit_code == 2 and "no audit trail" in missing.output

    trail = build(tmp_path, 10)
    good = runner.invoke(audit_app, ["verify", "--home", str(tmp_path)])
    assert good.exit_code == 0, good.output
    head = json.loads(read_lines(trail)[-1])["hash"]
    assert f"10 records, head seq 10 hash {head}: OK" in good.output

    write_lines(trail, delete_middle(read_lines(trail)))
    bad = runner.invoke(audit_app, ["verify", "--home", str(tmp_path)])
    assert bad.exit_code == 1
    assert "1 PROBLEM(S)" in bad.output
    assert "removed: line 5 (seq 6): seq 5 missing" in bad.output


def test_cli_verify_reads_flux_home_from_the_environment(tmp_path: Path) -> None:
    build(tmp_path, 3)
    result = runner.invoke(audit_app, ["verify"], env={"FLUX_HOME": str(tmp_path)})
    assert result.exit_code == 0 and "3 records" in result.output


def test_cli_show_filters_limits_and_prints_json(tmp_path: Path) -> None:
    build(tmp_path, 21)
    home = ["--home", str(tmp_path)]
    as_json = runner.invoke(audit_app, ["show", *home, "--kind", "load", "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["seq"] for r in rows] == [3, 10, 17] and rows[0]["run_id"] == "run-2"

    table = runner.invoke(
        audit_app, ["show", *home, "--agency", "nasa", "--day", DAY, "--limit", "2"]
    )
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["seq", "ts", "(UTC)", "kind"] and len(lines) == 3
    assert [line.split()[0] for line in lines[1:]] == ["19", "21"]  # the last two matching

    assert runner.invoke(audit_app, ["show", *home, "--day", "5 Jan"]).exit_code == 2
    assert runner.invoke(audit_app, ["show", *home, "--kind", "nope"]).exit_code == 2
    empty = runner.invoke(audit_app, ["show", "--home", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no audit trail" in empty.output
