"""Refusals of the intake, each with the HTTP status that tells a client what to fix."""

from __future__ import annotations

from flux_pipelines.errors import FluxError


class IntakeRefused(FluxError):
    """A request the intake will not serve (a 4xx): ``code`` is stable for clients, the
    message says what happened and what to do; never a traceback, never another agency's
    data."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        denied: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.denied = denied  # an access decision (audited "denied"), not a bad request
        self.headers = headers or {}


def not_found(what: str, *, denied: bool = False) -> IntakeRefused:
    """The one answer for 'absent' and 'another agency's' (``denied``): the two read the
    same, so existence is not revealed."""
    return IntakeRefused(404, "not_found", f"no {what} here for you", denied=denied)


def forbidden(message: str) -> IntakeRefused:
    return IntakeRefused(403, "forbidden", message, denied=True)
