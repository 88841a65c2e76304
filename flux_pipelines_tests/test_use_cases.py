"""Use cases as data, the contract's rights and content mapping, and per-record and per-file
decisions with their reasons (issue 16, part A).

Expected reasons are the sentences the issue asks for, written out here; the real-file test
reads the glTF scene's own rights from its real sidecar and the image sizes with Pillow.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_pipelines.collections.rights import classify
from flux_pipelines.collections.use_cases import (
    Decision,
    RecordFacts,
    UseCases,
    detected_content_type,
    file_eligibility,
    load_use_cases,
    reason_causes,
    record_eligibility,
)
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.page import contract_page
from flux_pipelines.errors import ConfigurationError, ContractError
from flux_pipelines_tests.conftest import contract_doc, write_contract

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED = PROJECT / "contracts" / "use_cases.yaml"
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
GLTF_SIDECAR_RIGHTS = "(c) Smithsonian Institution. All rights reserved."


@pytest.fixture(scope="module")
def use_cases() -> UseCases:
    return load_use_cases(SHIPPED)


# --- the use-case file --------------------------------------------------------------------------
def test_shipped_use_cases(use_cases: UseCases) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", use_cases.version)
    assert [u.id for u in use_cases.use_cases] == ["ai-training", "research", "vr"]
    ai = use_cases.get("ai-training")
    assert (ai.content_rights, ai.metadata_licence) == (("public_domain",), ("public_domain",))
    research = use_cases.get("research")
    assert set(research.content_rights) == {
        "public_domain",
        "cc_by",
        "cc_by_sa",
        "no_known_restrictions",
        "in_copyright_educational",
    }
    vr = use_cases.get("vr")
    assert vr.content_rights == research.content_rights
    assert vr.content_types == ("image", "3d") and vr.min_side_pixels == 512
    assert "# Changelog" in SHIPPED.read_text(encoding="utf-8")


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "use_cases.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["use_cases"][0]["content_rights"].append("unknown"), "can never make"),
        (lambda d: d["use_cases"][1].update(id="ai-training"), "repeated: ai-training"),
        (lambda d: d["use_cases"][0].update(content_rights=["cc0"]), "content_rights"),
        (lambda d: d["use_cases"][2].update(content_types=["hologram"]), "content_types"),
        (lambda d: d["use_cases"][2].update(min_side_pixels=0), "min_side_pixels"),
        (lambda d: d.pop("version"), "version"),
        (lambda d: d["use_cases"][0].update(typo=1), "typo"),
    ],
)
def test_a_bad_use_case_file_is_refused_naming_the_entry(
    tmp_path: Path, change: Any, words: str
) -> None:
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    change(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigurationError) as err:
        load_use_cases(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_unknown_use_case_names_the_known_ones(use_cases: UseCases) -> None:
    with pytest.raises(ConfigurationError, match="known: ai-training, research, vr"):
        use_cases.get("training")


# --- records ------------------------------------------------------------------------------------
def _facts(
    rights: str | None, licence: str | None = CC0, kind: str | None = "image"
) -> RecordFacts:
    return RecordFacts(classify(rights), classify(licence), kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("use_case", "facts", "expected"),
    [
        ("ai-training", _facts(None), [False, "not eligible for ai-training: no rights statement"]),
        (
            "ai-training",
            _facts("© Tate"),
            [False, "not eligible for ai-training: content rights in_copyright (© Tate)"],
        ),
        ("ai-training", _facts(CC0), [True, None]),
        ("ai-training", _facts("CC0", licence=None), [False, "no metadata licence"]),
        (
            "ai-training",
            _facts("CC0", licence="CC BY 4.0"),
            [False, "not eligible for ai-training: metadata licence cc_by (CC BY 4.0)"],
        ),
        ("research", _facts("CC0", licence="CC BY 4.0"), [True, None]),
        (
            "ai-training",
            _facts("No known restrictions"),
            [False, "content rights no_known_restrictions (No known restrictions)"],
        ),
        ("research", _facts("No known restrictions"), [True, None]),
        ("research", _facts("In Copyright - Educational Use Permitted"), [True, None]),
        ("research", _facts("CC BY-NC 4.0"), [False, "content rights cc_by_nc (CC BY-NC 4.0)"]),
        (
            "research",
            _facts("see our web site"),
            [False, "content rights not classified (see our web site: a statement Flux"],
        ),
        ("vr", _facts("CC0", kind="audio"), [False, "content type audio (takes image or 3d)"]),
        ("vr", _facts("CC0", kind=None), [False, "no content type (takes image or 3d)"]),
        ("vr", _facts("CC0", kind="3d"), [True, None]),
    ],
)
def test_record_decisions(
    use_cases: UseCases, use_case: str, facts: RecordFacts, expected: list[Any]
) -> None:
    decision = record_eligibility(use_cases.get(use_case), facts)
    eligible, words = expected
    assert decision.eligible is eligible
    if words is None:
        assert decision.reasons[0].startswith(f"eligible for {use_case}: content rights ")
    else:
        assert any(words in r for r in decision.reasons), decision.reasons
        assert all(r.startswith(f"not eligible for {use_case}: ") for r in decision.reasons)


def test_several_reasons_read_as_one_sentence(use_cases: UseCases) -> None:
    decision = record_eligibility(use_cases.get("vr"), _facts(None, licence=None, kind="audio"))
    assert decision == Decision(
        False,
        [
            "not eligible for vr: no rights statement",
            "not eligible for vr: no metadata licence",
            "not eligible for vr: content type audio (takes image or 3d)",
        ],
    )
    assert decision.sentence == (
        "not eligible for vr: no rights statement; no metadata licence; content type audio "
        "(takes image or 3d)"
    )


# --- files --------------------------------------------------------------------------------------
def test_a_sidecar_reserving_rights_contradicts_a_permissive_repository(
    use_cases: UseCases,
) -> None:
    facts = {
        "detected_type": "model/gltf-binary",
        "sidecar_rights": GLTF_SIDECAR_RIGHTS,
        "repository_licence": "Apache-2.0",
    }
    for use_case in use_cases.use_cases:
        decision = file_eligibility(use_case, facts)
        assert decision == Decision(
            False,
            [
                f"not eligible for {use_case.id}: content rights contradict the repository "
                f"licence (sidecar: in_copyright ({GLTF_SIDECAR_RIGHTS}); repository licence: "
                "cc_by (Apache-2.0))"
            ],
        )


def test_differing_statements_are_eligible_only_where_both_allow(use_cases: UseCases) -> None:
    facts = {"detected_type": "image/jpeg", "width": 800, "height": 600}
    facts |= {"record_rights": CC0, "repository_licence": "CC BY 4.0"}
    research = file_eligibility(use_cases.get("research"), facts)
    assert research.eligible
    assert research.reasons == [
        f"eligible for research: content rights from record public_domain ({CC0}) and "
        "repository licence cc_by (CC BY 4.0)"
    ]
    ai = file_eligibility(use_cases.get("ai-training"), facts)
    assert not ai.eligible
    assert ai.reasons == [
        "not eligible for ai-training: content rights contradict the repository licence "
        f"(record: public_domain ({CC0}); repository licence: cc_by (CC BY 4.0))"
    ]


def test_the_most_specific_statement_decides_when_they_agree(use_cases: UseCases) -> None:
    facts = {"detected_type": "image", "sidecar_rights": "CC0", "repository_licence": CC0}
    assert file_eligibility(use_cases.get("ai-training"), facts).eligible
    assert file_eligibility(use_cases.get("ai-training"), {"detected_type": "image"}) == Decision(
        False, ["not eligible for ai-training: no rights statement"]
    )


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (672, 1024, None),
        (220, 272, "not eligible for vr: image 220x272 pixels, under 512 on its shorter side"),
        (None, None, "not eligible for vr: image size unknown (needs 512 pixels on each side)"),
    ],
)
def test_vr_needs_a_usable_image_size(
    use_cases: UseCases, width: int | None, height: int | None, expected: str | None
) -> None:
    facts = {"detected_type": "image/png", "width": width, "height": height}
    decision = file_eligibility(use_cases.get("vr"), facts | {"repository_licence": CC0})
    assert decision.eligible is (expected is None)
    if expected:
        assert decision.reasons == [expected]
    # the size is a vr requirement only
    assert file_eligibility(use_cases.get("research"), facts | {"repository_licence": CC0}).eligible


@pytest.mark.parametrize(
    ("detected", "content_type"),
    [
        ("image/tiff", "image"),
        ("model/gltf-binary", "3d"),
        ("application/pdf", "document"),
        ("text/plain; charset=utf-8", "text"),
        ("audio/x-wav", "audio"),
        ("3d", "3d"),
        ("application/octet-stream", None),
        (None, None),
    ],
)
def test_detected_types_map_to_content_types(detected: str | None, content_type: str) -> None:
    assert detected_content_type(detected) == content_type


@pytest.mark.realdata
def test_real_content_files(real_data: Path, use_cases: UseCases) -> None:
    """The real glTF's sidecar reserves all rights while its repository is Apache-2.0: not
    eligible for anything; the LoC images (Unlicense) pass vr only when large enough."""
    content = real_data / "collections" / "content"
    if not content.is_dir():
        pytest.skip(f"{content} is absent")
    from PIL import Image

    sidecar = json.loads((content / "3d" / "si-dpo_sea_turtle_scene.svx.json").read_text("utf-8"))
    rights = sidecar["asset"]["copyright"]
    readme = (real_data / "collections" / "README.md").read_text(encoding="utf-8")
    [repository] = re.findall(r"repository (Apache-2\.0), but the scene", readme)
    gltf = {"detected_type": "model/gltf-binary", "sidecar_rights": rights}
    gltf["repository_licence"] = repository
    for use_case in use_cases.use_cases:
        decision = file_eligibility(use_case, gltf)
        assert not decision.eligible
        assert "content rights contradict the repository licence" in decision.reasons[0]
    vr = use_cases.get("vr")
    sizes = {}
    for name in ("loc-citizen-dj_federal_music_project.jpg", "loc-citizen-dj_laguardia.png"):
        with Image.open(content / "image" / name) as image:
            sizes[name] = image.size
            facts = {"detected_type": Image.MIME[image.format or ""], "width": image.width}
            facts |= {"height": image.height, "repository_licence": "Unlicense"}
        decision = file_eligibility(vr, facts)
        assert decision.eligible is (min(image.size) >= 512), decision.reasons
    assert sizes == {
        "loc-citizen-dj_federal_music_project.jpg": (672, 1024),
        "loc-citizen-dj_laguardia.png": (220, 272),
    }


# --- the contract's mapping ---------------------------------------------------------------------
COLUMNS = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "rights", "logicalType": "string"},
    {"name": "kind", "logicalType": "string"},
    {"name": "licence", "logicalType": "string"},
    {"name": "image_url", "logicalType": "string"},
    {"name": "year", "logicalType": "integer"},
]
MAPPING = [
    {"property": "rightsColumn", "value": "rights"},
    {"property": "metadataLicence", "value": CC0},
    {"property": "contentTypeColumn", "value": "kind"},
    {"property": "contentTypes", "value": {"Painting": "image", "model": "3d"}},
    {"property": "contentFileColumns", "value": ["image_url"]},
]


def _contract(tmp_path: Path, custom: list[dict[str, Any]]) -> Any:
    doc = contract_doc(copy.deepcopy(COLUMNS), custom=custom)
    return load_contract(write_contract(tmp_path / "contracts", doc))


def test_the_mapping_is_read_and_used_for_records(tmp_path: Path, use_cases: UseCases) -> None:
    contract = _contract(tmp_path, MAPPING)
    mapping = contract.content
    assert mapping is not None
    assert (mapping.rights_column, mapping.metadata_licence) == ("rights", CC0)
    assert (mapping.content_type_column, mapping.content_file_columns) == ("kind", ("image_url",))
    assert mapping.columns == ("rights", "kind", "image_url")
    assert contract.extra == {}, "mapping properties are not left as unknown extras"
    record = {"id": 1, "rights": "CC0", "kind": " painting ", "image_url": "a.jpg"}
    facts = RecordFacts.of(record, mapping)
    assert (facts.content_type, facts.object_kind) == ("image", " painting ")
    assert record_eligibility(use_cases.get("vr"), facts).eligible
    unmapped = RecordFacts.of(record | {"kind": "sculpture"}, mapping)
    assert unmapped.content_type is None
    # renamed by a later version: the mapping follows its columns
    renamed = contract.renamed({"rights": "rights_statement"})
    assert renamed.content is not None and renamed.content.rights_column == "rights_statement"


def test_a_contract_without_the_mapping_has_none(tmp_path: Path) -> None:
    contract = _contract(tmp_path, [])
    assert contract.content is None
    assert "## Rights and content" not in contract_page(contract)


def test_the_contract_page_shows_the_mapping(tmp_path: Path) -> None:
    page = contract_page(_contract(tmp_path, MAPPING))
    section = page.split("## Rights and content", 1)[1].split("## Rule catalogue")[0]
    assert "| content rights statement | column `rights` |" in section
    assert f"| metadata licence | `{CC0}` for every record |" in section
    assert "column `kind` mapped: `Painting` -> image, `model` -> 3d" in section
    assert "| content files | `image_url` |" in section


@pytest.mark.parametrize(
    ("custom", "words"),
    [
        (
            [{"property": "rightsColumn", "value": "rights_text"}],
            "customProperty rightsColumn names 'rights_text', which is not a column",
        ),
        (
            [{"property": "contentFileColumns", "value": ["image_url", "thumb"]}],
            "customProperty contentFileColumns names 'thumb'",
        ),
        ([{"property": "rightsColumn", "value": "year"}], "column year is integer"),
        (
            [
                {"property": "metadataLicence", "value": CC0},
                {"property": "metadataLicenceColumn", "value": "licence"},
            ],
            "metadataLicence and metadataLicenceColumn both given",
        ),
        (
            [{"property": "contentType", "value": "painting"}],
            "contentType 'painting' is not one of image, document",
        ),
        (
            [
                {"property": "contentTypeColumn", "value": "kind"},
                {"property": "contentTypes", "value": {"painting": "picture"}},
            ],
            "contentTypes must map",
        ),
        (
            [{"property": "contentTypes", "value": {"painting": "image"}}],
            "contentTypes needs contentTypeColumn",
        ),
        (
            [{"property": "metadataLicense", "value": CC0}],
            "metadataLicense: write metadataLicence",
        ),
    ],
)
def test_a_bad_mapping_is_refused_at_load(
    tmp_path: Path, custom: list[dict[str, Any]], words: str
) -> None:
    with pytest.raises(ContractError) as err:
        _contract(tmp_path, custom)
    assert words in str(err.value) and "items/1.0.0.odcs.yaml" in str(err.value)


def test_shipped_collection_contracts_map_rights_and_content() -> None:
    artworks = load_contract(PROJECT / "contracts" / "datasets" / "artworks" / "1.0.0.odcs.yaml")
    audio = load_contract(PROJECT / "contracts" / "datasets" / "audio_items" / "1.0.0.odcs.yaml")
    assert artworks.content is not None and audio.content is not None
    assert artworks.content.rights_column == "thumbnail_copyright"
    assert classify(artworks.content.metadata_licence).rights_class == "public_domain"
    assert set(artworks.content.content_types.values()) == {"image"}
    assert (audio.content.rights_column, audio.content.content_type) == ("rights", "audio")
    assert classify(audio.content.metadata_licence).rights_class == "public_domain"


@pytest.mark.parametrize(
    ("reason", "causes"),
    [
        (
            "not eligible for ai-training: content rights in_copyright (© Jane Doe)",
            ["content rights in_copyright"],
        ),
        (  # a statement holding "; " and nested parentheses is one cause
            "not eligible for vr: content rights in_copyright (© The Henry Moore Foundation; "
            "All rights reserved (DACS 2014)); no content type (takes image or 3d)",
            ["content rights in_copyright", "no content type"],
        ),
        (  # a statement shortened for the reason loses its closing parenthesis
            "not eligible for research: content rights in_copyright (© The Estate of A (Fond…",
            ["content rights in_copyright"],
        ),
        ("not eligible for ai-training: no rights statement", ["no rights statement"]),
    ],
)
def test_reasons_count_by_cause_whatever_the_statement_quoted(
    reason: str, causes: list[str]
) -> None:
    assert reason_causes(reason) == causes
