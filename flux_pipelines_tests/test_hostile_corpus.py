"""A corpus of hostile kinds of delivery (issue 13), each with the outcome a demanding user
expects, run through the real paths: the landing sensors' scan and the loader.

Every kind is a row of ``KINDS``: a builder that plants files, links and folders in a real
landing zone (``landing/test-agency/items/<day>/``, beside a valid ``good.csv``, another
agency's delivery and a canary CSV elsewhere on the host) and its expected outcome: per
file, loaded or rejected with which ``delivery.*`` rule; rows curated, quarantined and
warned, and which row rules fired; what the sensors report and whether they request a run.
``test_hostile_kind`` runs each one (``hostile.run_kind``) and asserts that outcome and the
invariants every kind must keep:

- nothing lost: per loaded file, rows read = curated + quarantined, recounted from DuckDB
  and the raw Parquet; every delivered entry is either in the load's outcome or reported by
  the sensors; the deliveries log says what the outcome says;
- confinement: no value of the canary, of the other agency's delivery or of /etc/passwd is
  stored anywhere for the test agency; the other agency's run is always requested;
- classified outcomes only: no exception escapes, every rule id is in the catalogue (row
  rules of the contract, ``row.short``, the fixed ``delivery.*`` rules), a rejected file
  names its rule in its outcome, its error, the deliveries log and the quarantine;
- bounded: a scan takes under 10 s and a load under 30 s, whatever the file's size.

A kind whose outcome today is not what it should be is marked ``xfail(strict=True)`` with
what is wrong, so the suite lists it and notices when it is fixed.
``test_every_rule_has_a_hostile_kind`` proves every fixed ``delivery.*`` rule and every
row-rule kind is the expected outcome of at least one kind that passes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import flux_pipelines.ingest.delivery as delivery_module
from flux_pipelines.contracts.model import Contract, RuleKind
from flux_pipelines.contracts.validator import SHORT_ROW_RULE
from flux_pipelines.defs.ingest.landing import HIDDEN_GRACE_SECONDS
from flux_pipelines.ingest.delivery import PartitionResult, is_data_file_name
from flux_pipelines.ingest.manifest import write_manifest
from flux_pipelines.ingest.readers import display_name
from flux_pipelines.ingest.scanning import MAX_JSON_DEPTH
from flux_pipelines_tests.hostile import (
    AGENCY,
    CANARY,
    DATASET,
    GOOD_ROWS,
    HEADER,
    OTHER,
    OTHER_DATASET,
    PASSWD,
    THEIRS,
    Ctx,
    D,
    Expect,
    Kind,
    Ran,
    corpus_contract,
    delivery_rule_ids,
    everything_stored,
    fixed_row_rule_ids,
    good_rows,
    is_control_name,
    is_real_dir,
    landing_entries,
    one,
    printable,
    raw_rows,
    rejected_keeps_raw,
    row,
    row_rule_kind,
    run_kind,
)

DAY_PATH = f"{AGENCY}/{DATASET}/{D}"  # the test agency's day, as findings name it
SUCCESS = "_SUCCESS"
LINK = "delivery.symlink"
NOT_FILE = "delivery.not_a_file"
NOT_FOLDER = "delivery.not_a_folder"
UNKNOWN = "delivery.unknown_folder"
HIDDEN = "delivery.hidden_name"
INCOMPLETE = "delivery.incomplete"
UNREADABLE = "delivery.unreadable"
ENCODING = "delivery.bad_encoding"
EMPTY = "delivery.empty_file"
FORMAT = "delivery.unsupported_format"
FIELD_TOO_LONG = "delivery.field_too_long"
ANY_DELIVERY_RULE = "delivery.*"  # an xfail kind's expectation: rejected with a clear rule

# Fixed delivery rules no delivered file can trigger, and why (checked to exist).
UNREACHABLE_BY_A_FILE = {
    "delivery.outside_outbox": "raised when Flux writes an agency's reports into an outbox "
    "folder that is a link or leaves outbox/<agency>/, never by a delivered file "
    "(test_hostile_landing.test_outbox_folder_that_is_a_link_is_never_written_through)",
}


def at(*names: str) -> str:
    """A path below landing/ inside the test agency's day folder, as findings name it."""
    return "/".join([DAY_PATH, *names])


# --- builders ---------------------------------------------------------------------------------

Build = Callable[[Ctx], object]


def csv(
    name: str | bytes, records: Sequence[str], *, header: str = HEADER, eol: str = "\n"
) -> Build:
    return lambda c: c.csv(name, records, header=header, eol=eol)


def data(name: str | bytes, content: bytes | str) -> Build:
    return lambda c: c.write(name, content)


def text(records: Sequence[str], header: str = HEADER, eol: str = "\n") -> str:
    return eol.join([header, *records]) + eol


def parquet(name: str, frame: dict[str, list[Any]] | pl.DataFrame) -> Build:
    def build(c: Ctx) -> None:
        c.day.mkdir(parents=True, exist_ok=True)
        (frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(frame)).write_parquet(
            c.day / name
        )

    return build


def seq(*builds: Build) -> Build:
    def build(c: Ctx) -> None:
        for b in builds:
            b(c)

    return build


TWO = good_rows([101, 102], name="Widget")  # two valid records of the hostile file
PASSWD_LINE = PASSWD.read_text().splitlines()[0] if PASSWD.is_file() else "root:x:0:0"


# --- checks on the loaded data ---------------------------------------------------------------

Check = Callable[[duckdb.DuckDBPyConnection, PartitionResult], None]


def stored(column: str, expected: dict[int, Any], file: str | None = None) -> Check:
    """The curated ``column`` by id (of ``file``, default every file but good.csv)."""

    def check(conn: duckdb.DuckDBPyConnection, _: PartitionResult) -> None:
        where = "_file = ?" if file is not None else "_file <> 'good.csv'"
        params = [file] if file is not None else []
        found = dict(
            conn.execute(f"SELECT id, {column} FROM items WHERE {where}", params).fetchall()
        )
        assert found == expected

    return check


def provided(rule_id: str, expected: Sequence[str]) -> Check:
    """The values the quarantine shows for ``rule_id``, as delivered, in row order."""

    def check(conn: duckdb.DuckDBPyConnection, _: PartitionResult) -> None:
        rows = conn.execute(
            "SELECT value_provided FROM items_quarantine WHERE rule_id = ? ORDER BY _row_number",
            [rule_id],
        ).fetchall()
        assert [v for (v,) in rows] == list(expected)

    return check


def unmapped(file: str, columns: Sequence[str]) -> Check:
    def check(_: duckdb.DuckDBPyConnection, result: PartitionResult) -> None:
        [outcome] = [f for f in result.files if f.file == file]
        assert outcome.unmapped == list(columns)

    return check


def reason_says(file: str, *words: str) -> Check:
    """The rejection of ``file`` names what is wrong (each of ``words``)."""

    def check(_: duckdb.DuckDBPyConnection, result: PartitionResult) -> None:
        [outcome] = [f for f in result.files if f.file == file]
        assert all(w in (outcome.reason or "") for w in words), outcome.reason

    return check


def both(*checks: Check) -> Check:
    def check(conn: duckdb.DuckDBPyConnection, result: PartitionResult) -> None:
        for c in checks:
            c(conn, result)

    return check


# --- writers at work --------------------------------------------------------------------------


def append_row(c: Ctx) -> None:
    with (c.day / "h.csv").open("a") as handle:
        handle.write(row(999) + "\n")


def cut_short(c: Ctx) -> None:
    with (c.day / "h.csv").open("r+b") as handle:
        handle.truncate(200)


def replace_atomically(c: Ctx) -> None:
    fresh = c.tmp / "next.csv"
    fresh.write_text(text(good_rows(range(500, 540), name="Next")))
    os.replace(fresh, c.day / "h.csv")


def vanish(c: Ctx) -> None:
    (c.day / "h.csv").unlink()


def marker_then_file(c: Ctx) -> None:
    """good.csv, then _SUCCESS, then h.csv: a file written after the day was declared
    complete."""
    c.age(c.day / "good.csv", 300)
    c.write(SUCCESS, b"")
    c.age(c.day / SUCCESS, 120)
    c.csv("h.csv", TWO)


def future_mtime(c: Ctx) -> None:
    path = c.csv("h.csv", TWO)
    stamp = time.time() + 10 * 365 * 86400
    os.utime(path, (stamp, stamp))


def parquet_with_twin_columns(c: Ctx) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    c.day.mkdir(parents=True, exist_ok=True)
    columns = [pa.array([101]), pa.array(["Widget"]), pa.array(["Gadget"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["id", "name", "name"]), c.day / "h.parquet")


def manifest(rows: dict[str, int], then: Build | None = None) -> Build:
    def build(c: Ctx) -> None:
        write_manifest(c.day, rows)
        if then is not None:
            then(c)

    return build


def hard_link(name: str, target: Callable[[Ctx], Path]) -> Build:
    def build(c: Ctx) -> None:
        c.day.mkdir(parents=True, exist_ok=True)
        os.link(target(c), c.day / name)

    return build


def mknod_null(c: Ctx) -> None:
    c.day.mkdir(parents=True, exist_ok=True)
    try:
        os.mknod(c.day / "null.csv", 0o644 | 0o020000, os.makedev(1, 3))  # S_IFCHR: /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def in_folder(*parts: str, name: str = "x.csv", records: Sequence[str] = TWO) -> Build:
    """A valid CSV at landing/<parts...>/<name> (outside the test agency's day folder)."""
    return lambda c: c.write(name, text(records), c.landing.joinpath(*parts))


# --- the corpus -------------------------------------------------------------------------------

KINDS: list[Kind] = [
    # ---- file names: data, never patterns; hidden and temporary names are reported ----------
    Kind("name_glob_star", "names", csv("*.csv", TWO), Expect({"*.csv": None}, curated=2)),
    Kind(
        "name_brackets",
        "names",
        csv("items[1].csv", TWO),
        Expect({"items[1].csv": None}, curated=2),
    ),
    Kind(
        "name_question_mark", "names", csv("it?ms.csv", TWO), Expect({"it?ms.csv": None}, curated=2)
    ),
    Kind(
        "name_shell_characters",
        "names",
        csv("$(rm -rf x);{a,b}|`id`.csv", TWO),
        Expect({"$(rm -rf x);{a,b}|`id`.csv": None}, curated=2),
    ),
    Kind(
        "name_spaces",
        "names",
        csv("  my items  .csv", TWO),
        Expect({"  my items  .csv": None}, curated=2),
    ),
    Kind(
        "name_unicode",
        "names",
        csv("données_été_日本_😀.csv", TWO),
        Expect({"données_été_日本_😀.csv": None}, curated=2),
    ),
    Kind(
        "name_nfc_and_nfd_twins",
        "names",
        seq(
            csv("\u00e9t\u00e9.csv", good_rows([101])), csv("e\u0301te\u0301.csv", good_rows([102]))
        ),
        Expect({"\u00e9t\u00e9.csv": None, "e\u0301te\u0301.csv": None}, curated=2),
    ),
    Kind(
        "name_invalid_utf8_bytes",
        "names",
        csv(b"bad\xff\xfe.csv", TWO),
        Expect({"bad\\xff\\xfe.csv (name not UTF-8)": ENCODING}),
    ),
    Kind(
        "name_shown_like_a_twin_that_is_not_utf8",
        "names",
        # a file literally named bad\xff.csv beside one whose name has the byte 0xff
        seq(csv("bad\\xff.csv", TWO), csv(b"bad\xff.csv", good_rows([103]))),
        Expect({"bad\\xff.csv": None}, unnamed={ENCODING: 1}, curated=2),
    ),
    Kind(
        "name_with_newline",
        "names",
        csv("items\nnext.csv", TWO),
        Expect({"items\nnext.csv": None}, curated=2),
    ),
    Kind(
        "name_255_bytes",
        "names",
        csv("n" * 251 + ".csv", TWO),
        Expect({"n" * 251 + ".csv": None}, curated=2),
    ),
    Kind(
        "name_long_multibyte",
        "names",
        csv("é" * 125 + ".csv", TWO),
        Expect({"é" * 125 + ".csv": None}, curated=2),
    ),
    Kind(
        "name_leading_dot",
        "names",
        csv(".items.csv", TWO),
        Expect(findings={at(".items.csv"): HIDDEN}),
    ),
    Kind(
        "name_leading_underscore",
        "names",
        csv("_items.csv", TWO),
        Expect(findings={at("_items.csv"): HIDDEN}),
    ),
    Kind(
        "name_leading_dot_dot",
        "names",
        csv("..items.csv", TWO),
        Expect(findings={at("..items.csv"): HIDDEN}),
    ),
    Kind(
        "name_leading_tilde",
        "names",
        csv("~items.csv", TWO),
        Expect(findings={at("~items.csv"): HIDDEN}),
    ),
    Kind(
        "name_stale_part_upload",
        "names",
        csv("items.csv.part", TWO),
        Expect(findings={at("items.csv.part"): HIDDEN}),
    ),
    Kind(
        "name_upper_case_tmp_suffix",
        "names",
        csv("ITEMS.CSV.TMP", TWO),
        Expect(findings={at("ITEMS.CSV.TMP"): HIDDEN}),
    ),
    Kind(
        "name_hidden_only",
        "names",
        csv(".only.csv", TWO),
        Expect(findings={at(".only.csv"): HIDDEN}, run=False),
        good=False,
    ),
    Kind("name_tsv_extension", "names", csv("items.tsv", TWO), Expect({"items.tsv": FORMAT})),
    Kind("name_no_extension", "names", csv("items", TWO), Expect({"items": FORMAT})),
    Kind("name_wrong_extension", "names", csv("items.xlsx", TWO), Expect({"items.xlsx": FORMAT})),
    Kind(
        "name_compressed",
        "names",
        data("items.csv.gz", gzip.compress(text(TWO).encode())),
        Expect({"items.csv.gz": FORMAT}),
    ),
    Kind(
        "name_upper_case_extension",
        "names",
        csv("ITEMS.CSV", TWO),
        Expect({"ITEMS.CSV": None}, curated=2),
    ),
    Kind("name_txt_is_csv", "names", csv("items.txt", TWO), Expect({"items.txt": None}, curated=2)),
    Kind(
        "name_manifest_lookalike",
        "names",
        data(
            "MANIFEST.JSON",
            json.dumps({"files": [{"name": "good.csv", "rows": 3, "sha256": "0" * 64}]}),
        ),
        # not the manifest (names are exact): a data file, an object holding an array of
        # objects, so records seemingly under 'files' the contract does not declare
        Expect(
            {"MANIFEST.JSON": "delivery.layout_mismatch"},
            check=reason_says("MANIFEST.JSON", "'files'", "jsonRecordsPath"),
        ),
    ),
    # ---- links: never followed, never read, rejected by name --------------------------------
    Kind(
        "link_to_other_agency_file",
        "links",
        lambda c: c.link("theirs.csv", c.theirs),
        Expect({"theirs.csv": LINK}, findings={at("theirs.csv"): LINK}),
    ),
    Kind(
        "link_to_host_csv",
        "links",
        lambda c: c.link("host.csv", c.canary),
        Expect({"host.csv": LINK}, findings={at("host.csv"): LINK}),
    ),
    Kind(
        "link_to_etc_passwd",
        "links",
        lambda c: c.link("passwd.csv", PASSWD),
        Expect({"passwd.csv": LINK}, findings={at("passwd.csv"): LINK}),
    ),
    Kind(
        "link_dangling",
        "links",
        lambda c: c.link("gone.csv", c.tmp / "nowhere.csv"),
        Expect({"gone.csv": LINK}, findings={at("gone.csv"): LINK}),
    ),
    Kind(
        "link_loop",
        "links",
        seq(lambda c: c.link("a.csv", "b.csv"), lambda c: c.link("b.csv", "a.csv")),
        Expect({"a.csv": LINK, "b.csv": LINK}, findings={at("a.csv"): LINK, at("b.csv"): LINK}),
    ),
    Kind(
        "link_to_itself",
        "links",
        lambda c: c.link("self.csv", "self.csv"),
        Expect({"self.csv": LINK}, findings={at("self.csv"): LINK}),
    ),
    Kind(
        "link_relative_climb",
        "links",
        lambda c: c.link("up.csv", f"../../../{OTHER}/{DATASET}/{D}/theirs.csv"),
        Expect({"up.csv": LINK}, findings={at("up.csv"): LINK}),
    ),
    Kind(
        "link_to_a_folder",
        "links",
        lambda c: c.link("dir.csv", c.other_day),
        Expect({"dir.csv": LINK}, findings={at("dir.csv"): LINK}),
    ),
    Kind(
        "link_with_hidden_name",
        "links",
        lambda c: c.link(".host.csv", c.canary),
        Expect(findings={at(".host.csv"): HIDDEN}),
    ),
    Kind(
        "link_to_good_file_in_same_day",
        "links",
        lambda c: c.link("again.csv", "good.csv"),
        Expect({"again.csv": LINK}, findings={at("again.csv"): LINK}),
    ),
    Kind(
        "hard_link_within_the_day",
        "links",
        seq(csv("h.csv", TWO), hard_link("copy.csv", lambda c: c.day / "h.csv")),
        # two names of one file: neither is read (whose data is it?), both are named
        Expect({"h.csv": "delivery.hard_link", "copy.csv": "delivery.hard_link"}),
    ),
    Kind(
        "hard_link_to_host_file",
        "links",
        hard_link("host.csv", lambda c: c.canary),
        Expect({"host.csv": "delivery.hard_link"}),
    ),
    Kind(
        "hard_link_to_other_agency_file",
        "links",
        hard_link("theirs.csv", lambda c: c.theirs),
        Expect({"theirs.csv": "delivery.hard_link"}),
    ),
    Kind(
        "day_folder_link_to_other_agency",
        "links",
        lambda c: (c.day.parent.mkdir(parents=True), c.day.symlink_to(c.other_day)),
        Expect({D: LINK}, findings={DAY_PATH: LINK}, run=False),
        good=False,
    ),
    Kind(
        "day_folder_dangling_link",
        "links",
        lambda c: (c.day.parent.mkdir(parents=True), c.day.symlink_to(c.tmp / "nowhere")),
        Expect({D: LINK}, findings={DAY_PATH: LINK}, run=False),
        good=False,
    ),
    Kind(
        "dataset_folder_link_to_other_agency",
        "links",
        lambda c: (
            c.day.parent.parent.mkdir(parents=True),
            c.day.parent.symlink_to(c.other_day.parent),
        ),
        Expect({D: LINK}, findings={f"{AGENCY}/{DATASET}": LINK}, run=False),
        good=False,
    ),
    Kind(
        "agency_folder_link_to_other_agency",
        "links",
        lambda c: (c.landing / AGENCY).symlink_to(c.landing / OTHER),
        Expect({D: LINK}, findings={AGENCY: LINK, f"{AGENCY}/{DATASET}": LINK}, run=False),
        good=False,
    ),
    # ---- folders and special files -------------------------------------------------------
    Kind(
        "subfolder_with_files",
        "folders",
        in_folder(AGENCY, DATASET, D, "sub", name="more.csv"),
        Expect({"sub": NOT_FILE}, findings={at("sub"): NOT_FILE}),
    ),
    Kind(
        "folder_named_like_a_file",
        "folders",
        in_folder(AGENCY, DATASET, D, "more.csv", name="inner.csv"),
        Expect({"more.csv": NOT_FILE}, findings={at("more.csv"): NOT_FILE}),
    ),
    Kind(
        "empty_subfolder",
        "folders",
        lambda c: (c.day / "empty").mkdir(parents=True),
        Expect({"empty": NOT_FILE}, findings={at("empty"): NOT_FILE}),
    ),
    Kind(
        "fifo",
        "folders",
        lambda c: os.mkfifo(c.day / "pipe.csv"),
        Expect({"pipe.csv": NOT_FILE}, findings={at("pipe.csv"): NOT_FILE}),
    ),
    Kind(
        "unix_socket",
        "folders",
        lambda c: c.socket("sock.csv"),
        Expect({"sock.csv": NOT_FILE}, findings={at("sock.csv"): NOT_FILE}),
    ),
    Kind(
        "device_node",
        "folders",
        mknod_null,
        Expect({"null.csv": NOT_FILE}, findings={at("null.csv"): NOT_FILE}),
    ),
    Kind(
        "empty_day_folder",
        "folders",
        lambda c: c.day.mkdir(parents=True),
        Expect(run=False),  # nothing delivered yet: no run, nothing to report
        good=False,
    ),
    Kind(
        "day_folder_is_a_file",
        "folders",
        lambda c: c.write(D, text(TWO), c.day.parent),
        Expect({D: NOT_FOLDER}, findings={DAY_PATH: NOT_FOLDER}, run=False),
        good=False,
    ),
    Kind(
        "day_folder_is_a_fifo",
        "folders",
        lambda c: (c.day.parent.mkdir(parents=True), os.mkfifo(c.day)),
        Expect({D: NOT_FOLDER}, findings={DAY_PATH: NOT_FOLDER}, run=False),
        good=False,
    ),
    Kind(
        "day_named_latest",
        "folders",
        in_folder(AGENCY, DATASET, "latest"),
        Expect(findings={f"{AGENCY}/{DATASET}/latest": UNKNOWN}),
    ),
    Kind(
        "day_impossible_date",
        "folders",
        in_folder(AGENCY, DATASET, "2026-02-30"),
        Expect(findings={f"{AGENCY}/{DATASET}/2026-02-30": UNKNOWN}),
    ),
    Kind(
        "day_before_onboarding",
        "folders",
        in_folder(AGENCY, DATASET, "2025-12-31"),
        Expect(findings={f"{AGENCY}/{DATASET}/2025-12-31": UNKNOWN}),
    ),
    Kind(
        "day_far_future",
        "folders",
        in_folder(AGENCY, DATASET, "2999-01-01"),
        Expect(findings={f"{AGENCY}/{DATASET}/2999-01-01": UNKNOWN}),
    ),
    Kind(
        "unknown_agency_folder",
        "folders",
        in_folder("nobody", DATASET, D),
        Expect(findings={"nobody": UNKNOWN}),
    ),
    Kind(
        "agency_folder_in_upper_case",
        "folders",
        in_folder(AGENCY.upper(), DATASET, D),
        Expect(findings={AGENCY.upper(): UNKNOWN}),
    ),
    Kind(
        "misspelt_dataset_folder",
        "folders",
        in_folder(AGENCY, "itemz", D),
        Expect(findings={f"{AGENCY}/itemz": UNKNOWN}),
    ),
    Kind(
        "dataset_the_agency_does_not_deliver",
        "folders",
        in_folder(AGENCY, OTHER_DATASET, D),
        Expect(findings={f"{AGENCY}/{OTHER_DATASET}": UNKNOWN}),
    ),
    Kind(
        "file_in_dataset_folder",
        "folders",
        in_folder(AGENCY, DATASET, name="stray.csv"),
        Expect(findings={f"{AGENCY}/{DATASET}/stray.csv": NOT_FOLDER}),
    ),
    Kind(
        "file_in_landing_root",
        "folders",
        in_folder(name="readme.csv"),
        Expect(findings={"readme.csv": UNKNOWN}),
    ),
    Kind(
        "unknown_agency_with_a_name_not_utf8",
        "folders",
        lambda c: c.write(
            "x.csv", text(TWO), Path(os.fsdecode(os.fsencode(c.landing) + b"/bad\xff"))
        ),
        Expect(findings={"bad\\xff": UNKNOWN}),
    ),
    Kind(
        "hidden_agency_folder",
        "folders",
        in_folder(".trash", DATASET, D),
        Expect(findings={".trash": HIDDEN}),
    ),
    Kind(
        "agency_folder_is_a_file",
        "folders",
        lambda c: c.write(AGENCY, text(TWO), c.landing),
        Expect(findings={AGENCY: NOT_FOLDER, f"{AGENCY}/{DATASET}": NOT_FOLDER}, run=False),
        good=False,
    ),
    # ---- encodings -----------------------------------------------------------------------
    Kind(
        "utf16_with_bom",
        "encodings",
        data("h.csv", text(TWO).encode("utf-16")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "utf16_without_bom",
        "encodings",
        data("h.csv", text(TWO).encode("utf-16-le")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "utf8_bom",
        "encodings",
        data("h.csv", "\ufeff" + text(TWO)),
        Expect(
            {"h.csv": None}, curated=2, check=stored("name", {101: "Widget 101", 102: "Widget 102"})
        ),
    ),
    Kind(
        "latin1",
        "encodings",
        data("h.csv", text([row(101, name="Caf\u00e9")]).encode("latin-1")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "cp1252_smart_quotes",
        "encodings",
        data("h.csv", text([row(101, name="\u201cWidget\u201d")]).encode("cp1252")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "utf8_surrogate_cesu",
        "encodings",
        data("h.csv", text([row(101, name="Wid@get")]).encode().replace(b"@", b"\xed\xa0\x80")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "utf8_overlong_slash",
        "encodings",
        data("h.csv", text([row(101, name="Wid@get")]).encode().replace(b"@", b"\xc0\xaf")),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "utf8_cut_at_end_of_file",
        "encodings",
        data("h.csv", text(TWO).encode() + "é".encode()[:1]),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "bad_byte_after_two_mebibytes",
        "encodings",
        data(
            "h.csv",
            text(good_rows(range(1000, 1000 + 40_000))).encode() + b"\xff\n",
        ),
        Expect({"h.csv": ENCODING}),
    ),
    Kind(
        "classic_mac_line_ends",
        "encodings",
        data("h.csv", text(TWO, eol="\r")),
        Expect({"h.csv": None}, curated=2, check=stored("note", {101: "fine", 102: "fine"})),
    ),
    Kind(
        "crlf_line_ends",
        "encodings",
        data("h.csv", text(TWO, eol="\r\n")),
        Expect({"h.csv": None}, curated=2, check=stored("note", {101: "fine", 102: "fine"})),
    ),
    Kind(
        "mixed_lf_and_crlf",
        "encodings",
        data(
            "h.csv",
            f"{HEADER}\r\n{row(101, note='a')}\n{row(102, note='b')}\r\n{row(103, note='c')}",
        ),
        Expect({"h.csv": None}, curated=3, check=stored("note", {101: "a", 102: "b", 103: "c"})),
    ),
    Kind(
        "nul_byte_in_a_value",
        "encodings",
        csv("h.csv", [row(101, name="Wid\x00get"), row(102)]),
        # NUL is a UTF-8 character: the value is kept whole, never cut at the NUL
        Expect(
            {"h.csv": None}, curated=2, check=stored("name", {101: "Wid\x00get", 102: "Widget"})
        ),
    ),
    Kind(
        "zero_width_characters",
        "encodings",
        csv("h.csv", [row("\u200b101"), row(102, name="Wid\u200bget")]),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=1,
            rules=frozenset({"id.type"}),
            check=stored("name", {102: "Wid\u200bget"}),
        ),
    ),
    Kind(
        "rtl_override_in_a_value",
        "encodings",
        csv("h.csv", [row(101, name="\u202egpj.exe"), row(102)]),
        Expect(
            {"h.csv": None},
            curated=2,
            check=stored("name", {101: "\u202egpj.exe", 102: "Widget"}),
        ),
    ),
    Kind(
        "emoji_counted_as_characters",
        "encodings",
        csv("h.csv", [row(101, name="😀" * 40), row(102, name="😀" * 41)]),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=1,
            rules=frozenset({"name.max_length"}),
            check=stored("name", {101: "😀" * 40}),
        ),
    ),
    # ---- structure -----------------------------------------------------------------------
    Kind("empty_file", "structure", data("h.csv", b""), Expect({"h.csv": EMPTY})),
    Kind("header_only", "structure", data("h.csv", HEADER + "\n"), Expect({"h.csv": EMPTY})),
    Kind("blank_lines_only", "structure", data("h.csv", "\n\n\n"), Expect({"h.csv": EMPTY})),
    Kind(
        "duplicate_headers",
        "structure",
        csv("h.csv", [row(101) + ",x"], header=HEADER + ",name"),
        Expect({"h.csv": "delivery.duplicate_columns"}),
    ),
    Kind(
        "duplicate_headers_after_normalising",
        "structure",
        csv("h.csv", [row(101) + ",x"], header=HEADER + ", Name "),
        Expect({"h.csv": "delivery.duplicate_columns"}),
    ),
    Kind(
        "missing_required_column",
        "structure",
        csv("h.csv", ["101,AB12", "102,AB13"], header="id,code"),
        # the rows were read whole: raw keeps them, every one counted as quarantined
        Expect({"h.csv": "delivery.missing_required_columns"}),
    ),
    Kind(
        "extra_columns",
        "structure",
        csv("h.csv", [row(101) + ",=1+2,<b>x</b>", row(102) + ",,"], header=HEADER + ",flex,html"),
        Expect({"h.csv": None}, curated=2, check=unmapped("h.csv", ["flex", "html"])),
    ),
    Kind(
        "reordered_and_respelt_headers",
        "structure",
        csv("h.csv", ["Widget,101,fine", "Gadget,102,ok"], header=" NAME ,Id,Note"),
        Expect({"h.csv": None}, curated=2, check=stored("name", {101: "Widget", 102: "Gadget"})),
    ),
    Kind(
        "short_rows",
        "structure",
        csv("h.csv", [row(101), "102,Widget,AB12", "103"]),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=2,
            rules=frozenset({SHORT_ROW_RULE, "name.required"}),
        ),
    ),
    Kind(
        "long_rows",
        "structure",
        csv("h.csv", [row(101), row(102) + ",surplus,fields"]),
        # a value under no header: the file is rejected, never loaded with the value dropped
        Expect({"h.csv": UNREADABLE}),
    ),
    Kind(
        "unclosed_quote",
        "structure",
        csv("h.csv", [row(101, name='"Wid,get'), row(102)]),
        Expect({"h.csv": UNREADABLE}),
    ),
    Kind(
        "stray_quote_inside_a_value",
        "structure",
        csv("h.csv", [row(101, name='5" pipe'), row(102)]),
        # strict: one such value rejects the whole file, with the reason
        Expect({"h.csv": UNREADABLE}),
    ),
    Kind(
        "header_with_a_quoted_newline",
        "structure",
        data("h.csv", 'id,"na\nme",code\n101,Widget,AB12\n'),
        Expect({"h.csv": "delivery.missing_required_columns"}),
    ),
    Kind(
        "semicolon_separated",
        "structure",
        data("h.csv", text([r.replace(",", ";") for r in TWO], header=HEADER.replace(",", ";"))),
        Expect({"h.csv": "delivery.missing_required_columns"}),
    ),
    Kind(
        "quoted_newlines_and_quotes",
        "structure",
        csv("h.csv", [row(101, name='"two\nlines"'), row(102, name='"say ""hi"", ok"')]),
        Expect(
            {"h.csv": None},
            curated=2,
            check=stored("name", {101: "two\nlines", 102: 'say "hi", ok'}),
        ),
    ),
    Kind(
        "formula_payloads",
        "structure",
        csv(
            "h.csv",
            [
                row(101, name="=1+2"),
                row(102, name="+cmd|'/C calc'!A0"),
                row(103, name="@SUM(A1)", kind="-2+3"),
            ],
        ),
        # stored as delivered (reports escape them: test_reports); an unknown kind is quarantined
        Expect(
            {"h.csv": None},
            curated=2,
            quarantined=1,
            rules=frozenset({"kind.allowed_values"}),
            check=both(
                stored("name", {101: "=1+2", 102: "+cmd|'/C calc'!A0"}),
                provided("kind.allowed_values", ["-2+3"]),
            ),
        ),
    ),
    Kind(
        "html_and_script_payloads",
        "structure",
        csv(
            "h.csv",
            [
                row(101, name="<script>alert(1)</script>"),
                row(102, name='"<img src=x onerror=alert(1)>"'),
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=2,
            check=stored(
                "name", {101: "<script>alert(1)</script>", 102: "<img src=x onerror=alert(1)>"}
            ),
        ),
    ),
    Kind(
        "sql_payload",
        "structure",
        csv("h.csv", [row(101, name="x'); DROP TABLE items;--"), row(102)]),
        Expect(
            {"h.csv": None},
            curated=2,
            check=stored("name", {101: "x'); DROP TABLE items;--", 102: "Widget"}),
        ),
    ),
    # ---- formats: JSON, JSON lines, Parquet --------------------------------------------------
    Kind(
        "json_array_of_objects",
        "formats",
        data("h.json", json.dumps([{"id": 101, "name": "Widget"}, {"id": 102, "name": "Gadget"}])),
        Expect({"h.json": None}, curated=2),
    ),
    Kind(
        "json_single_object",
        "formats",
        data("h.json", json.dumps({"id": 101, "name": "Widget", "kind": "beta", "amount": 5})),
        Expect({"h.json": None}, curated=1, check=stored("amount", {101: 5.0})),
    ),
    Kind(
        "json_wrapped_in_an_object",
        "formats",
        data("h.json", json.dumps({"data": [{"id": 101, "name": "Widget"}]})),
        # never read as one row: the reason names the key the contract should declare
        Expect(
            {"h.json": "delivery.layout_mismatch"},
            check=reason_says("h.json", "under 'data'", "jsonRecordsPath: data"),
        ),
    ),
    Kind("json_empty_array", "formats", data("h.json", "[]"), Expect({"h.json": EMPTY})),
    Kind("json_scalar", "formats", data("h.json", "42"), Expect({"h.json": UNREADABLE})),
    Kind(
        "json_nested_values",
        "formats",
        data("h.json", json.dumps([{"id": 101, "name": {"first": "ab"}, "kind": ["alpha"]}])),
        # nested values are kept as JSON text: a list is no allowed kind
        Expect(
            {"h.json": None},
            quarantined=1,
            rules=frozenset({"kind.allowed_values"}),
            check=provided("kind.allowed_values", ['["alpha"]']),
        ),
    ),
    Kind(
        "json_duplicate_keys",
        "formats",
        data("h.json", '[{"id": 101, "name": "Widget", "name": "Gadget"}]'),
        Expect({"h.json": "delivery.duplicate_columns"}),
    ),
    Kind(
        "jsonl_duplicate_keys",
        "formats",
        data("h.jsonl", '{"id": 101, "name": "Widget", "name": "Gadget"}\n'),
        Expect({"h.jsonl": "delivery.duplicate_columns"}),
    ),
    Kind(
        "jsonl_nested_duplicate_keys",
        "formats",
        data("h.jsonl", '{"id": 101, "name": "Widget", "note": {"a": 1, "a": 2}}\n'),
        # a nested value becomes JSON text: its doubled key would be lost the same way
        Expect({"h.jsonl": "delivery.duplicate_columns"}),
    ),
    Kind(
        "parquet_duplicate_columns",
        "formats",
        parquet_with_twin_columns,
        Expect(
            {"h.parquet": "delivery.duplicate_columns"}, check=reason_says("h.parquet", "'name'")
        ),
    ),
    Kind(
        "json_nested_300_deep",
        "formats",
        data("h.json", '[{"id": 101, "name": ' + "[" * 300 + "]" * 300 + "}]"),
        # read whole, its cost grows much faster than its size (depth 400: 4 s, 1 GB):
        # rejected unparsed past scanning.MAX_JSON_DEPTH, as JSON lines are
        Expect(
            {"h.json": UNREADABLE},
            check=reason_says("h.json", "302 levels deep", f"limit of {MAX_JSON_DEPTH}"),
        ),
    ),
    Kind(
        "jsonl_with_a_bad_line",
        "formats",
        data(
            "h.jsonl", '{"id": 101, "name": "Widget"}\n{"id": 102,\n{"id": 103, "name": "Gadget"}\n'
        ),
        Expect({"h.jsonl": UNREADABLE}),
    ),
    Kind(
        "jsonl_with_blank_lines_and_mixed_types",
        "formats",
        data("h.jsonl", '{"id": 101, "name": "Widget"}\n\n{"id": "102", "name": 5}\n'),
        Expect(
            {"h.jsonl": None},
            curated=1,
            quarantined=1,
            rules=frozenset({"name.min_length"}),
        ),
    ),
    Kind(
        "parquet_typed_columns",
        "formats",
        parquet(
            "h.parquet",
            {
                "id": [101, 102],
                "name": ["Widget", "Gadget"],
                "kind": ["beta", "gamma"],
                "amount": [1.5, 2.0],
                "flag": [True, False],
            },
        ),
        Expect({"h.parquet": None}, curated=2, check=stored("flag", {101: True, 102: False})),
    ),
    Kind(
        "parquet_float_keys",
        "formats",
        parquet("h.parquet", {"id": [5.0, 5.5, 1e20], "name": ["Widget", "Gadget", "Thing"]}),
        Expect(
            {"h.parquet": None},
            curated=1,
            quarantined=2,
            rules=frozenset({"id.type"}),
            check=stored("id", {5: 5}),
        ),
    ),
    Kind(
        "parquet_zero_rows",
        "formats",
        parquet("h.parquet", pl.DataFrame(schema={"id": pl.Int64, "name": pl.String})),
        Expect({"h.parquet": EMPTY}),
    ),
    Kind(
        "parquet_truncated",
        "formats",
        seq(
            parquet("h.parquet", {"id": list(range(101, 300)), "name": ["Widget"] * 199}),
            lambda c: (c.day / "h.parquet").write_bytes((c.day / "h.parquet").read_bytes()[:300]),
        ),
        Expect({"h.parquet": UNREADABLE}),
    ),
    Kind("csv_named_parquet", "formats", csv("h.parquet", TWO), Expect({"h.parquet": UNREADABLE})),
    Kind(
        "parquet_named_csv",
        "formats",
        seq(
            parquet("h.parquet", {"id": [101], "name": ["Widget"]}),
            lambda c: os.replace(c.day / "h.parquet", c.day / "h.csv"),
        ),
        Expect({"h.csv": ENCODING}),
    ),
    # ---- values --------------------------------------------------------------------------
    Kind(
        "key_spellings_of_one_value",
        "values",
        csv(
            "h.csv",
            [
                row(v, code=f"AB{i:02d}")
                for i, v in enumerate(["5", "5.0", "05", "+5", "5e0", '" 5 "', "6"])
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=6,
            rules=frozenset({"id.unique"}),
            check=stored("id", {6: 6}),
        ),
    ),
    Kind(
        "key_repeated_across_files",
        "values",
        seq(csv("a.csv", good_rows([7, 8])), csv("b.csv", [row("7.0"), row("0009")])),
        Expect(
            {"a.csv": None, "b.csv": None},
            curated=2,
            quarantined=2,
            rules=frozenset({"id.unique"}),
            check=stored("id", {8: 8, 9: 9}),
        ),
    ),
    Kind(
        "integer_2_pow_53_plus_1_with_a_point",
        "values",
        csv("h.csv", [row("9007199254740993.0"), row("9007199254740995")]),
        Expect(
            {"h.csv": None},
            curated=2,
            check=stored(
                "id", {9007199254740993: 9007199254740993, 9007199254740995: 9007199254740995}
            ),
        ),
    ),
    Kind(
        "integer_beyond_64_bits",
        "values",
        csv(
            "h.csv",
            [row("9223372036854775808"), row("-9223372036854775809"), row("9223372036854775807")],
        ),
        Expect({"h.csv": None}, curated=1, quarantined=2, rules=frozenset({"id.type"})),
    ),
    Kind(
        "huge_exponents",
        "values",
        csv(
            "h.csv",
            [
                row("1e999999999"),
                row(102, amount="1e400"),
                row(103, amount="1e-400"),
                row(104, amount="2.5e2"),
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=3,
            rules=frozenset({"id.type", "amount.type"}),
            check=stored("amount", {104: 250.0}),
        ),
    ),
    Kind(
        "nan_and_infinities",
        "values",
        csv(
            "h.csv",
            [
                row(101 + i, amount=v)
                for i, v in enumerate(["NaN", "nan", "inf", "-Infinity", "1.0"])
            ],
        ),
        Expect({"h.csv": None}, curated=1, quarantined=4, rules=frozenset({"amount.type"})),
    ),
    Kind(
        "dates_in_many_spellings",
        "values",
        csv(
            "h.csv",
            [
                row(101 + i, day=v)
                for i, v in enumerate(
                    [
                        "2026-01-05",
                        "2026-1-5",
                        "05/01/2026",
                        "2026/01/05",
                        "20260105",
                        "Jan 5 2026",
                        "2026-02-30",
                        "2026-01-05T00:00:00",
                        "0000-00-00",
                        "2026-01-05Z",
                    ]
                )
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=2,
            quarantined=8,
            rules=frozenset({"day.type"}),
            check=provided(
                "day.type",
                [
                    "05/01/2026",
                    "2026/01/05",
                    "20260105",
                    "Jan 5 2026",
                    "2026-02-30",
                    "2026-01-05T00:00:00",
                    "0000-00-00",
                    "2026-01-05Z",
                ],
            ),
        ),
    ),
    Kind(
        "whitespace_only_and_null_spelt_keys",
        "values",
        csv("h.csv", [row('"   "'), row('"\t"'), row("NA"), row("na"), row(105)]),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=4,
            rules=frozenset({"id.required", "id.type"}),
        ),
    ),
    Kind(
        "non_ascii_digits_and_separators",
        "values",
        csv(
            "h.csv",
            [
                row("١٢"),
                row(102, amount='"1,000"'),
                row(103, amount="1_000"),
                row(104, amount="0x10"),
            ],
        ),
        Expect({"h.csv": None}, quarantined=4, rules=frozenset({"id.type", "amount.type"})),
    ),
    Kind(
        "boolean_spellings",
        "values",
        csv(
            "h.csv",
            [
                row(101 + i, flag=v)
                for i, v in enumerate(
                    ["TRUE", "yes", "0", "2", "maybe", "\uff54\uff52\uff55\uff45"]
                )
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=3,
            quarantined=3,
            rules=frozenset({"flag.type"}),
            check=stored("flag", {101: True, 102: True, 103: False}),
        ),
    ),
    Kind(
        "out_of_range_values",
        "values",
        csv(
            "h.csv",
            [
                row("-0"),
                row(102, amount="-0.01"),
                row(103, amount="1000.5"),
                row(104, amount="1000"),
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=3,
            rules=frozenset({"id.minimum", "amount.minimum", "amount.maximum"}),
        ),
    ),
    Kind(
        "pattern_and_enum_breakers",
        "values",
        csv(
            "h.csv",
            [
                row(101, code="ab12"),
                row(102, code="AB123"),
                row(103, kind="Alpha"),
                row(104, kind="delta"),
                row(105, kind='" beta "'),
            ],
        ),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=4,
            rules=frozenset({"code.pattern", "kind.allowed_values"}),
        ),
    ),
    Kind(
        "lengths_and_empty_required",
        "values",
        csv(
            "h.csv",
            [row(101, name="A"), row(102, name="x" * 41), row(103, name='""'), row(104, name="Ok")],
        ),
        Expect(
            {"h.csv": None},
            curated=1,
            quarantined=3,
            rules=frozenset({"name.min_length", "name.max_length", "name.required"}),
        ),
    ),
    Kind(
        "cross_column_expression",
        "values",
        csv("h.csv", [row(101, kind=""), row(102, kind="", amount="")]),
        Expect({"h.csv": None}, curated=1, quarantined=1, rules=frozenset({"amount_needs_kind"})),
    ),
    Kind(
        "warning_only_rule",
        "values",
        csv("h.csv", [row(101, note="n" * 81), row(102)]),
        # a warning loads the row and is recorded beside it
        Expect({"h.csv": None}, curated=2, warned=1, rules=frozenset({"note.max_length"})),
    ),
    Kind(
        "field_of_16_mebibytes",
        "sizes",
        csv("h.csv", [row(101, note="x" * (16 << 20)), row(102)]),
        # bounded memory per field (issue 13 item 7): rejected before it is parsed
        Expect({"h.csv": FIELD_TOO_LONG}),
    ),
    # ---- sizes -----------------------------------------------------------------------------
    Kind(
        "header_over_the_header_limit",
        "sizes",
        data("h.csv", "x," * 600_000 + "id\n1\n"),
        Expect({"h.csv": UNREADABLE}),
    ),
    Kind(
        "many_columns",
        "sizes",
        data(
            "h.csv",
            text(
                [row(101) + ",v" * 20_000], header=HEADER + "".join(f",x{i}" for i in range(20_000))
            ),
        ),
        Expect({"h.csv": None}, curated=1),
    ),
    Kind(
        "sparse_8_gib_without_a_line_end",
        "sizes",
        lambda c: c.sparse("h.csv", 8 << 30),
        Expect({"h.csv": UNREADABLE}),
    ),
    Kind(
        "sparse_hole_after_the_header",
        "sizes",
        # a preallocated or crashed copy: a record, then 16 MiB of NUL bytes
        lambda c: c.sparse("h.csv", 16 << 20, text([row(101)]).encode()),
        Expect({"h.csv": FIELD_TOO_LONG}),
    ),
    Kind(
        "record_over_the_line_limit",
        "sizes",
        # ten fields of 900 KiB: each under the field limit, the record over the line limit
        csv(
            "h.csv",
            [",".join([row(101), *["y" * (900 << 10)] * 10])],
            header=HEADER + "".join(f",x{i}" for i in range(10)),
        ),
        Expect({"h.csv": "delivery.line_too_long"}),
    ),
    Kind(
        "quoted_multiline_field_over_the_limit",
        "sizes",
        csv("h.csv", [row(101, note='"' + "a\n" * (600 << 10) + '"'), row(102)]),
        Expect({"h.csv": FIELD_TOO_LONG}),
    ),
    Kind(
        "json_value_over_the_field_limit",
        "sizes",
        data("h.json", json.dumps([{"id": 101, "name": "Widget", "note": "z" * (2 << 20)}])),
        Expect({"h.json": FIELD_TOO_LONG}),
    ),
    Kind(
        "json_document_over_the_line_limit",
        "sizes",
        data(
            "h.json",
            json.dumps([{"id": i, "name": "Widget", "note": "z" * 1000} for i in range(9000)]),
        ),
        # the array is streamed: each element is a record, so 9.3 MB of 9,000 small ones
        # load (alone: ids 1-3 would make good.csv's rows duplicates)
        Expect(
            {"h.json": None},
            curated=8999,
            quarantined=1,
            warned=8999,
            rules=frozenset({"id.minimum", "note.max_length"}),
        ),
        good=False,
    ),
    Kind(
        "jsonl_value_over_the_field_limit",
        "sizes",
        data("h.jsonl", json.dumps({"id": 101, "name": "Widget", "note": "z" * (2 << 20)}) + "\n"),
        Expect({"h.jsonl": FIELD_TOO_LONG}),
    ),
    Kind(
        "parquet_value_over_the_field_limit",
        "sizes",
        # compressed, the file is small: the page headers say what it would decompress to
        parquet("h.parquet", {"id": [101], "name": ["Widget"], "note": ["q" * (2 << 20)]}),
        Expect({"h.parquet": FIELD_TOO_LONG}),
    ),
    # ---- writers at work --------------------------------------------------------------------
    Kind(
        "grows_while_read",
        "writers",
        csv("h.csv", good_rows(range(101, 151))),
        Expect({"h.csv": "delivery.changed_while_reading"}),
        chunk_rows=10,
        during_read=append_row,
        target="h.csv",
    ),
    Kind(
        "cut_short_while_read",
        "writers",
        csv("h.csv", good_rows(range(101, 151))),
        Expect({"h.csv": "delivery.changed_while_reading"}),
        chunk_rows=10,
        during_read=cut_short,
        target="h.csv",
    ),
    Kind(
        "replaced_by_rename_while_read",
        "writers",
        csv("h.csv", good_rows(range(101, 151))),
        # a rename leaves the open file whole: the complete version read loads, all of it
        Expect({"h.csv": None}, curated=50),
        chunk_rows=10,
        during_read=replace_atomically,
        target="h.csv",
    ),
    Kind(
        "vanished_after_listing",
        "writers",
        csv("h.csv", TWO),
        Expect({"h.csv": "delivery.vanished"}),
        after_listing=vanish,
    ),
    Kind(
        "written_after_the_marker",
        "writers",
        marker_then_file,
        Expect(
            {"h.csv": "delivery.changed_after_marker"},
            findings={DAY_PATH: INCOMPLETE},
            run=False,
        ),
    ),
    Kind(
        "upload_inside_the_quiet_period",
        "writers",
        csv("h.csv", TWO),
        # still being written, for all the sensor knows: no run yet, nothing to report
        Expect({"h.csv": None}, curated=2, run=False),
        scan_after=0.0,
    ),
    Kind(
        "mtime_in_the_future",
        "writers",
        future_mtime,
        # judged by its ctime (the kernel's): quiet, then loaded like any file
        Expect({"h.csv": None}, curated=2),
    ),
    Kind(
        "marker_required_but_missing",
        "writers",
        csv("h.csv", TWO),
        Expect({"h.csv": None}, curated=2, findings={DAY_PATH: INCOMPLETE}, run=False),
        marker_required=True,
    ),
    Kind(
        "marker_required_and_written_last",
        "writers",
        seq(
            csv("h.csv", TWO),
            lambda c: c.age(c.day / "h.csv", 60),
            lambda c: c.age(c.day / "good.csv", 60),
            data(SUCCESS, b""),
        ),
        Expect({"h.csv": None}, curated=2),
        marker_required=True,
    ),
    Kind(
        "marker_is_a_folder",
        "writers",
        lambda c: (c.day / SUCCESS).mkdir(parents=True),
        Expect(findings={at(SUCCESS): NOT_FILE}),
    ),
    # ---- manifests -------------------------------------------------------------------------
    Kind(
        "manifest_not_json",
        "manifests",
        data("manifest.json", "{files: nope"),
        Expect({"good.csv": "delivery.manifest_invalid"}),
    ),
    Kind(
        "manifest_lists_a_missing_file",
        "manifests",
        lambda c: (c.day / "manifest.json").write_text(
            json.dumps(
                {
                    "files": [
                        {
                            "name": "good.csv",
                            "rows": GOOD_ROWS,
                            "sha256": hashlib.sha256((c.day / "good.csv").read_bytes()).hexdigest(),
                        },
                        {"name": "absent.csv", "rows": 2, "sha256": "a" * 64},
                    ]
                }
            )
        ),
        Expect({"absent.csv": "delivery.manifest_missing_file"}),
    ),
    Kind(
        "manifest_misses_a_delivered_file",
        "manifests",
        seq(manifest({"good.csv": GOOD_ROWS}), csv("extra.csv", TWO)),
        Expect({"extra.csv": "delivery.manifest_unlisted_file"}),
    ),
    Kind(
        "manifest_sha256_differs",
        "manifests",
        seq(
            csv("h.csv", TWO),
            manifest({"good.csv": GOOD_ROWS, "h.csv": 2}, csv("h.csv", TWO[::-1])),
        ),
        Expect({"h.csv": "delivery.manifest_sha256_mismatch"}),
    ),
    Kind(
        "manifest_row_count_differs",
        "manifests",
        seq(csv("h.csv", TWO), manifest({"good.csv": GOOD_ROWS, "h.csv": 5})),
        Expect({"h.csv": "delivery.manifest_row_count_mismatch"}),
    ),
    Kind(
        "manifest_is_a_link",
        "manifests",
        lambda c: c.link("manifest.json", PASSWD),
        Expect({"good.csv": "delivery.manifest_invalid"}, findings={at("manifest.json"): LINK}),
    ),
    Kind(
        "manifest_is_a_fifo",
        "manifests",
        lambda c: os.mkfifo(c.day / "manifest.json"),
        Expect({"good.csv": "delivery.manifest_invalid"}, findings={at("manifest.json"): NOT_FILE}),
    ),
    Kind(
        "manifest_over_4_mebibytes",
        "manifests",
        lambda c: c.sparse("manifest.json", 5 << 20, b'{"files": ['),
        Expect({"good.csv": "delivery.manifest_invalid"}),
    ),
    # ---- paths handed to the loader --------------------------------------------------------
    Kind(
        "path_climbing_with_dot_dot",
        "paths",
        lambda c: None,
        Expect({"theirs.csv": "delivery.outside_landing"}),
        paths=lambda c: [
            c.day / "good.csv",
            c.day / ".." / ".." / ".." / OTHER / DATASET / D / "theirs.csv",
        ],
    ),
]


def _param(kind: Kind) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=kind.xfail)] if kind.xfail else []
    return pytest.param(kind, id=kind.name, marks=marks)


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    return corpus_contract(tmp_path_factory.mktemp("contracts"))


# --- the outcome and the invariants -----------------------------------------------------------


def _rule_matches(expected: str | None, found: str | None) -> bool:
    if expected == ANY_DELIVERY_RULE:
        return found is not None and found.startswith("delivery.")
    return expected == found


def assert_outcome(kind: Kind, ran: Ran) -> None:
    expect = kind.expect
    result = ran.result
    names = [f.file for f in result.files] if result else []
    assert len(names) == len(set(names)), f"two entries reported under one name: {names}"
    outcomes = {f.file: f for f in result.files} if result else {}
    found = {name: (None if f.status == "loaded" else f.rule_id) for name, f in outcomes.items()}
    wanted = kind.expected_files
    assert set(wanted) <= set(found), f"files: {found}"
    wrong = {n: (wanted[n], found[n]) for n in wanted if not _rule_matches(wanted[n], found[n])}
    assert not wrong, f"(expected, found) per file: {wrong}"
    rest = Counter(r for n, r in found.items() if n not in wanted)
    assert rest == Counter(expect.unnamed), f"files: {found}"

    others = [f for name, f in outcomes.items() if name != "good.csv" and f.status == "loaded"]
    counts = (
        sum(f.rows_curated for f in others),
        sum(f.rows_quarantined for f in others),
        sum(f.rows_with_warnings for f in others),
    )
    assert counts == (expect.curated, expect.quarantined, expect.warned), (
        "(curated, quarantined, warned) of the files but good.csv"
    )
    if wanted.get("good.csv", "absent") is None:
        good = outcomes["good.csv"]
        assert (good.rows_read, good.rows_curated, good.rows_quarantined) == (
            GOOD_ROWS,
            GOOD_ROWS,
            0,
        )

    fired = (
        {
            r
            for (r,) in ran.conn.execute(
                "SELECT rule_id FROM items_quarantine WHERE rule_id NOT LIKE 'delivery.%' "
                "UNION SELECT rule_id FROM items_warnings"
            ).fetchall()
        }
        if result
        else set()
    )
    assert fired == set(expect.rules), "row rules fired"

    assert ran.findings == dict(expect.findings), "sensor findings"
    assert (DAY_PATH in ran.runs) == expect.run, f"runs requested: {sorted(ran.runs)}"
    if expect.check is not None:
        assert result is not None
        expect.check(ran.conn, result)


def assert_invariants(kind: Kind, ran: Ran) -> None:
    conn, result = ran.conn, ran.result
    # isolation: another agency's delivery is always picked up, whatever this one did
    assert f"{OTHER}/{DATASET}/{D}" in ran.runs
    assert ran.scan_seconds < 10 and ran.load_seconds < 30, (ran.scan_seconds, ran.load_seconds)

    # confinement: nothing from outside the agency's landing folder is stored anywhere
    stored_text = everything_stored(ran)
    for token in (CANARY, THEIRS, PASSWD_LINE):
        assert token not in stored_text, f"{token!r} was read from outside the agency's landing"
    assert not list((ran.ctx.warehouse / "raw").rglob(".staging-*")), "staging left behind"

    # classified outcomes only
    known = delivery_rule_ids()
    row_rules = ran.contract.rule_ids | fixed_row_rule_ids()
    for path, rule in ran.findings.items():
        assert rule in known and ran.reasons[path].strip(), (path, rule)
    assert_nothing_unreported(kind, ran)
    if result is None:
        return
    quarantine_rules = {
        r for (r,) in conn.execute("SELECT DISTINCT rule_id FROM items_quarantine").fetchall()
    }
    warning_rules = {
        r for (r,) in conn.execute("SELECT DISTINCT rule_id FROM items_warnings").fetchall()
    }
    assert quarantine_rules <= known | row_rules and warning_rules <= row_rules

    raw = raw_rows(ran.raw_dir)
    raw_by_file = dict(raw.group_by("_file").len().iter_rows()) if raw.height else {}
    logged = {
        printable(f): (status, rule, rows)
        for f, status, rule, rows in conn.execute(
            "SELECT file, status, rule_id, rows_read FROM _flux_deliveries"
        ).fetchall()
    }
    errors = {(e.file, e.rule_id) for e in result.errors}
    for f in result.files:
        assert "Traceback" not in (f.reason or "")
        assert logged[f.file] == (f.status, f.rule_id, f.rows_read), "deliveries log"
        curated = one(conn, "SELECT count(*) FROM items WHERE _file = ?", f.file)
        quarantined = one(
            conn,
            "SELECT count(DISTINCT _row_number) FROM items_quarantine "
            "WHERE _file = ? AND _row_number IS NOT NULL",
            f.file,
        )
        if f.status == "loaded":
            # nothing lost: rows read = curated + quarantined, recounted; raw holds them all
            assert f.rows_read == raw_by_file.get(f.file, 0) == curated + quarantined, f.file
            assert (f.rows_curated, f.rows_quarantined) == (curated, quarantined), f.file
            continue
        # a rejected file names its rule, everywhere, and nothing of it is curated
        assert f.status == "rejected" and f.rule_id in known and (f.reason or "").strip(), f
        assert (f.file, f.rule_id) in errors
        delivery_rows = conn.execute(
            "SELECT rule_id FROM items_quarantine WHERE _file = ? AND _row_number IS NULL",
            [f.file],
        ).fetchall()
        assert delivery_rows == [(f.rule_id,)], f.file
        assert curated == 0 and quarantined == 0, f.file
        if not rejected_keeps_raw(f.rule_id or ""):
            assert raw_by_file.get(f.file, 0) == 0, f"raw rows of rejected {f.file}"
        else:
            assert f.rows_read == raw_by_file.get(f.file, 0) == f.rows_quarantined, f.file


def assert_nothing_unreported(kind: Kind, ran: Ran) -> None:
    """Every entry under landing/ is in a load's outcome, reported, or a folder holding them."""
    if kind.scan_after < HIDDEN_GRACE_SECONDS:
        return  # a delivery still in its quiet period is waiting, not ignored
    delivered = {f.file for f in ran.result.files} if ran.result else set()
    for entry in landing_entries(ran.ctx.landing):
        shown = printable(entry)
        parts = shown.split("/")
        if any("/".join(parts[:i]) in ran.findings for i in range(1, len(parts) + 1)):
            continue
        path = ran.ctx.landing / entry
        if len(parts) <= 3 and is_real_dir(path):
            continue  # an agency, dataset or day folder (what is wrong in it is reported)
        day = "/".join(parts[:3])
        assert len(parts) == 4 and day in ran.runs, f"{shown} is neither loaded nor reported"
        if day == DAY_PATH and is_data_file_name(parts[3]):
            name = display_name(Path(entry))  # as the load shows it (marked if not UTF-8)
            assert name in delivered, f"{shown} was run but not in the load's outcome"
        else:
            assert day != DAY_PATH or is_control_name(parts[3]), shown


@pytest.mark.parametrize("kind", [_param(k) for k in KINDS])
def test_hostile_kind(
    kind: Kind, tmp_path: Path, contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind.during_read is not None:
        real = delivery_module.read_chunks
        fired: list[bool] = []

        def writer_at_work(facts: Any, chunk_rows: int = 1000) -> Any:
            for chunk in real(facts, chunk_rows):
                if facts.path.name == kind.target and not fired:
                    fired.append(True)
                    kind.during_read(Ctx(tmp_path))  # type: ignore[misc]
                yield chunk

        monkeypatch.setattr(delivery_module, "read_chunks", writer_at_work)
    ran = run_kind(kind, tmp_path, contract)
    try:
        assert_outcome(kind, ran)
        assert_invariants(kind, ran)
    finally:
        ran.conn.close()


# --- the corpus covers every rule ---------------------------------------------------------------


def test_the_corpus_is_a_table_of_at_least_60_named_kinds(contract: Contract) -> None:
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names)), "kind names repeat"
    assert len(KINDS) >= 60
    families = {k.family for k in KINDS}
    assert families >= {
        "names",
        "links",
        "folders",
        "encodings",
        "structure",
        "formats",
        "values",
        "sizes",
        "writers",
        "manifests",
    }
    # the test contract compiles a rule of every row-rule kind, so each can be fed a file
    compiled = {r.kind for r in contract.rules}
    assert compiled == set(typing.get_args(RuleKind))


def test_every_rule_has_a_hostile_kind(contract: Contract) -> None:
    """Every fixed ``delivery.*`` rule (the catalogue's and the landing rules) and every
    row-rule kind the validator produces is the expected outcome of a kind that passes today;
    a rule no file can trigger is listed in ``UNREACHABLE_BY_A_FILE`` with the reason."""
    passing = [k for k in KINDS if not k.xfail]
    named = {r for k in passing for r in k.rules_expected}
    delivery = delivery_rule_ids()
    assert set(UNREACHABLE_BY_A_FILE) <= delivery, "an unreachable rule left the catalogue"
    assert not set(UNREACHABLE_BY_A_FILE) & named, "a rule listed unreachable has a kind"
    missing = sorted(delivery - named - set(UNREACHABLE_BY_A_FILE))
    assert not missing, f"delivery rules without a hostile kind: {missing}"

    row_kinds = set(typing.get_args(RuleKind)) | fixed_row_rule_ids()
    covered = {row_rule_kind(contract, r) for r in named if not r.startswith("delivery.")}
    missing_kinds = sorted(row_kinds - covered)
    assert not missing_kinds, f"row-rule kinds without a hostile kind: {missing_kinds}"
    # and every row rule of the test contract fires in some kind
    unfired = sorted(contract.rule_ids - named)
    assert not unfired, f"row rules of the test contract no kind fires: {unfired}"
