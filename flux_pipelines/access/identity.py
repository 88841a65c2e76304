"""Who is asking: a verified OIDC token turned into a Flux identity (role and agency).

The token is verified with PyJWT against the provider's published keys (JWKS URL, or a
JWKS file for an offline deployment): signature with an asymmetric algorithm only, expiry,
not-before, issuer and audience. The role and agency come from the token's groups through
the policy's mapping, never from a request field, a folder or a command-line string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from flux_pipelines.access.policy import AccessPolicy, Action, Role, default_policy
from flux_pipelines.errors import AccessDenied, AuthenticationError, ConfigurationError

LEEWAY_SECONDS = 30  # clock skew tolerated between the provider and this host
CLAIMED_MAX_CHARS = 200  # of a claim read from an unverified token, for the audit trail
# One identity holds at most one role: the most capable of its groups', so a user in both
# the viewers' and the operators' groups acts as an operator (and is audited as one).
_RANK: dict[Role, int] = {"operator": 3, "agency_analyst": 2, "agency_submitter": 1, "viewer": 0}


@dataclass(frozen=True)
class Identity:
    """An authenticated person or service, as the audit trail records them."""

    subject: str
    role: Role
    agency: str | None  # the agency of an agency role; None for operators and viewers
    name: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    # Agencies whose personal data this identity may read in clear (its personal-data groups).
    personal_data: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        """How notes and the audit trail name the identity: e-mail or subject, and the role."""
        who = self.email or self.name or self.subject
        where = f" of {self.agency}" if self.agency else ""
        return f"{who} ({self.role}{where})"

    def audit_fields(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "email": self.email,
            "role": self.role,
            "agency": self.agency,
        }


class TokenRejected(AuthenticationError):
    """A presented token failed verification; ``reason`` is its class for the audit trail
    (expired, bad_signature, wrong_audience, wrong_issuer, unknown_key, bad_algorithm,
    not_yet_valid, missing_claim, malformed, too_long, invalid)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# PyJWT's errors, most specific first (subclasses before their bases), and their class.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.PyJWKClientError, "unknown_key"),
    (jwt.DecodeError, "malformed"),
)


def rejection_reason(exc: Exception) -> str:
    """The reason class of a PyJWT error (``invalid`` for one not listed)."""
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "invalid")


def unverified_claims(token: str) -> dict[str, str]:
    """``sub`` and ``iss`` as the token *claims* them, read without verifying anything: for
    the audit record of a rejected token only, never to decide anything. Each is cut to
    ``CLAIMED_MAX_CHARS``; a token that cannot be decoded claims nothing."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        return {}
    return {
        name: str(claims[name])[:CLAIMED_MAX_CHARS]
        for name in ("sub", "iss")
        if isinstance(claims.get(name), str | int | float)
    }


class TokenVerifier:
    """Verifies bearer tokens against the policy's issuer, audience and keys."""

    def __init__(self, policy: AccessPolicy | None = None) -> None:
        self.policy = policy or default_policy()
        settings = self.policy.identity
        self._jwks_client: jwt.PyJWKClient | None = None
        self._jwks: jwt.PyJWKSet | None = None
        if settings.jwks_file:
            self._jwks = _read_jwks(Path(settings.jwks_file))
        elif settings.jwks_url:
            self._jwks_client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300)
        else:
            raise ConfigurationError(
                "access policy: no signing keys configured; set FLUX_OIDC_JWKS_URL to the "
                "provider's JWKS endpoint (or FLUX_OIDC_JWKS_FILE to a saved JWKS)"
            )

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims; ``TokenRejected`` (with its reason class) otherwise."""
        settings = self.policy.identity
        try:
            key = self._signing_key(token)
            return jwt.decode(
                token,
                key,
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(rejection_reason(exc), _message(exc, settings)) from exc

    def identify(self, token: str, agencies: set[str]) -> Identity:
        """The identity a valid token carries; ``agencies``: the registered agency ids."""
        return identity_from_claims(self.claims(token), self.policy, agencies)

    def _signing_key(self, token: str) -> Any:
        if self._jwks_client is not None:
            return self._jwks_client.get_signing_key_from_jwt(token).key
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise TokenRejected(
            "unknown_key", f"the token's signing key {kid!r} is not among the provider's"
        )


def _message(exc: Exception, settings: Any) -> str:
    """What the client is told: which check failed and what to do, never the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired; sign in again"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the token is not for Flux (audience is not {settings.audience!r})"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"the token was not issued by {settings.issuer}; sign in through Flux's provider"
    if isinstance(exc, jwt.PyJWKClientError):
        return f"the token's signing key is unknown ({exc})"
    return f"the token is not valid: {exc}"


def identity_from_claims(
    claims: dict[str, Any], policy: AccessPolicy, agencies: set[str]
) -> Identity:
    """Map verified claims onto one role (and agency) through the policy's group patterns.

    A group naming an agency that is not registered grants nothing; groups granting agency
    roles for two different agencies are refused (one identity acts for one agency)."""
    groups = claims.get(policy.identity.groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AuthenticationError(f"claim {policy.identity.groups_claim!r} is not a list of names")
    grants: list[tuple[Role, str | None]] = []
    for group in groups:
        for pattern, role in policy.group_patterns():
            match = pattern.match(group.strip("/"))
            if match is None:
                continue
            agency = match.groupdict().get("agency")
            if agency is not None and agency not in agencies:
                continue
            grants.append((role, agency))
    subject = str(claims.get("sub", ""))
    if not grants:
        raise AccessDenied(subject or "this identity", "use Flux", "no group grants a Flux role")
    role, agency = max(grants, key=lambda g: _RANK[g[0]])
    if not policy.roles[role].all_agencies:
        agencies_granted = {a for r, a in grants if r == role}
        if len(agencies_granted) > 1:
            # A group without "{agency}" can grant an agency role with no agency at all.
            named = {a or "no agency" for a in agencies_granted}
            raise AccessDenied(
                subject,
                "use Flux",
                f"groups grant {role} for several agencies ({', '.join(sorted(named))})"
                "; one identity acts for one agency",
            )
    else:
        agency = None
    personal = policy.personal_data_pattern()
    entitled = frozenset(
        m.group("agency")
        for g in groups
        if personal is not None and (m := personal.match(g.strip("/"))) is not None
    )
    return Identity(
        subject=subject,
        role=role,
        agency=agency,
        name=str(claims.get("name", "")),
        email=str(claims.get("email", "")),
        groups=tuple(groups),
        personal_data=entitled & ({agency} if agency else set()),
    )


def authorize(
    identity: Identity,
    action: Action,
    agency: str | None = None,
    policy: AccessPolicy | None = None,
) -> None:
    """Raise ``AccessDenied`` unless the identity's role allows ``action`` on ``agency``."""
    policy = policy or default_policy()
    if not policy.allows(identity.role, action):
        raise AccessDenied(identity.label, action, f"the {identity.role} role does not allow it")
    if agency is None or policy.roles[identity.role].all_agencies:
        return
    if identity.agency != agency:
        raise AccessDenied(
            identity.label, f"{action} for agency {agency}", "it belongs to another agency"
        )


def _read_jwks(path: Path) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigurationError(f"JWKS file {path}: cannot be used ({exc})") from exc
