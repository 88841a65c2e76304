"""The access policy (``contracts/access.yaml``): roles, the token-to-role mapping, masking.

One file holds who may do what, so the README's role table, the intake service, the
published copies' masking and the CLI's checks cannot disagree. A bad file is a
``ConfigurationError`` naming the file and the entry, raised when the policy is loaded.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flux_pipelines.config_files import read_yaml, validated
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.slugs import check_slug

Role = Literal["operator", "viewer", "agency_submitter", "agency_analyst"]
ROLES: tuple[str, ...] = get_args(Role)
Action = Literal[
    "view_ui", "operate", "submit", "read_reports", "read_published", "read_cross_agency"
]
Treatment = Literal["clear", "mask", "hash"]
Classification = Literal["public", "internal", "restricted"]
CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
AGENCY_PLACEHOLDER = "{agency}"
# Roles held for one agency: the group granting one must say which (its "{agency}").
AGENCY_ROLES: tuple[Role, ...] = ("agency_submitter", "agency_analyst")
POLICY_FILE = Path(__file__).resolve().parents[2] / "contracts" / "access.yaml"
# Agency ids are lower-case slugs (agencies.yaml); a group pattern's {agency} matches only those.
_AGENCY_ID = r"(?P<agency>[a-z][a-z0-9_]*)"
ENV_OVERRIDES = {
    "issuer": "FLUX_OIDC_ISSUER",
    "audience": "FLUX_OIDC_AUDIENCE",
    "jwks_url": "FLUX_OIDC_JWKS_URL",
    "jwks_file": "FLUX_OIDC_JWKS_FILE",
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdentitySettings(_Strict):
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    groups_claim: str = "groups"
    groups: dict[str, Role]
    personal_data_group: str | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None

    @model_validator(mode="after")
    def _agency_groups_name_their_agency(self) -> IdentitySettings:
        """A group granting an agency role without one ``{agency}`` would grant it for no
        agency (or, with two, fail to match): refused when the policy loads."""
        agency_groups = [g for g, role in self.groups.items() if role in AGENCY_ROLES]
        if self.personal_data_group is not None:
            agency_groups.append(self.personal_data_group)
        for group in agency_groups:
            if group.count(AGENCY_PLACEHOLDER) != 1:
                role = self.groups.get(group, "personal data entitlement")
                raise ValueError(
                    f"identity.groups: {group!r} grants {role}, a role held for one agency, "
                    f"but has {group.count(AGENCY_PLACEHOLDER)} {AGENCY_PLACEHOLDER} "
                    f"placeholders; write exactly one where the group name carries the agency "
                    f'id, e.g. "flux-{AGENCY_PLACEHOLDER}-analysts": agency_analyst'
                )
        return self

    @model_validator(mode="after")
    def _asymmetric_only(self) -> IdentitySettings:
        weak = [a for a in self.algorithms if not a.startswith(("RS", "ES", "PS", "Ed"))]
        if weak:
            raise ValueError(
                f"identity.algorithms {weak}: only asymmetric signatures are accepted (a shared "
                "secret would let every service that verifies tokens also mint them)"
            )
        return self


class RoleSpec(_Strict):
    description: str
    actions: tuple[Action, ...]
    all_agencies: bool = False


class Masking(_Strict):
    public: dict[str, Treatment] = Field(default_factory=dict)
    internal: dict[str, Treatment] = Field(default_factory=dict)
    restricted: dict[str, Treatment] = Field(default_factory=dict)
    personal: dict[str, Treatment] = Field(default_factory=dict)
    cross_agency: dict[str, Treatment] = Field(default_factory=dict)


# POSIX group names: lower-case, digits, '-' and '_' (what groupadd accepts everywhere).
_POSIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


class AgencyGroupNames(_Strict):
    """One agency's POSIX groups (``PosixGroups.for_agency``): the storage layer's roles."""

    agency: str
    analysts: str
    submitters: str
    report_readers: str
    personal_data: str


class PosixGroups(_Strict):
    """The operating-system groups that enforce read isolation on a Flux home.

    Built here and nowhere else from ``{agency}`` patterns. They are not the identity
    provider's group names (``identity.groups``): Linux caps a group name at 32 characters,
    which ``flux-library-of-congress-analysts`` already exceeds.
    """

    analysts: str = "fx-{agency}-analysts"
    submitters: str = "fx-{agency}-submit"
    report_readers: str = "fx-{agency}-reports"
    personal_data: str = "fx-{agency}-personal"
    all_analysts: str = "flux-analysts"
    max_name_length: int = Field(default=32, ge=8, le=256)

    @model_validator(mode="after")
    def _placeholders(self) -> PosixGroups:
        per_agency = ("analysts", "submitters", "report_readers", "personal_data")
        for field in per_agency:
            if getattr(self, field).count(AGENCY_PLACEHOLDER) != 1:
                raise ValueError(f"posix.{field} must contain {AGENCY_PLACEHOLDER} once")
        if AGENCY_PLACEHOLDER in self.all_analysts:
            raise ValueError(f"posix.all_analysts is one group: no {AGENCY_PLACEHOLDER}")
        return self

    def group(self, name: str) -> str:
        """``name`` checked as a POSIX group name; ``ConfigurationError`` saying why not."""
        if not _POSIX_NAME.match(name) or len(name) > self.max_name_length:
            raise ConfigurationError(
                f"access policy posix: group name {name!r} is not usable: lower-case letters, "
                f"digits, '-' and '_', at most {self.max_name_length} characters (edit the "
                "posix section of contracts/access.yaml)"
            )
        return name

    def for_agency(self, agency: str) -> AgencyGroupNames:
        def fill(pattern: str) -> str:
            return self.group(pattern.replace(AGENCY_PLACEHOLDER, agency))

        return AgencyGroupNames(
            agency=agency,
            analysts=fill(self.analysts),
            submitters=fill(self.submitters),
            report_readers=fill(self.report_readers),
            personal_data=fill(self.personal_data),
        )


# POSIX user names (what useradd accepts everywhere): as group names, plus a trailing '$'.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")


class AgencyMembers(_Strict):
    """Who holds one agency's roles on this host (``members:``), by POSIX user name."""

    analysts: tuple[str, ...] = ()
    submitters: tuple[str, ...] = ()
    personal_data: tuple[str, ...] = ()  # analysts of the agency entitled to personal data

    @model_validator(mode="after")
    def _names_and_entitlement(self) -> AgencyMembers:
        for field in ("analysts", "submitters", "personal_data"):
            bad = [u for u in getattr(self, field) if not _USER_NAME.match(u) or len(u) > 32]
            if bad:
                raise ValueError(f"{field}: {bad} are not POSIX user names")
        outsiders = sorted(set(self.personal_data) - set(self.analysts))
        if outsiders:
            raise ValueError(
                f"personal_data: {outsiders} are not analysts of this agency; only its "
                "analysts can be entitled to its personal data"
            )
        return self

    def users(self) -> set[str]:
        return {*self.analysts, *self.submitters, *self.personal_data}


class AccessPolicy(_Strict):
    version: str
    identity: IdentitySettings
    roles: dict[Role, RoleSpec]
    masking: Masking
    posix: PosixGroups = Field(default_factory=PosixGroups)
    # Optional: agency id -> who holds its roles, for a host without a directory service;
    # `flux access check` then compares group membership with it (None: not checked).
    members: dict[str, AgencyMembers] | None = None

    @model_validator(mode="after")
    def _every_role_defined(self) -> AccessPolicy:
        missing = [r for r in ROLES if r not in self.roles]
        if missing:
            raise ValueError(f"roles: {', '.join(missing)} not defined")
        return self

    @model_validator(mode="after")
    def _one_agency_per_user(self) -> AccessPolicy:
        seen: dict[str, str] = {}
        for agency, roles in (self.members or {}).items():
            try:
                check_slug(agency, "members: agency")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from exc
            for user in sorted(roles.users()):
                if user in seen and seen[user] != agency:
                    raise ValueError(
                        f"members: user {user!r} holds roles of {seen[user]} and {agency}; "
                        "one identity acts for one agency"
                    )
                seen[user] = agency
        return self

    def allows(self, role: Role, action: Action) -> bool:
        return action in self.roles[role].actions

    def group_patterns(self) -> list[tuple[re.Pattern[str], Role]]:
        """Each group name as an anchored pattern (``{agency}`` -> an agency id), with its role."""
        out = []
        for group, role in self.identity.groups.items():
            parts = [re.escape(p) for p in group.split(AGENCY_PLACEHOLDER)]
            out.append((re.compile("^" + _AGENCY_ID.join(parts) + "$"), role))
        return out

    def personal_data_pattern(self) -> re.Pattern[str] | None:
        group = self.identity.personal_data_group
        if group is None:
            return None
        parts = [re.escape(p) for p in group.split(AGENCY_PLACEHOLDER)]
        return re.compile("^" + _AGENCY_ID.join(parts) + "$")


def load_policy(path: Path | None = None) -> AccessPolicy:
    """The policy file (default ``contracts/access.yaml``), with the environment's OIDC
    settings applied; ``ConfigurationError`` naming the file when it is unusable."""
    source = path or Path(os.environ.get("FLUX_ACCESS_POLICY") or POLICY_FILE)
    raw = read_yaml(source, "access policy")
    if not isinstance(raw, dict):
        raise ConfigurationError(f"access policy {source}: expected a mapping at the top")
    identity = dict(raw.get("identity") or {})
    for key, env in ENV_OVERRIDES.items():
        if os.environ.get(env):
            identity[key] = os.environ[env]
    raw["identity"] = identity
    return validated(AccessPolicy, raw, source, "access policy")


@cache
def default_policy() -> AccessPolicy:
    return load_policy()
