"""Hostile content deliveries (issue 16, part B): each bad file built here in tmp yields
exactly its rule on exactly its file, nothing crashes, and stored rows plus quarantined
files account for every file of the package.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path

import duckdb
import pytest
from PIL import Image
from pypdf import PdfWriter

from flux_pipelines.content.load import ContentResult
from flux_pipelines.content.pdf_probe import probe
from flux_pipelines.contracts.model import Contract
from flux_pipelines.names import CONTENT_FOLDER
from flux_pipelines_tests.test_content_package import (
    PNG,
    accounted,
    day_folder,
    entry,
    items_contract,
    load,
    load_metadata,
    png_bytes,
    quarantined,
    stored,
    write_flux_manifest,
)


def pdf_bytes(*, password: str | None = None) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, "GIF")
    return buffer.getvalue()


def glb_bytes() -> bytes:
    """A minimal glTF binary: header and one JSON chunk."""
    chunk = b'{"asset":{"version":"2.0"}}'
    chunk += b" " * (-len(chunk) % 4)
    return (
        struct.pack("<4sII", b"glTF", 2, 20 + len(chunk))
        + struct.pack("<I4s", len(chunk), b"JSON")
        + chunk
    )


def wav_bytes(frames: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * frames)
    return buffer.getvalue()


# file -> (bytes, media type declared in the manifest or None, the one rule expected)
HOSTILE: dict[str, tuple[bytes, str | None, str]] = {
    "zero.png": (b"", None, "content.empty_file"),
    "half.png": (
        png_bytes(300, 200)[: len(png_bytes(300, 200)) // 2],
        None,
        "content.image_unreadable",
    ),
    "photo.jpg": (pdf_bytes(), None, "content.type_mismatch"),  # a PDF named .jpg
    "locked.pdf": (pdf_bytes(password="secret"), None, "content.pdf_encrypted"),
    "broken.pdf": (b"%PDF-1.7\n" + os.urandom(4096), None, "content.pdf_malformed"),
    "wide.txt": (
        "Récit, 1895\nligne 2\n".encode("utf-16"),
        "text/plain; charset=utf-8",
        "content.text_encoding",
    ),
    "cut.jpg": (b"\xff\xd8\xff\xe0" + bytes(2000), None, "content.image_unreadable"),
    "fake.png": (gif_bytes(), "image/png", "content.type_mismatch"),  # a GIF declared PNG
    "latin.txt": ("Café crème\n".encode("latin-1"), None, "content.text_encoding"),
    "deep.json": (b"[" * 200_000, None, "content.type_mismatch"),  # no parser recursion crash
    "cut.glb": (glb_bytes()[:30], None, "content.unreadable"),
    "cut.wav": (wav_bytes()[:4000], None, "content.unreadable"),
}


@pytest.fixture
def hostile(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> tuple[Contract, ContentResult]:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    for name, (data, _, _) in HOSTILE.items():
        (content / name).write_bytes(data)
    (content / "good.png").write_bytes(PNG)
    (content / "orphan.png").write_bytes(PNG)
    entries = [
        entry(content, n, **({"media_type": t} if t else {})) for n, (_, t, _) in HOSTILE.items()
    ]
    entries += [entry(content, "good.png"), entry(content, "orphan.png")]
    entries += [
        {"path": "../../etc/passwd", "sha256": "a" * 64},
        {"path": "/etc/passwd", "sha256": "b" * 64},
        {"path": "sub\\..\\..\\x.png", "sha256": "c" * 64},
        {"path": "nul\u0000.png", "sha256": "d" * 64},
    ]
    write_flux_manifest(content, entries)
    links = [*HOSTILE, "good.png", "missing.jpg"]  # orphan.png: no record names it
    load_metadata(conn, contract, day, links, tmp_path)
    return contract, load(conn, contract, day)


def test_each_hostile_file_gets_exactly_its_rule(
    hostile: tuple[Contract, ContentResult], conn: duckdb.DuckDBPyConnection
) -> None:
    contract, _ = hostile
    expected = {f"{CONTENT_FOLDER}/{name}": {rule} for name, (_, _, rule) in HOSTILE.items()}
    expected[f"{CONTENT_FOLDER}/orphan.png"] = {"content.orphan_file"}
    held = quarantined(conn, contract)
    assert {f: r for f, r in held.items() if f in expected} == expected
    assert set(stored(conn, contract)) == {f"{CONTENT_FOLDER}/good.png"}


def test_traversal_entries_and_missing_record_file(
    hostile: tuple[Contract, ContentResult], conn: duckdb.DuckDBPyConnection
) -> None:
    _, result = hostile
    traversal = [p for p in result.problems if p.rule_id == "content.manifest_traversal"]
    assert sorted(p.value or "" for p in traversal) == sorted(
        ["../../etc/passwd", "/etc/passwd", "sub\\\\..\\\\..\\\\x.png", "nul\\x00.png"]
    )
    assert {p.file for p in traversal} == {f"{CONTENT_FOLDER}/manifest.json"}
    [missing] = [p for p in result.problems if p.rule_id == "content.record_file_missing"]
    objectid = len(HOSTILE) + 2  # the record after good.png
    assert (missing.file, missing.record_key) == ("missing.jpg", str(objectid))
    row = conn.execute(
        "SELECT unique_id, severity, message FROM items_quarantine "
        "WHERE rule_id = 'content.record_file_missing'"
    ).fetchone()
    assert row is not None and row[:2] == (str(objectid), "fatal")
    assert row[2].startswith("nga/items: ") and "missing.jpg" in row[2]


def test_every_delivered_file_is_accounted_for(
    hostile: tuple[Contract, ContentResult], conn: duckdb.DuckDBPyConnection
) -> None:
    contract, result = hostile
    files = {f"{CONTENT_FOLDER}/{n}" for n in [*HOSTILE, "good.png", "orphan.png"]}
    accounted(conn, contract, files)
    assert result.files_in == len(files)
    assert (result.files_stored, result.files_quarantined) == (1, len(files) - 1)


def test_messages_name_agency_dataset_and_file(
    hostile: tuple[Contract, ContentResult], conn: duckdb.DuckDBPyConnection
) -> None:
    for file, message, expected in conn.execute(
        "SELECT _file, message, expected FROM items_quarantine WHERE starts_with(_file, 'content/')"
    ).fetchall():
        assert message.startswith("nga/items: ") and file in message, message
        assert expected, file


def test_special_entries_in_the_package_are_refused(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    (content / "a.png").write_bytes(PNG)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    os.symlink(secret, content / "link.png")
    os.mkfifo(content / "pipe.png")
    os.link(secret, content / "hard.png")
    write_flux_manifest(content, [entry(content, "a.png")])
    load_metadata(conn, contract, day, ["a.png", "link.png", "pipe.png", "hard.png"], tmp_path)

    result = load(conn, contract, day)

    held = quarantined(conn, contract)
    assert held[f"{CONTENT_FOLDER}/link.png"] == {"delivery.symlink"}
    assert held[f"{CONTENT_FOLDER}/pipe.png"] == {"delivery.not_a_file"}
    assert held[f"{CONTENT_FOLDER}/hard.png"] == {"content.unlisted_file"}
    assert set(stored(conn, contract)) == {f"{CONTENT_FOLDER}/a.png"}
    assert result.files_in == 4 and result.files_stored == 1


def test_listed_hard_link_is_refused(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    os.link(secret, content / "hard.png")
    write_flux_manifest(content, [entry(content, "hard.png")])
    load_metadata(conn, contract, day, ["hard.png"], tmp_path)

    load(conn, contract, day)

    assert quarantined(conn, contract) == {f"{CONTENT_FOLDER}/hard.png": {"delivery.hard_link"}}


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        (None, "neither bagit.txt"),
        (b"{not json", "not readable JSON"),
        (b'{"files": [{"path": "a.png"}]}', "files.0.sha256"),
    ],
)
def test_unusable_package_quarantines_every_file(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, manifest: bytes | None, why: str
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    (content / "a.png").write_bytes(PNG)
    (content / "b.png").write_bytes(PNG)
    if manifest is not None:
        (content / "manifest.json").write_bytes(manifest)
    load_metadata(conn, contract, day, ["a.png", "b.png"], tmp_path)

    result = load(conn, contract, day)

    assert stored(conn, contract) == {}
    held = quarantined(conn, contract)
    for name in ("a.png", "b.png"):
        assert held[f"{CONTENT_FOLDER}/{name}"] == {"content.package_invalid"}
    assert why in result.problems[0].reason
    assert result.files_in == result.files_quarantined == 2


def test_pdf_reader_that_overruns_is_stopped(tmp_path: Path) -> None:
    """A PDF whose parsing overruns the deadline is reported, the child killed, and the
    next file still read by a fresh child."""
    paths = [tmp_path / "a.pdf", tmp_path / "b.pdf"]
    for path in paths:
        path.write_bytes(pdf_bytes())
    handles = [path.open("rb") for path in paths]
    try:
        slow = probe([h.fileno() for h in handles], timeout_s=0.001)
        quick = probe([h.fileno() for h in handles])
    finally:
        for handle in handles:
            handle.close()
    assert all(f.error and "took over" in f.error and f.pages is None for f in slow)
    assert [(f.pages, f.error) for f in quick] == [(1, None), (1, None)]
