"""The intake service's HTTP API (FastAPI). See ``create_app`` for the endpoints.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``; the identity (role and
agency) comes from the verified token only. Refusals are JSON ``{"error", "message"}`` with
the status that says what to fix; every decision on an authenticated request (allowed,
denied, refused) is appended to the audit trail before the answer is sent, and so is every
token that fails verification (aggregated per reason and client: ``access/failed_tokens.py``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from flux_pipelines.access.audit import Outcome, record_access
from flux_pipelines.access.failed_tokens import WINDOW_SECONDS, FailedTokenLedger, TokenFailure
from flux_pipelines.access.identity import (
    Identity,
    TokenRejected,
    TokenVerifier,
    authorize,
    unverified_claims,
)
from flux_pipelines.access.policy import AccessPolicy, Action, load_policy
from flux_pipelines.audit.trail import JSONValue
from flux_pipelines.config_files import problems
from flux_pipelines.contracts.registry import Agency, Registry, load_registry
from flux_pipelines.errors import (
    AccessDenied,
    AuditTrailCorrupt,
    AuthenticationError,
    ConfigurationError,
    StorageNotConfined,
    TransientError,
    UnsafePath,
)
from flux_pipelines.home import resolve_home
from flux_pipelines.ingest.confine import LANDING, open_zone
from flux_pipelines.intake import checks, deliveries, prevalidate, reads
from flux_pipelines.intake.errors import IntakeRefused, forbidden, not_found
from flux_pipelines.intake.staging import StagedFile, max_bytes_setting, receive, too_large

ALLOWED: Outcome = "allowed"
DENIED: Outcome = "denied"
REFUSED: Outcome = "refused"  # allowed, but the input is bad
log = logging.getLogger("flux.intake")
REALM = 'Bearer realm="flux"'
MAX_TOKEN_BYTES = 16 << 10
AGENCY_HEADER = "x-flux-agency"
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
NO_ROWS = "published rows for that day"  # one answer for absent and not yours
SUMMARY_HEADERS = {  # a report page shows delivered values: nothing in it may run or load
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Intake:
    """What every request needs: the home, who may do what, and who delivers what."""

    home: Path
    policy: AccessPolicy
    registry: Registry
    verifier: TokenVerifier
    max_bytes: int
    failed_tokens: FailedTokenLedger
    agency_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.agency_ids = {a.id for a in self.registry.agencies}

    def agency(self, agency_id: str | None) -> Agency | None:
        return None if agency_id is None else self.registry.agency(agency_id)


def create_app(
    home: Path | None = None,
    *,
    max_bytes: int | None = None,
    policy: AccessPolicy | None = None,
    registry: Registry | None = None,
    failed_token_window: float = WINDOW_SECONDS,
) -> FastAPI:
    """The intake app over ``home``; fails fast (``ConfigurationError``) without signing keys,
    with a bad policy, registry or size limit. ``failed_token_window``: seconds over which
    rejected tokens of one reason and client are counted into one audit record."""
    chosen = policy or load_policy()
    root = resolve_home(home)
    intake = Intake(
        home=root,
        policy=chosen,
        registry=registry or load_registry(),
        verifier=TokenVerifier(chosen),
        max_bytes=max_bytes_setting(max_bytes),
        failed_tokens=FailedTokenLedger(root, window_seconds=failed_token_window),
    )
    app = FastAPI(
        title="Flux intake",
        summary="Agencies deliver files and read their reports; analysts read published rows.",
        docs_url=None,
        redoc_url=None,
        lifespan=_flushing(intake.failed_tokens),
    )
    app.state.intake = intake
    _add_error_handlers(app)
    _add_routes(app)
    return app


# --- identity and access ------------------------------------------------------------------


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake  # set once, by create_app
    return intake


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthenticationError("no token: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("the Authorization header is not 'Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("too_long", "the token is too long to be one Flux's provider issues")
    return token


def current_identity(request: Request) -> Identity:
    """The verified identity of the request (a sync dependency: fetching the provider's keys
    blocks, so FastAPI runs it on a worker thread). A presented token that fails, or that
    grants no Flux role, is noted for the audit trail before the refusal; a request with no
    bearer token at all presented nothing to audit."""
    intake = _intake(request)
    header = request.headers.get("authorization")
    try:
        token = bearer_token(header)
        return intake.verifier.identify(token, intake.agency_ids)
    except TokenRejected as exc:
        intake.failed_tokens.note(_failure(request, exc.reason, header))
        raise
    except AccessDenied:  # a valid token whose groups grant no (or an ambiguous) Flux role
        intake.failed_tokens.note(_failure(request, "no_role", header, verified=True))
        raise


def _failure(
    request: Request, reason: str, header: str | None, *, verified: bool = False
) -> TokenFailure:
    """What the audit record says of a rejected token: claims read without trusting them."""
    token = (header or "").strip().partition(" ")[2].strip()
    claimed = unverified_claims(token) if len(token) <= MAX_TOKEN_BYTES else {}
    route = request.scope.get("route")
    endpoint = f"{request.method} {getattr(route, 'path', request.url.path[:100])}"
    forwarded = request.headers.get("x-forwarded-for")
    return TokenFailure(
        reason=reason,
        client=request.client.host if request.client else "unknown",
        endpoint=endpoint,
        claimed_subject=claimed.get("sub"),
        claimed_issuer=claimed.get("iss"),
        forwarded_for=forwarded[:200] if forwarded else None,
        token_verified=verified,
    )


def _flushing(ledger: FailedTokenLedger) -> Any:
    """The app's lifespan: aggregated failed-token counts reach the trail when their window
    ends (checked every few seconds) and when the intake stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def periodically() -> None:
            while True:
                await asyncio.sleep(min(ledger.window_seconds / 4, 15.0))
                await run_in_threadpool(ledger.flush)

        task = asyncio.create_task(periodically())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await run_in_threadpool(ledger.flush, force=True)

    return lifespan


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def allow(
    intake: Intake,
    identity: Identity,
    action: Action,
    agency: str | None,
    *,
    hidden_as: str | None = None,
) -> None:
    """Refuse unless the role allows ``action`` on ``agency``: 403 for a role without it; for
    another agency's things the 404 of an absent ``hidden_as`` when given (their existence
    is not revealed), else 403."""
    if not intake.policy.allows(identity.role, action):
        role = identity.role
        raise forbidden(f"{identity.label} may not {action}: the {role} role does not allow it")
    try:
        authorize(identity, action, agency, intake.policy)
    except AccessDenied as exc:
        if hidden_as is not None:
            raise not_found(hidden_as, denied=True) from exc
        raise forbidden(str(exc)) from exc


@dataclass
class Audit:
    """The audit record of one request, filled in as its target becomes known (only checked
    values go to the record's agency, dataset and day)."""

    intake: Intake
    identity: Identity
    action: str
    agency: str | None = None
    dataset: str | None = None
    day: str | None = None
    detail: dict[str, JSONValue] = field(default_factory=dict)

    def record(self, outcome: Outcome, **detail: JSONValue) -> None:
        record_access(
            self.intake.home,
            self.identity,
            self.action,
            outcome,
            agency=self.agency,
            dataset=self.dataset,
            day=self.day,
            detail={**self.detail, **detail},
        )

    def refusal(self, exc: IntakeRefused) -> None:
        outcome = DENIED if exc.denied else REFUSED
        self.record(outcome, status=exc.status, reason=exc.message[:500])


@contextmanager
def audited(audit: Audit) -> Iterator[Audit]:
    """Record a refusal raised inside the block, then let it answer the client."""
    try:
        yield audit
    except IntakeRefused as exc:
        audit.refusal(exc)
        raise


# --- routes ----------------------------------------------------------------------------------


def _add_routes(app: FastAPI) -> None:
    app.get("/healthz", include_in_schema=False)(healthz)
    app.put("/v1/deliveries/{dataset}/{day}/{filename:path}", status_code=201)(upload)
    app.get("/v1/deliveries/{delivery_id}")(delivery_status)
    app.get("/v1/deliveries/{delivery_id}/report")(delivery_report)
    app.get("/v1/deliveries/{delivery_id}/summary")(delivery_summary)
    # the summary page links its reports by their file names, relative to the page
    app.get("/v1/deliveries/{delivery_id}/error_report.csv", include_in_schema=False)(
        delivery_report
    )
    app.get("/v1/deliveries/{delivery_id}/warning_report.csv", include_in_schema=False)(
        warning_report
    )
    app.post("/v1/validate/{dataset}/{day}/{filename:path}")(validate)
    app.get("/v1/published/{agency}/{dataset}/{day}")(published)


def healthz() -> dict[str, str]:
    """For probes: the process answers (no token, no disk)."""
    return {"status": "ok"}


def _checked_file(
    intake: Intake,
    request: Request,
    audit: Audit,
    agency: Agency | None,
    raw: tuple[str, str, str],
) -> checks.Target:
    """The parts an upload and a validation share, checked in order (dataset, day, name,
    declared type, size) and noted on the audit record as each is known."""
    dataset, day, filename = raw
    audit.dataset = checks.check_dataset(intake.registry, agency, dataset)
    when = checks.check_day(day, agency)
    audit.day = when.isoformat()
    name = checks.check_name(filename)
    audit.detail["file"] = name
    fmt = checks.format_of(name)
    checks.check_content_type(request.headers.get("content-type"), fmt)
    _check_declared_size(request, intake.max_bytes)
    return checks.Target(agency.id if agency else None, dataset, when, name, fmt)


def _upload_target(
    intake: Intake, identity: Identity, request: Request, audit: Audit, raw: tuple[str, str, str]
) -> checks.Target:
    """Who uploads what where: the agency from the token, every part checked (in order: the
    role, another agency named in the request, dataset, day, name, declared type, size)."""
    allow(intake, identity, "submit", identity.agency)
    agency = intake.agency(identity.agency)
    if agency is None:
        raise forbidden(
            "an upload is made by an agency's submitter: the agency comes from the token, and "
            f"{identity.label} names none"
        )
    audit.agency = agency.id
    named = request.query_params.get("agency") or request.headers.get(AGENCY_HEADER)
    if named is not None and named != agency.id:
        raise forbidden(
            f"{identity.label} delivers for {agency.id} only: the agency comes from the token, "
            f"never from the request (it named {named[:60]!r})"
        )
    return _checked_file(intake, request, audit, agency, raw)


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)


async def upload(
    dataset: str,
    day: str,
    filename: str,
    request: Request,
    identity: CurrentIdentity,
) -> JSONResponse:
    """Land the raw request body as ``landing/<agency>/<dataset>/<day>/<filename>``."""
    intake = _intake(request)
    audit = Audit(intake, identity, "submit", detail={"requested": filename[:200]})
    try:
        target = await run_in_threadpool(
            _upload_target, intake, identity, request, audit, (dataset, day, filename)
        )
        staged, got = await receive(
            request.stream(),
            lambda: _open_landing(intake.home, target),
            fmt=target.format,
            max_bytes=intake.max_bytes,
        )
    except IntakeRefused as exc:
        await run_in_threadpool(audit.refusal, exc)
        raise
    except UnsafePath as exc:  # a link or a file where a landing folder belongs
        refusal = unsafe_landing(exc)
        await run_in_threadpool(audit.refusal, refusal)
        raise refusal from exc
    except OSError as exc:
        storage = _storage_refusal(exc)
        if storage is None:
            raise
        await run_in_threadpool(audit.refusal, storage)
        raise storage from exc
    receipt = deliveries.IntakeReceipt.new(
        agency=target.agency,
        dataset=target.dataset,
        day=target.day.isoformat(),
        file=target.name,
        sha256=got.sha256,
        size=got.size,
        content_type=request.headers.get("content-type"),
        who=identity.audit_fields(),
    )
    await run_in_threadpool(_land, intake, audit, staged, receipt)
    status_url = f"/v1/deliveries/{receipt.id}"
    body = {
        "id": receipt.id,
        "status": "landed",
        "agency": receipt.agency,
        "dataset": receipt.dataset,
        "day": receipt.day,
        "file": receipt.file,
        "sha256": receipt.sha256,
        "size": receipt.size,
        "status_url": status_url,
    }
    return JSONResponse(body, status_code=201, headers={"Location": status_url})


def _open_landing(home: Path, target: checks.Target) -> StagedFile:
    """The day folder (made if missing), every folder opened without following a link."""
    assert target.agency is not None  # an upload always has one (``_upload_target``)
    parts = [target.agency, target.dataset, target.day.isoformat()]
    folder = open_zone(home / LANDING, parts, zone=LANDING, create=True)
    try:
        return StagedFile(folder, target.name)
    except BaseException:
        folder.close()
        raise


def _land(
    intake: Intake, audit: Audit, staged: StagedFile, receipt: deliveries.IntakeReceipt
) -> None:
    """Receipt, audit record, then the rename: a file that lands has both; a failure before
    the rename leaves neither the file nor its staged part."""
    recorded = False
    try:
        deliveries.write_intake_receipt(intake.home, receipt)
        audit.record(ALLOWED, delivery_id=receipt.id, sha256=receipt.sha256, size=receipt.size)
        recorded = True
        staged.commit()
    except BaseException as exc:
        staged.discard()
        deliveries.remove_intake_receipt(intake.home, receipt.id)
        refusal = _storage_refusal(exc) if isinstance(exc, OSError) else None
        if recorded:  # the trail must not say it landed
            why = refusal.message if refusal else type(exc).__name__
            audit.record("failed", delivery_id=receipt.id, reason=why)
        if refusal is None:
            raise
        raise refusal from exc
    log.info(
        "landed %s/%s/%s/%s (%d bytes, sha256 %s) for %s as delivery %s",
        receipt.agency, receipt.dataset, receipt.day, receipt.file, receipt.size,
        receipt.sha256, audit.identity.label, receipt.id,
    )  # fmt: skip


def unsafe_landing(exc: UnsafePath) -> IntakeRefused:
    """Names the agency's own folder and the rule, never where a planted link points."""
    return IntakeRefused(
        409,
        "landing_unsafe",
        f"{exc.path} is not a real folder Flux may write into [{exc.rule_id}]; nothing was "
        "written: ask the operators to replace it with a real folder",
    )


def _storage_refusal(exc: OSError) -> IntakeRefused | None:
    """The client's share of a storage failure: a full disk, a name taken by a folder."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IntakeRefused(
            507, "no_space", "the landing volume is full; retry later (the operators are told)"
        )
    if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
        return IntakeRefused(
            409, "name_taken", "a folder in the landing day has that name; choose another name"
        )
    return None


def _own_receipt(
    intake: Intake, identity: Identity, delivery_id: str, audit: Audit
) -> deliveries.IntakeReceipt:
    """The receipt of a delivery the identity may read reports of; 404 alike for an unknown
    id and for another agency's delivery."""
    allow(intake, identity, "read_reports", None)
    audit.detail["delivery_id"] = delivery_id[:64]
    receipt = deliveries.read_intake_receipt(intake.home, checks.check_delivery_id(delivery_id))
    if receipt is None:
        raise not_found("such delivery")
    audit.agency, audit.dataset, audit.day = receipt.agency, receipt.dataset, receipt.day
    try:
        authorize(identity, "read_reports", receipt.agency, intake.policy)
    except AccessDenied as exc:
        raise not_found("such delivery", denied=True) from exc
    return receipt


def delivery_status(
    delivery_id: str,
    request: Request,
    identity: CurrentIdentity,
) -> dict[str, Any]:
    """landed / loaded / rejected / superseded, with counts once the load recorded them."""
    intake = _intake(request)
    with audited(Audit(intake, identity, "read_status")) as audit:
        receipt = _own_receipt(intake, identity, delivery_id, audit)
        doc = deliveries.delivery_status(intake.home, receipt)
        audit.record(ALLOWED, status=doc["status"])
    return doc


def delivery_report(
    delivery_id: str,
    request: Request,
    identity: CurrentIdentity,
    kind: str = "errors",
) -> StreamingResponse:
    """The Broker-format error report (``kind=errors``) or warning report (``kind=warnings``)
    of the load that read this delivery, as CSV."""
    if kind not in ("errors", "warnings"):
        raise IntakeRefused(400, "bad_request", "kind is errors or warnings")
    handle, name = _report_file(request, identity, delivery_id, kind, "read_report")
    return StreamingResponse(
        reads.blocks(handle),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def warning_report(
    delivery_id: str, request: Request, identity: CurrentIdentity
) -> StreamingResponse:
    return delivery_report(delivery_id, request, identity, kind="warnings")


def delivery_summary(
    delivery_id: str,
    request: Request,
    identity: CurrentIdentity,
) -> StreamingResponse:
    """The HTML summary of the load that read this delivery."""
    handle, _ = _report_file(request, identity, delivery_id, "summary", "read_summary")
    return StreamingResponse(
        reads.blocks(handle), media_type="text/html; charset=utf-8", headers=SUMMARY_HEADERS
    )


def _report_file(
    request: Request, identity: Identity, delivery_id: str, kind: str, action: str
) -> tuple[BinaryIO, str]:
    """An open handle on one report file of the load that read this very delivery; 409 while
    no load has (the day's older report would describe other content)."""
    intake = _intake(request)
    with audited(Audit(intake, identity, action, detail={"kind": kind})) as audit:
        receipt = _own_receipt(intake, identity, delivery_id, audit)
        load = deliveries.load_receipt(intake.home, receipt)
        if load is None or not deliveries.covers(load, receipt):
            state = deliveries.delivery_status(intake.home, receipt)["status"]
            raise IntakeRefused(
                409, "not_loaded", f"no report for this delivery: it is {state}, not loaded yet"
            )
        name = deliveries.REPORT_FILES[kind]
        try:
            handle = reads.confined_file(
                deliveries.open_report_folder(intake.home, receipt, load), name
            )
        except FileNotFoundError:
            handle = None
        if handle is None:
            raise IntakeRefused(
                409, "report_pending", "the load finished; its report is being written: retry"
            )
        _record_serving(audit, handle, run_id=load.run_id)
    return handle, name


def _record_serving(audit: Audit, handle: BinaryIO, **detail: JSONValue) -> None:
    """The allowed record of a read about to be served; the handle is closed if it fails."""
    try:
        audit.record(ALLOWED, **detail)
    except BaseException:
        handle.close()
        raise


async def validate(
    dataset: str,
    day: str,
    filename: str,
    request: Request,
    identity: CurrentIdentity,
    show: int = 20,
) -> dict[str, Any]:
    """``flux validate``'s verdict on the raw request body, nothing landed. A submitter gets
    its agency's verdict (its severity overrides); an operator the contract's own."""
    intake = _intake(request)
    audit = Audit(intake, identity, "validate", detail={"requested": filename[:200]})
    try:
        target = await run_in_threadpool(
            _validation_target, intake, identity, request, audit, (dataset, day, filename)
        )
        staged, got = await receive(
            request.stream(),
            lambda: StagedFile(prevalidate.scratch_folder(intake.home), target.name),
            fmt=target.format,
            max_bytes=intake.max_bytes,
        )
    except IntakeRefused as exc:
        await run_in_threadpool(audit.refusal, exc)
        raise
    return await run_in_threadpool(_judge, intake, audit, staged, target, got.sha256, show)


def _validation_target(
    intake: Intake, identity: Identity, request: Request, audit: Audit, raw: tuple[str, str, str]
) -> checks.Target:
    allow(intake, identity, "submit", identity.agency)
    agency = intake.agency(identity.agency)
    audit.agency = agency.id if agency else None
    named = request.query_params.get("agency") or request.headers.get(AGENCY_HEADER)
    if named is not None and (agency is None or named != agency.id):
        raise forbidden("the agency of a verdict comes from the token, never from the request")
    return _checked_file(intake, request, audit, agency, raw)


def _judge(
    intake: Intake,
    audit: Audit,
    staged: StagedFile,
    target: checks.Target,
    sha256: str,
    show: int,
) -> dict[str, Any]:
    folder = staged.folder.path
    try:
        staged.commit()
        doc = prevalidate.judge(
            folder / target.name,
            dataset=target.dataset,
            day=target.day,
            agency=target.agency,
            show=show,
        )
    except ConfigurationError as exc:  # e.g. no contract version in force on that day
        refusal = IntakeRefused(422, "no_verdict", str(exc))
        audit.refusal(refusal)
        raise refusal from exc
    finally:
        prevalidate.remove_scratch(folder)
    audit.record(ALLOWED, sha256=sha256, exit_code=doc["exit_code"])
    return doc


def published(
    agency: str,
    dataset: str,
    day: str,
    request: Request,
    identity: CurrentIdentity,
) -> StreamingResponse:
    """The day's published rows: JSON ``{agency, dataset, day, rows: [...]}``, or the Parquet
    copy itself with ``Accept: application/vnd.apache.parquet``. Another agency's: 404."""
    intake = _intake(request)
    want_parquet = any(t in request.headers.get("accept", "") for t in PARQUET_TYPES)
    with audited(Audit(intake, identity, "read_published")) as audit:
        allow(intake, identity, "read_published", agency, hidden_as=NO_ROWS)
        owner = _registered(intake, agency)
        audit.agency = owner.id
        audit.dataset = checks.check_dataset(intake.registry, owner, dataset)
        when = checks.check_day(day, None)
        audit.day = when.isoformat()
        path = reads.published_copy(intake.home, identity, owner.id, dataset, when)
        handle = reads.open_published(path)
        if handle is None:
            raise not_found(NO_ROWS)
        _record_serving(audit, handle, format="parquet" if want_parquet else "json")
    if want_parquet:
        return StreamingResponse(reads.blocks(handle), media_type=PARQUET_TYPES[0])
    header = {"agency": owner.id, "dataset": dataset, "day": when.isoformat()}
    return StreamingResponse(reads.parquet_as_json(handle, header), media_type="application/json")


def _registered(intake: Intake, agency_id: str) -> Agency:
    try:
        return intake.registry.agency(agency_id)
    except ConfigurationError as exc:
        raise not_found(NO_ROWS) from exc


# --- errors ----------------------------------------------------------------------------------


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes JSON with a status; no traceback or internal path leaves."""

    @app.exception_handler(IntakeRefused)
    async def refused(_: Request, exc: IntakeRefused) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(_: Request, exc: AuthenticationError) -> JSONResponse:
        message = str(exc)
        challenge = REALM
        if not message.startswith("no token"):
            description = message.replace('"', "'").replace("\\", "/")[:200]
            challenge += f', error="invalid_token", error_description="{description}"'
        return _error(401, "unauthenticated", message, {"WWW-Authenticate": challenge})

    @app.exception_handler(AccessDenied)
    async def denied(_: Request, exc: AccessDenied) -> JSONResponse:
        return _error(403, "forbidden", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "bad_request", problems(exc.errors())[:500])

    @app.exception_handler(UnsafePath)
    async def unsafe(_: Request, exc: UnsafePath) -> JSONResponse:
        log.warning("unsafe path: %s", exc)
        refusal = unsafe_landing(exc)
        return _error(refusal.status, refusal.code, refusal.message)

    @app.exception_handler(AuditTrailCorrupt)
    async def unaudited(_: Request, exc: AuditTrailCorrupt) -> JSONResponse:
        log.error("audit trail refuses appends: %s", exc)
        return _error(
            503,
            "audit_unavailable",
            "Flux cannot record this request in its audit trail, so it is not served; the "
            "operators must check the trail (flux audit verify)",
        )

    @app.exception_handler(TransientError)
    async def transient(_: Request, exc: TransientError) -> JSONResponse:
        log.warning("transient failure: %s", exc)
        return _error(503, "unavailable", "Flux is busy; retry", {"Retry-After": "30"})

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        kind = "storage" if isinstance(exc, StorageNotConfined | OSError) else "internal"
        log.error("%s error %s: %s", kind, reference, exc, exc_info=exc)
        return _error(
            500,
            "internal",
            f"Flux failed on this request ({kind} error, reference {reference}). Retry; if it "
            "fails again, report the reference to the operators.",
        )
