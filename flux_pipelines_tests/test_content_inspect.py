"""Content facts on the real files of ``../shared/data/collections/content`` (issue 16, B).

The 17 files are copied into a Flux content package in tmp (never into the repository) and
loaded with ``load_content``; each fact is compared with the same fact read independently
here: image sizes from the PNG IHDR / JPEG SOF / TIFF IFD bytes, page counts from pypdf
called directly, line counts from ``bytes.splitlines``, WAV durations from the RIFF chunks
(the real WAV's header was never finalised, so stdlib ``wave`` refuses it: that is checked
too) and from ``wave`` on a PCM file written here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

import duckdb
import pypdf
import pytest

from flux_pipelines.content.load import ContentResult, load_content
from flux_pipelines.contracts.model import Contract
from flux_pipelines.names import CONTENT_FOLDER
from flux_pipelines_tests.conftest import DAY
from flux_pipelines_tests.test_content_package import (
    AGENCY,
    day_folder,
    entry,
    items_contract,
    load,
    load_metadata,
    write_flux_manifest,
)

pytestmark = pytest.mark.realdata
# The scene document names its model by the name it was exported under; the copy in
# ../shared/data carries a source prefix, so the package restores the exported name.
GLB_SOURCE = "3d/si-dpo_sea_turtle-20k-thumb.glb"
GLB_PACKAGED = "3d/sea_turtle-20k-thumb.glb"
SCENE = "3d/si-dpo_sea_turtle_scene.svx.json"


@pytest.fixture(scope="module")
def source(real_data: Path) -> Path:
    folder = real_data / "collections" / "content"
    if not folder.is_dir():
        pytest.skip(f"real content files {folder} are absent")
    return folder


@pytest.fixture(scope="module")
def loaded(
    source: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, dict[str, Any]], ContentResult, Path]:
    """Every real file in one content package, each named by one record (the scene
    document by none: it belongs to the model it describes)."""
    tmp_path = tmp_path_factory.mktemp("real_content")
    contract: Contract = items_contract(tmp_path)
    day = day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    paths = []
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = file.relative_to(source).as_posix()
        packaged = GLB_PACKAGED if relative == GLB_SOURCE else relative
        (content / packaged).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, content / packaged)
        paths.append(packaged)
    write_flux_manifest(content, [entry(content, p) for p in paths])
    conn = duckdb.connect(str(tmp_path / "nga.duckdb"))
    try:
        load_metadata(conn, contract, day, [p for p in paths if p != SCENE], tmp_path)
        result = load_content(
            conn,
            contract,
            agency=AGENCY,
            day=DAY,
            folder=content,
            run_id="run-1",
            link_columns=["image_file"],
        )
        cursor = conn.execute("SELECT * FROM items_content")
        names = [d[0] for d in cursor.description]
        rows = {
            row[names.index("path")]: dict(zip(names, row, strict=True))
            for row in cursor.fetchall()
        }
    finally:
        conn.close()
    return rows, result, content


def test_every_real_file_is_stored(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, result, content = loaded
    delivered = sum(1 for p in source.rglob("*") if p.is_file())
    assert result.files_in == result.files_stored == len(rows) == delivered
    assert result.problems_by_rule == {"content.audio_header": 1}  # a warning: still stored
    for path, row in rows.items():
        assert row["sha256"] == hashlib.sha256((content / path).read_bytes()).hexdigest()
        assert row["record_key"] is not None, path


def test_dng_is_a_tiff_image_with_its_real_dimensions(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, _, _ = loaded
    name = "image/si-dpo_nmnh_sea_turtle-1_low-01.dng"
    row = rows[name]
    assert (row["kind"], row["detected_type"], row["container"]) == (
        "image",
        "image/x-adobe-dng",
        "TIFF",
    )
    assert row["declared_type"] == "image/x-adobe-dng"  # agrees: no type mismatch
    assert (row["width"], row["height"]) == _dng_main_image_size((source / name).read_bytes())


def test_jpeg_and_png_dimensions(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, _, _ = loaded
    png = "image/loc-citizen-dj_laguardia.png"
    assert (rows[png]["width"], rows[png]["height"]) == _png_size((source / png).read_bytes())
    jpegs = [p for p in rows if p.endswith(".jpg")]
    assert len(jpegs) == 3
    for jpeg in jpegs:
        expected = _jpeg_size((source / jpeg).read_bytes())
        assert (rows[jpeg]["width"], rows[jpeg]["height"]) == expected, jpeg
        assert rows[jpeg]["detected_type"] == "image/jpeg"


def test_pdf_page_counts(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, _, _ = loaded
    pdfs = sorted(p for p in rows if p.endswith(".pdf"))
    assert len(pdfs) == 4
    for pdf in pdfs:
        with (source / pdf).open("rb") as stream:
            pages = len(pypdf.PdfReader(stream).pages)
        assert rows[pdf]["pages"] == pages > 0, pdf
        assert rows[pdf]["kind"] == "document"


def test_glb_carries_its_scene_documents_rights(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, _, _ = loaded
    scene = json.loads((source / SCENE).read_text(encoding="utf-8"))
    model = rows[GLB_PACKAGED]
    assert (model["kind"], model["detected_type"]) == ("3d", "model/gltf-binary")
    assert model["gltf_version"] == _glb_asset((source / GLB_SOURCE).read_bytes())["version"]
    assert model["sidecar_path"] == SCENE
    assert "All rights reserved" in model["sidecar_rights"]
    assert model["sidecar_rights"] == scene["asset"]["copyright"]
    assert model["rights"] is None  # the model itself states none
    assert rows[SCENE]["kind"] == "3d" and rows[SCENE]["rights"] == scene["asset"]["copyright"]
    assert rows[SCENE]["record_key"] == model["record_key"]  # belongs to the model's record


def test_real_wav_duration_from_its_bytes(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, result, _ = loaded
    name = "audio/loc-fadgi-adctest_hfimd_left_ch_sig.wav"
    data = (source / name).read_bytes()
    with pytest.raises(wave.Error), wave.open(str(source / name)):  # header never finalised
        pass
    channels, rate, block, data_offset = _riff(data)
    row = rows[name]
    assert (row["channels"], row["sample_rate"]) == (channels, rate)
    assert row["duration_s"] == pytest.approx((len(data) - data_offset) // block / rate)
    [warning] = result.problems
    assert warning.rule_id == "content.audio_header" and warning.file.endswith(name)


def test_pcm_wav_duration_equals_frames_over_rate(tmp_path: Path) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    target = day / CONTENT_FOLDER / "tone.wav"
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(b"\x01\x00" * 33075)
    with wave.open(str(target)) as back:
        expected = back.getnframes() / back.getframerate()
    write_flux_manifest(day / CONTENT_FOLDER, [entry(day / CONTENT_FOLDER, "tone.wav")])
    conn = duckdb.connect(str(tmp_path / "nga.duckdb"))
    load_metadata(conn, contract, day, ["tone.wav"], tmp_path)

    result = load(conn, contract, day)

    assert result.problems == ()
    row = conn.execute("SELECT duration_s, channels, sample_rate FROM items_content").fetchone()
    assert row == (pytest.approx(expected), 1, 22050)


def test_text_encodings_and_line_counts(
    source: Path, loaded: tuple[dict[str, dict[str, Any]], ContentResult, Path]
) -> None:
    rows, _, _ = loaded
    texts = sorted(p for p in rows if p.startswith("text/"))
    assert len(texts) == 5
    for text in texts:
        data = (source / text).read_bytes()
        assert rows[text]["line_count"] == len(data.splitlines()), text
        assert rows[text]["encoding"] == ("ascii" if data.isascii() else "utf-8"), text
    alto = rows["text/loc-chronam_ocr_alto.xml"]
    assert alto["detected_type"] == "application/xml" and "<alto>" in alto["detail"]


# --- independent readers -----------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG markers to the first start-of-frame."""
    position = 2
    while position < len(data):
        marker, length = (
            data[position + 1],
            struct.unpack(">H", data[position + 2 : position + 4])[0],
        )
        if marker in {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    raise AssertionError("no start-of-frame marker")


def _dng_main_image_size(data: bytes) -> tuple[int, int]:
    """TIFF IFD0 -> SubIFDs (tag 330) -> the one whose NewSubfileType (254) is 0."""
    order = "<" if data[:2] == b"II" else ">"

    def ifd(offset: int) -> dict[int, list[int]]:
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        tags = {}
        for i in range(count):
            at = offset + 2 + 12 * i
            tag, kind, n = struct.unpack(order + "HHI", data[at : at + 8])
            size = {3: 2, 4: 4}.get(kind)
            if size is None:
                continue
            code = order + ("H" if size == 2 else "I") * n
            where = (
                at + 8 if size * n <= 4 else struct.unpack(order + "I", data[at + 8 : at + 12])[0]
            )
            tags[tag] = list(struct.unpack(code, data[where : where + size * n]))
        return tags

    first = ifd(struct.unpack(order + "I", data[4:8])[0])
    for offset in first[330]:
        sub = ifd(offset)
        if sub.get(254, [0])[0] == 0:
            return sub[256][0], sub[257][0]
    raise AssertionError("no main image sub-IFD")


def _glb_asset(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20 : 20 + length])["asset"]


def _riff(data: bytes) -> tuple[int, int, int, int]:
    """(channels, rate, block align, offset of the samples) from the RIFF chunks."""
    position, fmt = 12, None
    while position + 8 <= len(data):
        chunk, length = (
            data[position : position + 4],
            struct.unpack("<I", data[position + 4 : position + 8])[0],
        )
        if chunk == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[position + 8 : position + 24])
        if chunk == b"data":
            assert fmt is not None
            return fmt[1], fmt[2], fmt[4], position + 8
        position += 8 + length
    raise AssertionError("no data chunk")
