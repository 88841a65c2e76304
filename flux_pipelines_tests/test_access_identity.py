"""Identity from a verified token: role and agency from groups; forged or stale tokens fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from flux_pipelines.access.identity import TokenVerifier, authorize, identity_from_claims
from flux_pipelines.access.policy import POLICY_FILE, load_policy
from flux_pipelines.errors import AccessDenied, AuthenticationError, ConfigurationError
from flux_pipelines_tests.oidc import Issuer, running_issuer

AGENCIES = {"nasa", "dod", "va"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def verifier(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    return TokenVerifier(load_policy())


@pytest.mark.parametrize(
    ("groups", "role", "agency"),
    [
        (["flux-operators"], "operator", None),
        (["flux-viewers"], "viewer", None),
        (["flux-nasa-submitters"], "agency_submitter", "nasa"),
        (["/flux-dod-analysts"], "agency_analyst", "dod"),
        (["flux-viewers", "flux-operators"], "operator", None),  # the most capable role
    ],
)
def test_groups_map_to_one_role_and_agency(
    verifier: TokenVerifier, issuer: Issuer, groups: list[str], role: str, agency: str | None
) -> None:
    who = verifier.identify(issuer.token("u1", groups), AGENCIES)
    assert (who.role, who.agency) == (role, agency)


def test_a_group_for_an_unregistered_agency_grants_nothing(
    verifier: TokenVerifier, issuer: Issuer
) -> None:
    with pytest.raises(AccessDenied, match="no group grants"):
        verifier.identify(issuer.token("u1", ["flux-evil-submitters", "staff"]), AGENCIES)


def test_agency_roles_for_two_agencies_are_refused(verifier: TokenVerifier, issuer: Issuer) -> None:
    token = issuer.token("u1", ["flux-nasa-analysts", "flux-dod-analysts"])
    with pytest.raises(AccessDenied, match="several agencies"):
        verifier.identify(token, AGENCIES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lifetime": -120}, "expired"),
        ({"audience": "another-app"}, "not for Flux"),
        ({"issuer": "https://evil.example/realms/flux"}, "not issued by"),
        ({"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)}, "not valid"),
    ],
)
def test_stale_foreign_and_forged_tokens_are_rejected(
    verifier: TokenVerifier, issuer: Issuer, kwargs: dict, match: str
) -> None:
    with pytest.raises(AuthenticationError, match=match):
        verifier.identify(issuer.token("u1", ["flux-operators"], **kwargs), AGENCIES)


def test_an_unsigned_token_is_rejected(verifier: TokenVerifier, issuer: Issuer) -> None:
    good = issuer.token("u1", ["flux-operators"])
    header, payload, _ = good.split(".")
    import base64

    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT","kid":"test-key-1"}')
    with pytest.raises(AuthenticationError):
        verifier.identify(f"{none_header.decode().rstrip('=')}.{payload}.", AGENCIES)
    with pytest.raises(AuthenticationError):
        verifier.identify(f"{header}.{payload}.", AGENCIES)


def test_personal_data_entitlement_is_for_the_own_agency_only(
    verifier: TokenVerifier, issuer: Issuer
) -> None:
    token = issuer.token(
        "u1", ["flux-nasa-analysts", "flux-nasa-personal-data", "flux-dod-personal-data"]
    )
    who = verifier.identify(token, AGENCIES)
    assert who.personal_data == frozenset({"nasa"})


def test_authorize_checks_role_and_agency(verifier: TokenVerifier, issuer: Issuer) -> None:
    submitter = verifier.identify(issuer.token("s", ["flux-nasa-submitters"]), AGENCIES)
    authorize(submitter, "submit", "nasa")
    with pytest.raises(AccessDenied, match="another agency"):
        authorize(submitter, "submit", "dod")
    with pytest.raises(AccessDenied, match="does not allow"):
        authorize(submitter, "operate")
    operator = verifier.identify(issuer.token("o", ["flux-operators"]), AGENCIES)
    authorize(operator, "read_published", "dod")
    viewer = verifier.identify(issuer.token("v", ["flux-viewers"]), AGENCIES)
    with pytest.raises(AccessDenied):
        authorize(viewer, "read_published", "dod")


def test_a_symmetric_algorithm_in_the_policy_is_refused(tmp_path: Path) -> None:
    text = POLICY_FILE.read_text().replace("[RS256, ES256]", "[HS256]")
    (tmp_path / "access.yaml").write_text(text)
    with pytest.raises(ConfigurationError, match="only asymmetric"):
        load_policy(tmp_path / "access.yaml")


@pytest.mark.parametrize(
    ("line", "group"),
    [
        ("    flux-all-analysts: agency_analyst\n", "flux-all-analysts"),
        ("    flux-submitters: agency_submitter\n", "flux-submitters"),
        ('    "flux-{agency}-{agency}": agency_analyst\n', "flux-{agency}-{agency}"),
    ],
)
def test_an_agency_role_without_its_agency_is_refused_when_the_policy_loads(
    tmp_path: Path, line: str, group: str
) -> None:
    """A group granting an agency role must carry exactly one "{agency}": without it the role
    would hold for no agency. Refused at load, naming the group and what to write."""
    text = POLICY_FILE.read_text().replace(
        "    flux-viewers: viewer\n", "    flux-viewers: viewer\n" + line
    )
    (tmp_path / "access.yaml").write_text(text)
    with pytest.raises(ConfigurationError, match=str(tmp_path / "access.yaml")) as caught:
        load_policy(tmp_path / "access.yaml")
    assert repr(group) in str(caught.value) and "flux-{agency}-analysts" in str(caught.value)
    # the same file with the placeholder loads, and the group then names its agency
    fixed = text.replace(
        line, line.replace("all-", "{agency}-").replace("flux-sub", "flux-{agency}-sub")
    )
    if "{agency}-{agency}" not in fixed:
        (tmp_path / "access.yaml").write_text(fixed)
        policy = load_policy(tmp_path / "access.yaml")
        claims = {"sub": "u1", "groups": ["flux-nasa-analysts"]}
        assert identity_from_claims(claims, policy, AGENCIES).agency == "nasa"


def test_a_personal_data_group_without_its_agency_is_refused(tmp_path: Path) -> None:
    text = POLICY_FILE.read_text().replace(
        'personal_data_group: "flux-{agency}-personal-data"', "personal_data_group: flux-pii"
    )
    (tmp_path / "access.yaml").write_text(text)
    with pytest.raises(ConfigurationError, match="'flux-pii'"):
        load_policy(tmp_path / "access.yaml")
