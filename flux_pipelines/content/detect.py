"""A content file's type, from its bytes; what was declared for it; whether the two agree.

Detection reads a bounded head (``HEAD_BYTES``): ``filetype`` knows binary formats by their
magic numbers (JPEG, PNG, TIFF, PDF, WAV, ...); glTF binary (``glTF`` magic) is recognised
here, and text (with its XML / JSON / plain flavour) by decoding the head: a byte-order
mark, else UTF-8, else mostly printable 8-bit text. ``facts.py`` refines a detection from
the structure (a TIFF carrying a DNGVersion tag is a DNG; a JSON document with a glTF or
Voyager ``asset`` is a 3D document).

The declared type is the strongest claim available: the package manifest's media type,
else the record's content type (a metadata column: a media type or a word such as
``image``), else the file's extension (the weakest claim). They agree when they name the
same type, allowing for the known container facts: a DNG *is* a TIFF, any text is
``text/plain``, ``+json`` / ``+xml`` documents are JSON / XML.
"""

from __future__ import annotations

import codecs
import mimetypes
import re
from dataclasses import dataclass, replace

import filetype

HEAD_BYTES = 64 << 10
OCTET_STREAM = "application/octet-stream"
DNG = "image/x-adobe-dng"
GLB = "model/gltf-binary"
GLTF_JSON = "model/gltf+json"
# Record-level content types (``model.ContentType``) a metadata column may state.
KIND_WORDS = frozenset({"image", "document", "text", "audio", "video", "3d", "mixed"})
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/dng": DNG,
    "image/x-dng": DNG,
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "text/xml": "application/xml",
    "text/json": "application/json",
    "application/x-pdf": "application/pdf",
}
_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_START = re.compile(r"<(\?xml|[A-Za-z_!])")
_HTML_START = re.compile(r"(?is)<!doctype\s+html|<html[\s>]")
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13, 27}
_EXTENSIONS = mimetypes.MimeTypes()  # built-in table only: the same answer on every machine
for _type, _ext in ((DNG, ".dng"), (GLB, ".glb"), (GLTF_JSON, ".gltf"), ("audio/wav", ".wav")):
    _EXTENSIONS.add_type(_type, _ext)


@dataclass(frozen=True)
class Detected:
    """A type detected from the bytes."""

    media_type: str
    kind: str  # image | document | text | audio | video | 3d | other
    container: str | None = None  # the format it is carried in (a DNG: TIFF)
    encoding: str | None = None  # text: the encoding a byte-order mark or the head shows

    @property
    def shown(self) -> str:
        """``image/x-adobe-dng (TIFF container)``."""
        return (
            f"{self.media_type} ({self.container} container)" if self.container else self.media_type
        )

    def refined(self, media_type: str, container: str | None = None) -> Detected:
        return replace(self, media_type=media_type, kind=kind_of(media_type), container=container)


@dataclass(frozen=True)
class Declared:
    """What someone said the file is."""

    media_type: str  # normalised, without parameters; or a record content type word
    charset: str | None  # the ``charset`` parameter, if any
    source: str  # manifest | metadata | extension
    written: str  # as written

    @property
    def shown(self) -> str:
        return f"{self.written} (from the {self.source})"


def kind_of(media_type: str) -> str:
    """The coarse content kind of a media type."""
    top, _, sub = media_type.partition("/")
    if top == "image":
        return "image"
    if media_type == "application/pdf":
        return "document"
    if top == "model" or media_type.startswith("application/si-dpo-3d"):
        return "3d"
    if top in {"audio", "video"}:
        return top
    if top == "text" or sub in {"xml", "json"} or sub.endswith(("+xml", "+json")):
        return "text"
    return "other"


def detect(head: bytes) -> Detected:
    """The type of a file whose first bytes are ``head`` (at most ``HEAD_BYTES``)."""
    if head[:4] == b"glTF":
        return Detected(GLB, "3d")
    guessed = filetype.guess(head)
    if guessed is not None:
        media_type = normal_type(guessed.mime)
        return Detected(media_type, kind_of(media_type))
    sniffed = sniff_text(head)
    if sniffed is not None:
        media_type, encoding = sniffed
        return Detected(media_type, kind_of(media_type), encoding=encoding)
    return Detected(OCTET_STREAM, "other")


def sniff_text(head: bytes) -> tuple[str, str | None] | None:
    """(text media type, encoding or None if unknown) when the head reads as text."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head)
            return _text_type(text), encoding
    wide = _utf16_without_bom(head)
    if wide is not None:
        text = codecs.getincrementaldecoder(wide)(errors="replace").decode(head)
        return _text_type(text), wide
    if b"\0" in head:
        return None
    try:  # final=False: a character cut by the head's end is no error
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return ("text/plain", None) if _printable(head) else None
    if not _printable(head):
        return None
    return _text_type(text), "ascii" if head.isascii() else "utf-8"


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 text without a byte-order mark: every other byte NUL (Latin-script text)."""
    sample = head[: 4096 - 4096 % 2]
    if len(sample) < 16:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def _printable(head: bytes) -> bool:
    return sum(b in _CONTROL for b in head) <= 0.02 * len(head)


def _text_type(text: str) -> str:
    start = text.lstrip()[:512]
    if _HTML_START.match(start):
        return "text/html"
    if _XML_START.match(start):
        return "application/xml"
    if start[:1] in {"{", "["}:
        return "application/json"  # tentative: facts.py parses it
    return "text/plain"


def normal_type(media_type: str) -> str:
    """A media type lowercased, without parameters, with common aliases resolved."""
    base = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def charset_of(media_type: str) -> str | None:
    """The ``charset`` parameter of a media type, if any."""
    for param in media_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"').lower()
    return None


def declared_type(manifest_type: str | None, record_types: list[str], name: str) -> list[Declared]:
    """The strongest claims about a file's type: the manifest's media type, else the
    records' content types (each distinct one), else the extension; empty if none."""
    if manifest_type:
        return [_declared(manifest_type, "manifest")]
    if record_types:
        return [_declared(t, "metadata") for t in sorted(set(record_types))]
    guessed, _ = _EXTENSIONS.guess_type(name, strict=False)
    return [_declared(guessed, "extension")] if guessed else []


def _declared(written: str, source: str) -> Declared:
    base = written.strip().lower()
    media_type = base if base in KIND_WORDS else normal_type(written)
    return Declared(media_type, charset_of(written), source, written.strip())


def agrees(declared: Declared, detected: Detected) -> bool:
    """Whether the bytes are what was declared (container facts allowed)."""
    said, found = declared.media_type, detected.media_type
    if said in KIND_WORDS:
        return said in {"mixed", detected.kind} or {said, detected.kind} <= {"document", "text"}
    if said in {found, OCTET_STREAM, ""}:
        return True
    if said == "image/tiff" and found == DNG:  # a DNG is a TIFF
        return True
    if said == "text/plain" and detected.kind == "text":
        return True
    return any(_in_family(said, f) and _in_family(found, f) for f in ("json", "xml"))


def _in_family(media_type: str, family: str) -> bool:
    return media_type == f"application/{family}" or media_type.endswith(f"+{family}")
