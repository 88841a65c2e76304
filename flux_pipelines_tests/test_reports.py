"""Agency reports on real loads: Broker CSV layout, routing of errors and warnings, rejected
files, flex columns, CSV-injection neutralisation, HTML escaping, trend, re-runs, no data."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.reports import (
    BROKER_COLUMNS,
    ERROR_REPORT,
    SUMMARY,
    WARNING_REPORT,
    DeliveryReport,
    write_delivery_report,
)
from flux_pipelines.reports.broker import flex_field_sql, neutralised
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

PROPS: list[dict[str, Any]] = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "name", "logicalType": "string", "required": True},
    {
        "name": "score",
        "logicalType": "number",
        "logicalTypeOptions": {"minimum": 0, "maximum": 100},
    },
    {"name": "kind", "logicalType": "string", "enum": [{"value": "x"}, {"value": "y"}]},
]
QUALITY = [
    {
        "id": "score_high",
        "type": "custom",
        "engine": "flux",
        "implementation": "score <= 90",
        "severity": "warning",
    },
]
HEADER = "id,name,score,kind"
EXPECTED_HEADER = [*BROKER_COLUMNS, "File Name"]


@pytest.fixture
def contract(tmp_path: Path) -> Contract:
    return load_contract(
        write_contract(tmp_path / "contracts", contract_doc(PROPS, quality=QUALITY))
    )


def deliver(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    root: Path,
    files: dict[str, str],
    day: dt.date = DAY,
) -> None:
    """Land ``files`` for ``day`` and load them with the real partition loader."""
    folder = root / "landing" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    run_load(conn, contract, paths, root, day=day)


def report(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    root: Path,
    day: dt.date = DAY,
    **options: Any,
) -> DeliveryReport:
    return write_delivery_report(
        conn,
        agency="test-agency",
        contract=contract,
        day=day,
        outbox_root=root / "outbox",
        **options,
    )


def read_report(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def html_table(html: str, table_id: str) -> list[list[str]]:
    """The cells' text of one table of the summary page, row by row (header row dropped)."""
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert match, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", match.group(1), re.S)[1:]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        ]
        for r in rows
    ]


# --- the CSVs -----------------------------------------------------------------------------------


def test_broker_columns_in_order_utf8_with_bom(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,Zoë,5,zz\n2,b,95,x\n"})
    result = report(conn, contract, tmp_path)
    for path in (result.error_report, result.warning_report):
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbfUnique ID,Field Name,Rule Message,Value Provided,")
        header, lines = read_report(path)
        assert header == EXPECTED_HEADER
        assert len(lines) == 1
    assert result.folder == tmp_path / "outbox" / "test-agency" / "items" / "2026-01-05"
    assert sorted(p.name for p in result.folder.iterdir()) == sorted(
        [ERROR_REPORT, WARNING_REPORT, SUMMARY]
    )


def test_fatal_and_warning_lines_land_in_their_files(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "items.csv": f"{HEADER}\n"
            "1,clean,5,x\n"
            "2,fatal,5,zz\n"  # kind.allowed_values: quarantined
            "3,warned,95,x\n"  # score_high (warning): loaded
            "4,both,96,zz\n"  # quarantined; its warning still belongs in the warning report
        },
    )
    result = report(conn, contract, tmp_path)
    _, errors = read_report(result.error_report)
    _, warnings = read_report(result.warning_report)
    assert errors == [
        {
            "Unique ID": "id=2",
            "Field Name": "kind",
            "Rule Message": "kind is not one of the 2 allowed values",
            "Value Provided": "zz",
            "Expected Value": "one of: x, y",
            "Difference": "",
            "Flex Field": "",
            "Row Number": "2",
            "Rule Label": "kind.allowed_values",
            "File Name": "items.csv",
        },
        {
            "Unique ID": "id=4",
            "Field Name": "kind",
            "Rule Message": "kind is not one of the 2 allowed values",
            "Value Provided": "zz",
            "Expected Value": "one of: x, y",
            "Difference": "",
            "Flex Field": "",
            "Row Number": "4",
            "Rule Label": "kind.allowed_values",
            "File Name": "items.csv",
        },
    ]
    assert [(w["Unique ID"], w["Rule Label"], w["Value Provided"], w["Expected Value"]) for w in
            warnings] == [("id=3", "score_high", "95", "score <= 90"),
                          ("id=4", "score_high", "96", "score <= 90")]  # fmt: skip
    assert (result.errors, result.warnings, result.rejected_files) == (2, 2, 0)


def test_lines_ordered_by_file_row_and_field(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "b.csv": f"{HEADER}\n10,b,-1,zz\n11,b,5,x\n12,b,5,q\n",
            "a.csv": f"{HEADER}\n20,a,5,x\n21,a,5,zz\n",
        },
    )
    _, lines = read_report(report(conn, contract, tmp_path).error_report)
    assert [(r["File Name"], r["Row Number"], r["Field Name"]) for r in lines] == [
        ("a.csv", "2", "kind"),
        ("b.csv", "1", "kind"),
        ("b.csv", "1", "score"),
        ("b.csv", "3", "kind"),
    ]


def test_rejected_file_is_one_error_line_with_its_reason(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "a.csv": f"{HEADER}\n1,a,5,x\n",
            "nocols.csv": "id,score\n1,5\n2,6\n",
            "z.csv": f"{HEADER}\n2,b,5,x\n",
        },
    )
    result = report(conn, contract, tmp_path)
    _, errors = read_report(result.error_report)
    [line] = errors
    assert line["Rule Label"] == "delivery.missing_required_columns"
    assert line["Unique ID"] == "file nocols.csv"
    assert line["File Name"] == "nocols.csv"
    assert line["Row Number"] == ""
    assert line["Rule Message"].startswith("required column(s) name are missing")
    assert line["Expected Value"] == "every required column present"
    assert (result.errors, result.rejected_files) == (1, 1)
    html = result.summary.read_text(encoding="utf-8")
    files = html_table(html, "files")
    assert [row[0] for row in files] == ["nocols.csv", "a.csv", "z.csv"]  # rejected first
    assert files[0][1] == "rejected"
    assert "delivery.missing_required_columns: required column(s) name are missing" in files[0][6]


def test_flex_columns_are_echoed(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "items.csv": "id,name,score,kind,Flex_Code,other,FLEX_Note\n"
            "1,a,5,zz,A-1,ignored,hello world\n"
            "2,b,95,x,,ignored,\n"
        },
    )
    result = report(conn, contract, tmp_path)
    _, [error] = read_report(result.error_report)
    _, [warning] = read_report(result.warning_report)
    # the loader normalises delivered headers (lower case); 'other' is not a flex column
    assert error["Flex Field"] == "flex_code: A-1, flex_note: hello world"
    assert warning["Flex Field"] == "flex_code: , flex_note: "


def test_formula_cells_are_neutralised(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "items.csv": f"{HEADER},flex_cmd\n"
            '1,a,5,"=HYPERLINK(""http://evil.example"",""click"")",x\n'
            "2,b,-5,x,x\n"
            "3,c,5,+1,x\n"
            "4,d,5,@SUM(A1),x\n"
            "5,e,5,plain,x\n"
        },
    )
    _, lines = read_report(report(conn, contract, tmp_path).error_report)
    provided = {r["Row Number"]: r["Value Provided"] for r in lines}
    assert provided == {
        "1": '\'=HYPERLINK("http://evil.example","click")',
        "2": "'-5",
        "3": "'+1",
        "4": "'@SUM(A1)",
        "5": "plain",
    }


@pytest.mark.parametrize(
    ("original_row", "expected"),
    [
        ('{"id":"1","_unmapped":{"FLEX_A":"1","Other":"x","flex_b":null}}', "FLEX_A: 1, flex_b: "),
        ('{"id":"1","_unmapped":{"other":"x"}}', None),
        ('{"id":"1","_unmapped":["not", "an object"]}', None),
        ('{"id":"1"}', None),
        (None, None),
    ],
)
def test_flex_field_of_any_original_row(original_row: str | None, expected: str | None) -> None:
    """Case-insensitive, delivered order; odd shapes give an empty cell, never an error."""
    found = duckdb.connect().sql(
        f"SELECT {flex_field_sql('o')} FROM (SELECT ?::JSON AS o)", params=[original_row]
    )
    assert found.fetchall() == [(expected,)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("a=b", "a=b"),
        (" =x", " =x"),
        ("", ""),
        (None, None),
    ],
)
def test_neutralised_cells(value: str | None, expected: str | None) -> None:
    found = duckdb.connect().sql(f"SELECT {neutralised('v')} FROM (SELECT ?::VARCHAR AS v)",
                                 params=[value]).fetchall()  # fmt: skip
    assert found == [(expected,)]


# --- the summary page ---------------------------------------------------------------------------


def test_summary_escapes_delivered_values_and_shows_rules(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    bad_kinds = "".join(f"{i},n,5,k{i}\n" for i in range(10, 17))  # 7 x kind.allowed_values
    deliver(
        conn,
        contract,
        tmp_path,
        {
            "items.csv": "id,name,score,kind,<b>extra</b>\n"
            '1,a,5,"<script>alert(""x"")</script>",e\n'
            "2,b,-3,x,e\n" + bad_kinds
        },
    )
    html = report(conn, contract, tmp_path).summary.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<b>extra</b>" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    rules = html_table(html, "rules")
    assert [(r[0], r[1], r[4]) for r in rules] == [
        ("kind.allowed_values", "fatal", "8"),
        ("score.minimum", "fatal", "1"),
    ]
    kinds = re.search(r"<code>kind.allowed_values</code> \(fatal\).*?</table>", html, re.S)
    assert kinds and len(re.findall(r"<tr>", kinds.group(0))) == 1 + 5  # header + 5 examples
    assert html_table(html, "drift") == [["items.csv", "b_extra_b", ""]]
    assert html_table(html, "rows")[0][1:] == ["9", "0", "9", "0", "100.0%"]


def test_trend_compares_with_the_previous_delivery_day(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    days = [DAY - dt.timedelta(days=n) for n in (6, 3, 1)]
    for day, bad in zip(days, (0, 1, 1), strict=True):
        rows = "".join(f"{i},n,5,{'zz' if i < bad else 'x'}\n" for i in range(4))
        deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n{rows}"}, day=day)
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,zz\n2,b,5,zz\n"})
    later = DAY + dt.timedelta(days=1)  # after the reported day: never in its trend
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,x\n"}, day=later)

    html = report(conn, contract, tmp_path).summary.read_text(encoding="utf-8")
    assert "Reject rate 100.0% vs 25.0% on 2026-01-04 (+75.0 points)" in html
    svg = re.search(r'<svg id="trend".*?</svg>', html, re.S)
    assert svg
    earlier = re.findall(r'<g class="day earlier" data-day="([0-9-]+)">', svg.group(0))
    assert earlier == [d.isoformat() for d in days]
    assert re.findall(r'<g class="day current" data-day="([0-9-]+)">', svg.group(0)) == [
        "2026-01-05"
    ]
    assert svg.group(0).count("<rect") == 4

    capped = report(conn, contract, tmp_path, history_days=2).summary.read_text(encoding="utf-8")
    earlier = re.findall(r'<g class="day earlier" data-day="([0-9-]+)">', capped)
    assert earlier == ["2026-01-02", "2026-01-04"]


def test_first_delivery_has_nothing_to_compare(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,x\n"})
    html = report(conn, contract, tmp_path).summary.read_text(encoding="utf-8")
    assert "no earlier delivery to compare with" in html
    assert '<g class="day earlier"' not in html
    assert html.count('<g class="day current"') == 1
    assert "0 errors, 0 warnings." in html


# --- re-runs, no data, metadata -----------------------------------------------------------------


def test_rerun_replaces_the_days_report(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,zz\n"})
    first = report(conn, contract, tmp_path)
    assert first.errors == 1
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,x\n"})  # fixed
    (first.folder / ".summary.html.dead0001.tmp").write_text("left by a killed run")
    second = report(conn, contract, tmp_path)
    assert second.error_report == first.error_report
    assert (second.errors, second.warnings) == (0, 0)
    assert read_report(second.error_report) == (EXPECTED_HEADER, [])
    assert "Every row was loaded." in second.summary.read_text(encoding="utf-8")
    # no staging leftovers next to the reports
    assert sorted(p.name for p in second.folder.iterdir()) == sorted(
        [ERROR_REPORT, WARNING_REPORT, SUMMARY]
    )


def test_failed_report_leaves_the_previous_one(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,zz\n"})
    first = report(conn, contract, tmp_path)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    conn.execute("DROP TABLE _flux_deliveries").fetchall()
    conn.execute("CREATE VIEW _flux_deliveries AS SELECT 1 AS broken").fetchall()
    with pytest.raises(duckdb.Error):
        report(conn, contract, tmp_path)
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before


def test_no_data_still_writes_a_zero_error_report(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    result = report(conn, contract, tmp_path)  # the agency file has no table at all
    assert (result.errors, result.warnings, result.rejected_files) == (0, 0, 0)
    assert read_report(result.error_report) == (EXPECTED_HEADER, [])
    assert read_report(result.warning_report) == (EXPECTED_HEADER, [])
    html = result.summary.read_text(encoding="utf-8")
    assert "0 errors, 0 warnings." in html
    assert "No delivery was recorded for this day." in html
    assert html_table(html, "rows")[0][1:] == ["0", "0", "0", "0", "0.0%"]
    assert "<svg" not in html


def test_metadata_is_plain_values(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract
) -> None:
    deliver(conn, contract, tmp_path, {"items.csv": f"{HEADER}\n1,a,5,zz\n2,b,95,x\n"})
    result = report(conn, contract, tmp_path)
    assert result.metadata() == {
        "report_folder": str(result.folder),
        "error_report": str(result.folder / ERROR_REPORT),
        "warning_report": str(result.folder / WARNING_REPORT),
        "summary": str(result.folder / SUMMARY),
        "errors": 1,
        "warnings": 1,
        "rejected_files": 0,
    }


@pytest.mark.parametrize("agency", ["../escape", "a/b", "", ".."])
def test_agency_must_be_a_plain_name(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, contract: Contract, agency: str
) -> None:
    with pytest.raises(ConfigurationError, match="not a plain name"):
        write_delivery_report(
            conn, agency=agency, contract=contract, day=DAY, outbox_root=tmp_path / "outbox"
        )
    assert not (tmp_path / "outbox").exists()
