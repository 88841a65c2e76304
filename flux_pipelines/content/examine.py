"""Examine a day's content package: every file hashed, typed, described and linked.

For each payload file, in order, stopping at the first fatal finding of the first three:
confinement (a link or special file is refused), packaging (listed, checksum), non-empty;
then its type from its bytes against the declared type, and its facts by type. Files are
then linked to the day's records (a record's content file column, or the manifest's
``record``), sidecars (a glTF / Voyager scene document) to the files they reference, and
what no record references is an orphan; a record whose link names no file in the package is
a problem of that record. Every payload file ends as a stored ``FileReport`` or a
quarantined one: nothing is dropped.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flux_pipelines.content import facts as by_type
from flux_pipelines.content.detect import (
    GLB,
    HEAD_BYTES,
    Declared,
    Detected,
    agrees,
    declared_type,
    detect,
)
from flux_pipelines.content.package import (
    BAG_PAYLOAD,
    UNPACKAGED,
    Claim,
    Found,
    Package,
    digest_difference,
    file_digests,
    folder_of,
    normal_path,
    path_problem,
    read_package,
)
from flux_pipelines.content.pdf_probe import BATCH, PDF_MAX_BYTES, PdfFacts, probe
from flux_pipelines.content.problems import Problem, shown
from flux_pipelines.errors import UnsafePath
from flux_pipelines.ingest.confine import (
    LANDING,
    ConfinedDir,
    ConfinedFile,
    landing_root_of,
    open_dir_under,
    stat_key,
)
from flux_pipelines.names import CONTENT_FOLDER


@dataclass(frozen=True)
class RecordLink:
    """A record of the day's metadata and the content file it names."""

    key: str  # the record's key (its identifier column's value; several joined)
    link: str | None  # a path inside the content package, as the metadata writes it
    content_type: str | None = None  # the record's content type or media type, if stated


@dataclass
class FileReport:
    """One payload file: what it is, what it belongs to, what is wrong with it."""

    found: Found
    path: str  # payload path: what manifests and records name
    sha256: str = ""
    declared: Declared | None = None
    detected: Detected | None = None
    facts: by_type.Facts = field(default_factory=by_type.Facts)
    record_keys: set[str] = field(default_factory=set)
    sidecar: FileReport | None = None  # the scene document describing this file
    problems: list[Problem] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return not any(p.severity == "fatal" for p in self.problems)

    def add(self, rule_id: str, reason: str, value: str | None = None) -> None:
        key = min(self.record_keys) if self.record_keys else None
        self.problems.append(
            Problem(
                rule_id, self.found.shown, f"{self.found.shown}: {reason}", value, key, self.sha256
            )
        )


@dataclass
class Examined:
    """The package and the outcome of every file in it."""

    package: Package
    files: list[FileReport]
    problems: list[Problem]  # package-level and record-level (not of one payload file)

    @property
    def all_problems(self) -> list[Problem]:
        return [*self.problems, *(p for f in self.files for p in f.problems)]


def examine_package(folder: Path, records: Sequence[RecordLink]) -> Examined:
    """Examine the content folder ``folder`` (``landing/<agency>/<dataset>/<day>/content``)
    against the day's ``records``. Never raises for anything the agency delivered; a day
    without the folder delivered no file, so each record linking one is missing its file."""
    try:
        content = open_dir_under(landing_root_of(folder, 4), folder, zone=LANDING)
    except FileNotFoundError:  # no content delivered: only the records' links are judged
        return _judged(Package(UNPACKAGED, (), []), [], records)
    except UnsafePath as exc:
        return _unopenable(exc)
    except OSError as exc:
        reason = f"{CONTENT_FOLDER}/ cannot be opened ({exc.strerror or exc}); make it readable"
        return _unopenable(UnsafePath("delivery.unreadable", CONTENT_FOLDER, reason))
    with content:
        package = read_package(content)
        files = [FileReport(f, package.path_of(f)) for f in package.payload]
        links = _links(package, records)
        for report in files:
            _examine(content, package, report, links)
        _probe_pdfs(content, [r for r in files if _wants_pdf_probe(r)])
    return _judged(package, files, records)


def _judged(
    package: Package,
    files: list[FileReport],
    records: Sequence[RecordLink],
) -> Examined:
    """The package once every file is examined: sidecars, orphans, records' missing files."""
    _link_sidecars(files)
    problems = [*([package.invalid] if package.invalid else []), *package.problems]
    if package.invalid is None:
        _orphans(files, package, {r.key for r in records})
        problems += _missing_files(files, package, records)
    return Examined(package, files, problems)


def _unopenable(exc: UnsafePath) -> Examined:
    problem = Problem(exc.rule_id, CONTENT_FOLDER, exc.reason)
    return Examined(Package(UNPACKAGED, (), [], invalid=problem), [], [problem])


# --- one file --------------------------------------------------------------------------------


def _examine(
    content: ConfinedDir,
    package: Package,
    report: FileReport,
    links: dict[str, list[RecordLink]],
) -> None:
    report.record_keys = {r.key for r in links.get(report.path, ())}
    found = report.found
    if found.refused is not None:
        report.problems.append(
            Problem(found.refused.rule_id, found.shown, found.refused.reason, None, None)
        )
        return
    if package.invalid is not None:
        report.add(package.invalid.rule_id, f"not verified: {package.invalid.reason}")
        return
    claim = package.claim(found)
    if claim is None:
        listing = "the bag's manifest" if package.root == (BAG_PAYLOAD,) else "the manifest"
        report.add(
            "content.unlisted_file",
            f"delivered but not listed in {listing}; list it (path and checksum) or remove it",
        )
        return
    if claim.record:
        report.record_keys.add(claim.record)
    try:
        with folder_of(content, found.parts[:-1]) as parent:
            _read(parent, found.parts[-1], claim, report, links)
    except UnsafePath as exc:
        report.add(exc.rule_id, exc.reason)
    except OSError as exc:
        report.add("content.unreadable", f"Flux cannot read it ({exc.strerror or exc})")


def _read(
    parent: ConfinedDir,
    name: str,
    claim: Claim,
    report: FileReport,
    links: dict[str, list[RecordLink]],
) -> None:
    digests = file_digests(parent, name, claim.checksums)
    if digests is None:
        report.add(
            "delivery.changed_while_reading", "it changed while Flux read it; deliver it again"
        )
        return
    report.sha256 = digests.sha256
    differs = digest_difference(digests, claim.checksums)
    if differs is not None:
        report.add(
            "content.checksum_mismatch",
            f"its bytes differ from the package manifest ({differs}): it was damaged or "
            "changed after packaging; deliver it again",
            value=claim.checksums.get("sha256") or next(iter(claim.checksums.values()), None),
        )
        return
    with parent.open_file(name) as handle:
        if stat_key(handle.stat) != digests.stat_key:
            report.add("delivery.changed_while_reading", "it was replaced while Flux read it")
            return
        size = handle.stat.st_size
        if size == 0:
            report.add("content.empty_file", "it is empty (0 bytes); deliver the file's content")
            return
        report.detected = detect(handle.head(HEAD_BYTES))
        record_types = [r.content_type for r in links.get(report.path, ()) if r.content_type]
        declarations = declared_type(claim.media_type, record_types, name)
        report.declared = declarations[0] if declarations else None
        _facts(handle, report, size)
        _check_declared(report, declarations)


def _facts(handle: ConfinedFile, report: FileReport, size: int) -> None:
    """Facts by detected type (refining it: DNG, glTF JSON, scene documents)."""
    detected = report.detected
    assert detected is not None
    if detected.kind == "image":
        detected, report.facts = by_type.image_facts(handle, detected, size)
    elif detected.media_type == GLB:
        report.facts = by_type.glb_facts(handle, size)
    elif detected.media_type == "audio/wav":
        report.facts = by_type.wav_facts(handle, size)
    elif detected.media_type == "application/json":
        detected, report.facts = by_type.json_facts(handle, detected, size)
    if detected.kind == "text" or detected.encoding is not None:  # text, scene documents
        charset = report.declared.charset if report.declared else None
        text = by_type.text_facts(handle, detected, charset)
        report.facts.encoding, report.facts.line_count = text.encoding, text.line_count
        report.facts.details += text.details
        report.facts.problems += text.problems
    if detected.media_type == "application/pdf" and size > PDF_MAX_BYTES:
        report.facts.details.append(f"PDF over {PDF_MAX_BYTES:,} bytes: not parsed, no page count")
    report.detected = detected
    for rule_id, reason in report.facts.problems:
        report.add(rule_id, reason)


def _check_declared(report: FileReport, declarations: list[Declared]) -> None:
    detected = report.detected
    assert detected is not None
    for declared in declarations:
        if not agrees(declared, detected):
            report.add(
                "content.type_mismatch",
                f"declared {declared.shown} but its bytes are {detected.shown}; deliver the "
                "file that was meant, or correct the declared type",
                value=declared.written,
            )
            return


# --- PDFs, in a bounded child process --------------------------------------------------------


def _wants_pdf_probe(report: FileReport) -> bool:
    detected = report.detected
    return (
        detected is not None
        and detected.media_type == "application/pdf"
        and report.found.size <= PDF_MAX_BYTES
        and not any(p.rule_id == "content.empty_file" for p in report.problems)
    )


def _probe_pdfs(content: ConfinedDir, reports: list[FileReport]) -> None:
    for start in range(0, len(reports), BATCH):
        batch = reports[start : start + BATCH]
        handles, probed = [], []
        try:
            for report in batch:
                try:
                    with folder_of(content, report.found.parts[:-1]) as parent:
                        handles.append(parent.open_file(report.found.parts[-1]))
                    probed.append(report)
                except (UnsafePath, OSError) as exc:
                    report.add("content.unreadable", f"Flux cannot open it again ({exc})")
            for report, pdf in zip(probed, probe([h.fileno() for h in handles]), strict=True):
                _pdf_facts(report, pdf)
        finally:
            for handle in handles:
                handle.close()


def _pdf_facts(report: FileReport, pdf: PdfFacts) -> None:
    report.facts.pages = pdf.pages
    if pdf.encrypted:
        opened = (
            f"it opens without a password ({pdf.pages} page(s)) but restricts its use"
            if pdf.opens
            else "it needs a password to open"
        )
        report.add(
            "content.pdf_encrypted",
            f"the PDF is encrypted: {opened}; deliver it without encryption",
        )
    elif pdf.error is not None:
        report.add(
            "content.pdf_malformed",
            f"the PDF cannot be parsed ({pdf.error}); deliver a well-formed PDF",
        )
    elif not pdf.pages:
        report.add("content.pdf_malformed", "the PDF has no page; deliver the complete PDF")


# --- records, sidecars, orphans ----------------------------------------------------------------


def _links(package: Package, records: Iterable[RecordLink]) -> dict[str, list[RecordLink]]:
    """Records by the payload path their link names (links outside the package match none)."""
    by_path: dict[str, list[RecordLink]] = defaultdict(list)
    for record in records:
        path = _link_path(record.link, package)
        if path is not None:
            by_path[path].append(record)
    return by_path


def _link_path(link: str | None, package: Package) -> str | None:
    text = (link or "").strip()
    if not text or path_problem(text) is not None or "://" in text:
        return None
    path = normal_path(text).removeprefix(CONTENT_FOLDER + "/")
    if package.root:
        path = path.removeprefix("/".join(package.root) + "/")
    return path


def _link_sidecars(files: list[FileReport]) -> None:
    """A scene or glTF JSON document names the files it describes: each gets its rights
    statement (``sidecar_rights``) and the sidecar belongs to their records."""
    by_path = {r.path: r for r in files if r.stored}
    for sidecar in files:
        if not sidecar.stored or not sidecar.facts.references:
            continue
        folder = posixpath.dirname(sidecar.path)
        for uri in sidecar.facts.references:
            if path_problem(uri) is not None or "://" in uri:
                continue
            target = by_path.get(normal_path(posixpath.join(folder, uri)))
            if target is not None and target is not sidecar:
                target.sidecar = sidecar
                sidecar.record_keys |= target.record_keys


def _orphans(files: list[FileReport], package: Package, keys: set[str]) -> None:
    for report in files:
        if not report.stored:
            continue
        claim = package.claim(report.found)
        known = report.record_keys & keys
        if known:
            report.record_keys = known
            continue
        said = (
            f"the manifest assigns it to record {shown(claim.record)!r}, which the day's "
            "metadata does not hold"
            if claim is not None and claim.record
            else "no record of the day's metadata names it"
        )
        report.record_keys = set()
        report.add(
            "content.orphan_file",
            f"{said}; name it in a record's content file column (or the manifest's record), "
            "or remove it",
        )


def _missing_files(
    files: list[FileReport],
    package: Package,
    records: Sequence[RecordLink],
) -> list[Problem]:
    present = {r.path for r in files}
    problems = []
    for record in records:
        if record.link is None or not record.link.strip() or "://" in record.link:
            continue  # no link, or content hosted elsewhere (a URL): nothing to deliver
        path = _link_path(record.link, package)
        if path is not None and path in present:
            continue
        problems.append(
            Problem(
                "content.record_file_missing",
                shown(record.link),
                f"record {shown(record.key)!r} names content file {shown(record.link)!r}, which "
                f"is not in the day's {CONTENT_FOLDER}/ package; deliver the file or correct "
                "the link",
                value=shown(record.link),
                record_key=record.key,
            )
        )
    return problems
