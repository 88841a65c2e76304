"""Per-type facts of a content file, read without loading it whole.

- Images: Pillow's ``Image.open`` reads the header only (no pixel is decoded); a bounded
  ``verify`` (PNG chunk checksums, up to ``IMAGE_VERIFY_MAX_BYTES``), the JPEG end marker
  and TIFF strip extents catch truncated files; an image declaring more pixels than
  Pillow's decompression-bomb limit is refused. A TIFF with a DNGVersion tag is a DNG: its
  full-resolution size comes from the sub-IFD marked as the main image (IFD0 is a preview).
- Text: the whole file is decoded as a stream (1 MiB at a time) to prove its encoding and
  count its lines.
- JSON (up to ``JSON_MAX_BYTES``): parsed; a glTF JSON or Voyager scene document gives its
  version, generator and rights (``asset.copyright``) and the files it references.
- glTF binary: the 12-byte header and the JSON chunk (bounded).
- WAV: stdlib ``wave``; where it cannot read the file (IEEE float, extensible, a header
  never finalised by a streaming writer), the RIFF chunks are walked with ``struct``.

Every library error is caught by its type here and returned as a classified problem.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from PIL import Image, TiffImagePlugin

from flux_pipelines.content.detect import DNG, GLTF_JSON, Detected
from flux_pipelines.ingest.confine import ConfinedFile

IMAGE_VERIFY_MAX_BYTES = 64 << 20  # PNG verify holds one chunk at a time; bounded anyway
JSON_MAX_BYTES = 16 << 20  # a sidecar or glTF JSON chunk is parsed whole, up to this
TAIL_BYTES = 4096
MAX_URIS = 10_000
_CHUNK = 1 << 20
# What Pillow raises on a hostile or damaged header (it has no single base class).
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
    Image.DecompressionBombError,
)
_DNG_VERSION, _SUB_IFDS, _NEW_SUBFILE_TYPE = 50706, 330, 254
_PHOTOMETRIC = {32803: "CFA", 34892: "LinearRaw"}
_XML_ROOT = re.compile(r"<([A-Za-z_][\w.:-]*)")
_XML_SKIP = re.compile(r"\s*(<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)", re.S | re.I)
# Encodings the bytes themselves show (a byte-order mark, UTF-16's NULs) -> their family.
_WIDE_FAMILY = {
    "utf-8-sig": "utf-8",
    "utf-16-le": "utf-16",
    "utf-16-be": "utf-16",
    "utf-32-le": "utf-32",
    "utf-32-be": "utf-32",
}
_WAV_FORMATS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law", 0xFFFE: "extensible"}


@dataclass
class Facts:
    """What a file's bytes say, by type; problems found on the way."""

    width: int | None = None
    height: int | None = None
    image_mode: str | None = None
    pages: int | None = None
    encoding: str | None = None
    line_count: int | None = None
    channels: int | None = None
    sample_rate: int | None = None
    duration_s: float | None = None
    gltf_version: str | None = None
    gltf_generator: str | None = None
    rights: str | None = None  # a rights statement the file carries itself
    references: tuple[str, ...] = ()  # uris a glTF / scene document names
    details: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (rule id, reason)

    def problem(self, rule_id: str, reason: str) -> None:
        self.problems.append((rule_id, reason))


# --- images ----------------------------------------------------------------------------------


def image_facts(handle: ConfinedFile, detected: Detected, size: int) -> tuple[Detected, Facts]:
    facts = Facts()
    if not pillow_reads(detected.media_type):  # HEIC, camera raws: typed, not described
        facts.details.append(f"no image facts: Pillow does not read {detected.media_type}")
        return detected, facts
    with handle.reopen() as stream:
        try:
            with Image.open(stream) as image:
                facts.width, facts.height = image.size
                facts.image_mode = image.mode
                image_format = image.format or ""
                if image_format == "TIFF" and isinstance(image, TiffImagePlugin.TiffImageFile):
                    detected = _tiff(image, stream, size, detected, facts)
        except _PIL_ERRORS as exc:
            facts.problem("content.image_unreadable", f"Pillow cannot read it ({_words(exc)})")
            return detected, facts
    if facts.problems:
        return detected, facts
    _bomb(facts)
    _truncation(handle, image_format, size, facts)
    return detected, facts


def pillow_reads(media_type: str) -> bool:
    """Whether Pillow has a reader for the image type (so its failure means a damaged file)."""
    Image.init()
    return media_type in Image.MIME.values()


def _tiff(
    image: TiffImagePlugin.TiffImageFile,
    stream: BinaryIO,
    size: int,
    detected: Detected,
    facts: Facts,
) -> Detected:
    tags = image.tag_v2
    _strips_fit(tags, size, "IFD0", facts)
    if _DNG_VERSION not in tags:
        return detected
    version = ".".join(str(b) for b in bytes(tags[_DNG_VERSION])[:4])
    preview = f"{facts.width}x{facts.height}"
    main = _dng_main_ifd(tags, stream)
    if main is not None:
        facts.width, facts.height = int(main[256]), int(main[257])
        photometric = int(main.get(262, 0))
        facts.image_mode = _PHOTOMETRIC.get(photometric, facts.image_mode)
        _strips_fit(main, size, "the main image", facts)
        facts.details.append(
            f"DNG {version} raw in a TIFF container; full-resolution image "
            f"{facts.width}x{facts.height} (IFD0 is a {preview} preview)"
        )
    else:
        facts.details.append(f"DNG {version} in a TIFF container; no main image sub-IFD found")
    return detected.refined(DNG, container="TIFF")


def _dng_main_ifd(tags: Any, stream: BinaryIO) -> dict[int, Any] | None:
    """The sub-IFD whose NewSubfileType is 0 (the full-resolution raw image), if any."""
    offsets = tags.get(_SUB_IFDS) or ()
    offsets = (offsets,) if isinstance(offsets, int) else tuple(offsets)[:8]
    stream.seek(0)
    header = stream.read(8)
    for offset in offsets:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(header)
        try:
            stream.seek(int(offset))
            ifd.load(stream)
        except _PIL_ERRORS:
            continue
        if int(ifd.get(_NEW_SUBFILE_TYPE, 0)) == 0 and 256 in ifd and 257 in ifd:
            return dict(ifd)
    return None


def _strips_fit(tags: Any, size: int, which: str, facts: Facts) -> None:
    """A TIFF's strips (or tiles) end inside the file; else it was cut short."""
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = (offsets,) if isinstance(offsets, int) else tuple(offsets)
        counts = (counts,) if isinstance(counts, int) else tuple(counts)
        end = max((int(o) + int(c) for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            facts.problem(
                "content.image_unreadable",
                f"the TIFF's {which} data runs to byte {end:,} but the file has {size:,} bytes: "
                "it is truncated; deliver the complete file",
            )


def _bomb(facts: Facts) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and facts.width and facts.height and facts.width * facts.height > 2 * limit:
        facts.problem(
            "content.image_unreadable",
            f"it declares {facts.width}x{facts.height} pixels, over twice Pillow's "
            f"decompression-bomb limit ({limit:,} pixels): no tool should decode it as is",
        )


def _truncation(handle: ConfinedFile, image_format: str, size: int, facts: Facts) -> None:
    if image_format == "JPEG":
        tail = _tail(handle, size)
        if b"\xff\xd9" not in tail:
            facts.problem(
                "content.image_unreadable",
                "the JPEG ends without its end-of-image marker (FF D9): it is truncated; "
                "deliver the complete file",
            )
    elif image_format == "PNG" and size > IMAGE_VERIFY_MAX_BYTES:
        if b"IEND" not in _tail(handle, size):
            facts.problem("content.image_unreadable", "the PNG has no IEND chunk: it is truncated")
    elif image_format in {"PNG", "GIF"}:
        with handle.reopen() as stream:
            try:
                with Image.open(stream) as image:
                    image.verify()
            except _PIL_ERRORS as exc:
                facts.problem(
                    "content.image_unreadable",
                    f"the {image_format} is damaged or truncated ({_words(exc)}); deliver the "
                    "complete file",
                )


def _tail(handle: ConfinedFile, size: int) -> bytes:
    return _pread(handle, TAIL_BYTES, max(0, size - TAIL_BYTES))


# --- text ------------------------------------------------------------------------------------


def text_facts(handle: ConfinedFile, detected: Detected, declared_charset: str | None) -> Facts:
    """Prove the text decodes (stream), count its lines; name the XML root element."""
    facts = Facts()
    encoding = _text_encoding(detected, declared_charset, facts)
    if encoding is None:
        return facts
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines, ascii_only, offset, last = 0, encoding in {"utf-8", "ascii"}, 0, ""
    with handle.reopen() as stream:
        while chunk := stream.read(_CHUNK):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                _undecodable(facts, encoding, declared_charset, offset + exc.start)
                return facts
            ascii_only = ascii_only and chunk.isascii()
            lines += text.count("\n")
            last = text[-1:] or last
            offset += len(chunk)
        try:
            last = decoder.decode(b"", final=True)[-1:] or last
        except UnicodeDecodeError:
            _undecodable(facts, encoding, declared_charset, offset)
            return facts
    facts.line_count = lines + (1 if last and last != "\n" else 0)
    facts.encoding = "ascii" if ascii_only else encoding
    if detected.media_type == "application/xml":
        root = _xml_root(handle)
        if root:
            facts.details.append(f"XML root element <{root}>")
    return facts


def _text_encoding(detected: Detected, declared: str | None, facts: Facts) -> str | None:
    """The codec to decode with: what the bytes show (a byte-order mark, UTF-16's NULs),
    else the declared charset, else UTF-8; None (and a problem) when the two disagree."""
    said = None
    if declared:
        try:
            said = codecs.lookup(declared).name
        except LookupError:
            facts.problem(
                "content.text_encoding",
                f"its media type declares charset {declared!r}, which Flux does not know; "
                "declare a charset such as utf-8, utf-16 or windows-1252",
            )
            return None
    family = _WIDE_FAMILY.get(detected.encoding or "")
    if said and family and not said.startswith(family):
        facts.problem(
            "content.text_encoding",
            f"it is declared charset={declared} but its bytes are {family.upper()} "
            f"({detected.encoding}, seen in its byte-order mark or layout); declare "
            f"charset={family}, or deliver it in {declared}",
        )
        return None
    if family:
        return detected.encoding
    return said or "utf-8"


def _undecodable(facts: Facts, encoding: str, declared: str | None, offset: int) -> None:
    hint = (
        f"deliver it in {declared} as declared"
        if declared
        else "deliver it as UTF-8, or declare its charset in the manifest's media type "
        "(text/plain; charset=windows-1252)"
    )
    facts.problem(
        "content.text_encoding",
        f"byte {offset:,} is not valid {encoding}"
        + ("" if declared else " (no charset is declared, so Flux reads UTF-8)")
        + f"; {hint}",
    )


def _xml_root(handle: ConfinedFile) -> str | None:
    head = handle.head(8192).decode("utf-8", errors="replace").lstrip("\ufeff")
    position = 0
    while match := _XML_SKIP.match(head, position):
        position = match.end()
    root = _XML_ROOT.match(head[position:].lstrip())
    return root.group(1) if root else None


# --- JSON, glTF ------------------------------------------------------------------------------


def json_facts(handle: ConfinedFile, detected: Detected, size: int) -> tuple[Detected, Facts]:
    """Parse a JSON document (bounded); a glTF / Voyager one is a 3D document with facts."""
    facts = Facts()
    if size > JSON_MAX_BYTES:
        facts.details.append(f"JSON over {JSON_MAX_BYTES:,} bytes: detected by its start only")
        return detected, facts
    try:
        encoding = detected.encoding if detected.encoding in _WIDE_FAMILY else "utf-8-sig"
        document = json.loads(handle.head(size).decode(encoding))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, LookupError) as exc:
        facts.details.append(f"not valid JSON ({_words(exc)})")
        return detected.refined("text/plain"), facts
    asset = document.get("asset") if isinstance(document, dict) else None
    if not isinstance(asset, dict):
        return detected, facts
    facts.rights = _text(asset.get("copyright"))
    facts.references = tuple(_uris(document))
    kind = _text(asset.get("type"))
    if kind and "/" in kind and kind.lower().endswith("+json"):  # a Voyager scene and kin
        made_by = ", ".join(
            f"{k} {v}" for k in ("generator", "version") if (v := _text(asset.get(k)))
        )
        facts.details.append(f"scene document {kind}" + (f" ({made_by})" if made_by else ""))
        return detected.refined(kind.lower()), facts
    if any(k in document for k in ("meshes", "scenes", "buffers", "nodes")):
        _asset_facts(asset, facts)
        return detected.refined(GLTF_JSON), facts
    return detected, facts


def glb_facts(handle: ConfinedFile, size: int) -> Facts:
    """glTF binary: header (magic, version, length) and the JSON chunk's ``asset``."""
    facts = Facts()
    header = handle.head(20)
    if len(header) < 20:
        facts.problem("content.unreadable", f"the glTF binary header is cut short ({size} bytes)")
        return facts
    _, version, length, chunk_length, chunk_type = struct.unpack("<4sIII4s", header)
    facts.gltf_version = str(version)
    if length != size:
        facts.problem(
            "content.unreadable",
            f"the glTF header says {length:,} bytes but the file has {size:,}: it is truncated "
            "or padded; deliver the file as exported",
        )
        return facts
    if chunk_type != b"JSON" or chunk_length > size - 20:
        facts.problem("content.unreadable", "the glTF binary's first chunk is not a JSON chunk")
        return facts
    if chunk_length > JSON_MAX_BYTES:
        facts.details.append(f"glTF JSON chunk over {JSON_MAX_BYTES:,} bytes: not parsed")
        return facts
    try:
        document = json.loads(handle.head(20 + chunk_length)[20:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        facts.problem(
            "content.unreadable", f"the glTF JSON chunk is not valid JSON ({_words(exc)})"
        )
        return facts
    asset = document.get("asset") if isinstance(document, dict) else None
    if isinstance(asset, dict):
        _asset_facts(asset, facts)
    return facts


def _asset_facts(asset: dict[str, Any], facts: Facts) -> None:
    """A glTF ``asset``: its version, generator and copyright."""
    facts.gltf_version = _text(asset.get("version"))
    facts.gltf_generator = _text(asset.get("generator"))
    facts.rights = _text(asset.get("copyright"))


def _text(value: Any) -> str | None:
    """A scalar JSON value as bounded text (None when absent, blank or not a scalar)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value).strip()[:2048] or None


def _uris(document: Any) -> Iterator[str]:
    """Every ``uri`` string in the document (not ``data:`` URIs), bounded."""
    stack, seen = [document], 0
    while stack and seen < MAX_URIS * 10:
        node = stack.pop()
        seen += 1
        if isinstance(node, dict):
            uri = node.get("uri")
            if isinstance(uri, str) and uri and not uri.startswith("data:"):
                yield uri
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))


# --- WAV -------------------------------------------------------------------------------------


def wav_facts(handle: ConfinedFile, size: int) -> Facts:
    facts = Facts()
    with handle.reopen() as stream:
        try:
            with wave.open(stream) as audio:
                channels, width = audio.getnchannels(), audio.getsampwidth()
                rate, frames = audio.getframerate(), audio.getnframes()
        except (wave.Error, EOFError, struct.error) as exc:
            facts.details.append(f"stdlib wave cannot read it ({_words(exc)}); RIFF chunks read")
            _riff(handle, size, facts)
            return facts
    needed = frames * channels * width
    if needed > size:
        facts.problem(
            "content.unreadable",
            f"the WAV declares {frames:,} frames ({needed:,} bytes of samples) but the file has "
            f"{size:,} bytes: it is truncated",
        )
        return facts
    _audio(facts, channels, rate, frames, "PCM")
    return facts


def _riff(handle: ConfinedFile, size: int, facts: Facts) -> None:
    """Walk the RIFF chunks (at most 64) for ``fmt `` and ``data``; an unfinalised header
    (RIFF or data size 0, 8 or 0xFFFFFFFF while samples follow) is a warning, its facts
    taken from the bytes."""
    head = handle.head(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        facts.problem("content.unreadable", "it has no RIFF/WAVE header")
        return
    riff_size = struct.unpack("<I", head[4:8])[0]
    fmt, position = None, 12
    for _ in range(64):
        chunk = _pread(handle, 8, position)
        if len(chunk) < 8:
            break
        chunk_id, length = struct.unpack("<4sI", chunk)
        if chunk_id == b"fmt ":
            fmt = _pread(handle, min(length, 40), position + 8)
        elif chunk_id == b"data":
            _wav_data(facts, fmt, riff_size, length, position + 8, size)
            return
        position += 8 + length + (length & 1)
        if position >= size:
            break
    facts.problem("content.unreadable", "the WAV has no fmt and data chunks Flux can find")


def _wav_data(
    facts: Facts, fmt: bytes | None, riff_size: int, declared: int, start: int, size: int
) -> None:
    if fmt is None or len(fmt) < 16:
        facts.problem("content.unreadable", "the WAV's data chunk comes before a fmt chunk")
        return
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    available = size - start
    placeholder = declared in {0, 0xFFFFFFFF} or riff_size in {0, 8, 0xFFFFFFFF}
    if not channels or not rate or not block:
        facts.problem("content.unreadable", "the WAV's fmt chunk declares no channel or rate")
        return
    if placeholder and available > 0:
        data_bytes = available
        facts.problem(
            "content.audio_header",
            f"its header sizes were never finalised (RIFF size {riff_size}, data size "
            f"{declared}) while {available:,} bytes of samples follow: facts were taken from the "
            "bytes; re-export the file so players that trust the header read it whole",
        )
    elif declared > available:
        facts.problem(
            "content.unreadable",
            f"the WAV's data chunk declares {declared:,} bytes but only {available:,} follow: "
            "it is truncated",
        )
        return
    else:
        data_bytes = declared
    kind = _WAV_FORMATS.get(tag, f"format 0x{tag:04x}")
    _audio(facts, channels, rate, data_bytes // block, f"{kind} {bits}-bit")


def _audio(facts: Facts, channels: int, rate: int, frames: int, kind: str) -> None:
    facts.channels, facts.sample_rate = channels, rate
    facts.duration_s = frames / rate if rate else None
    facts.details.append(f"WAV {kind}, {frames:,} frames")


def _pread(handle: ConfinedFile, size: int, offset: int) -> bytes:
    return os.pread(handle.fileno(), size, offset)


def _words(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
