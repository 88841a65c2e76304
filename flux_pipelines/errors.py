"""Classified errors: every failure says what happened, where, and what to do.

Three classes drive behaviour (the product's design decision: errors are classified):
- ``ConfigurationError``: fail fast at definitions load or CLI start; a human must fix a file.
- ``DeliveryError``: a data problem with a whole file; the file is quarantined with one
  reason and only its partition fails.
- ``TransientError``: worth retrying with backoff (locks, connections).
"""

from __future__ import annotations


class FluxError(Exception):
    """Base of all Flux errors; never raised directly."""


class ConfigurationError(FluxError):
    """A contract, registry entry or setting is wrong; fix the named file."""


class ContractError(ConfigurationError):
    """A contract file cannot be parsed or is inconsistent."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"contract {path}: {problem}")
        self.path = path
        self.problem = problem


class DeliveryError(FluxError):
    """A delivered file cannot be accepted as a whole (delivery-level fatal)."""

    def __init__(self, *, agency: str, dataset: str, file: str, rule_id: str, reason: str) -> None:
        super().__init__(f"agency={agency} dataset={dataset} file={file} rule={rule_id}: {reason}")
        self.agency = agency
        self.dataset = dataset
        self.file = file
        self.rule_id = rule_id
        self.reason = reason


class PartitionRejected(FluxError):
    """One or more files of a partition were quarantined whole; the partition fails."""

    def __init__(
        self,
        agency: str,
        dataset: str,
        day: str,
        errors: list[DeliveryError],
        kept_rows: int | None = None,
    ) -> None:
        reasons = "; ".join(f"{e.file}: {e.reason} [{e.rule_id}]" for e in errors)
        kept = (
            ""
            if kept_rows is None
            else f" The day keeps its earlier load ({kept_rows:,} curated rows, its published "
            "copy and reports); this attempt's report is in its rejected/<run id> folder."
        )
        super().__init__(
            f"{agency}/{dataset} {day}: {len(errors)} file(s) quarantined whole: {reasons}.{kept} "
            "Fix the file(s) and re-deliver; the other partitions are unaffected."
        )
        self.errors = errors
        self.kept_rows = kept_rows


class TransientError(FluxError):
    """A temporary condition (file lock, connection); retry with backoff."""


class RunStorageUnavailable(TransientError):
    """Dagster's run storage (PostgreSQL) stopped answering while a run was writing events."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(
            f"run storage unavailable [transient]: PostgreSQL stopped answering during run "
            f"{run_id} ({detail.strip().splitlines()[0]}). Each "
            "partition loads in one DuckDB transaction, so it holds either the old delivery "
            "or the new one, never a mix. Once PostgreSQL is back, re-execute from failure "
            "(run retries do this automatically)."
        )
        self.run_id = run_id


class AuditTrailCorrupt(FluxError):
    """The audit trail's tail disagrees with its anchor; appending would bury the evidence.

    Not transient and not a configuration mistake: someone (or a crash the trail cannot
    explain) changed the trail, and a human must look before anything else is written.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"audit trail {path}: {problem}. Appends are refused so the evidence stays as "
            "found: run `flux audit verify` and restore the trail from a copy; only if the "
            "change is understood and accepted, run `flux audit anchor --accept` to anchor "
            "the trail at its end."
        )
        self.path = path
        self.problem = problem


class DayLoadFailed(FluxError):
    """A day of a multi-day step failed unexpectedly; the step's other days still load."""

    def __init__(self, agency: str, dataset: str, day: str, cause: BaseException) -> None:
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        kind = "" if isinstance(cause, FluxError) else f"internal error ({type(cause).__name__}) "
        super().__init__(
            f"{agency}/{dataset} {day}: {kind}{detail or 'no detail'}. A day loads in one "
            "transaction, so it holds either its previous load or this one, never a mix; it is "
            "not recorded as loaded. The run's other days were loaded and recorded. Re-run "
            "this day; if it fails again, report it with the run id."
        )
        self.agency, self.dataset, self.day = agency, dataset, day
        self.cause = cause


class AuditAnchorMismatch(AuditTrailCorrupt):
    """The audit trail's end disagrees with an anchor, or an anchor is missing or unreadable.

    Raised before a load commits (``AuditTrail.require_intact``) and by every append, so no
    data is published without its audit records and the evidence stays as found.
    """

    def __init__(self, path: str, problem: str, *, home: str) -> None:
        FluxError.__init__(
            self,
            f"audit trail {path}: {problem}. Loads and appends stop here so the evidence "
            f"stays as found: run `flux audit verify --home {home}` to see what changed and "
            f"restore {home}/audit from a copy; only if the change is understood and accepted, "
            f"run `flux audit anchor --accept --home {home}` to anchor the trail at its end.",
        )
        self.path = path
        self.problem = problem
        self.home = home


class UnsafePath(FluxError):
    """A path an agency can influence would lead outside the agency's own folder (a symbolic
    link, a '..', a FIFO or device where a file belongs): Flux neither reads nor writes it.

    ``rule_id`` is a ``delivery.*`` rule, so a loader turns it into a file rejected whole.
    """

    def __init__(self, rule_id: str, path: str, reason: str) -> None:
        super().__init__(f"{reason} [{rule_id}]")  # the reason names the path
        self.rule_id = rule_id
        self.path = path
        self.reason = reason


class StorageNotConfined(FluxError):
    """A link inside ``warehouse/`` or ``published/`` where an agency's folder or file
    belongs: Flux will not write (or publish) through it."""

    def __init__(self, path: str, target: str) -> None:
        super().__init__(
            f"{path} is a symbolic link (to {target[:200]}); Flux writes an agency's data only "
            "inside real folders of its home: replace the link with a real folder or file "
            "(move what it points to into place), then re-run"
        )
        self.path = path


class AuthenticationError(FluxError):
    """No identity could be established: a token is missing, forged, expired or not for Flux.

    Says which check failed (signature, expiry, issuer, audience) but never echoes the
    token; the remedy is to sign in again at the identity provider."""


class AccessDenied(FluxError):
    """An authenticated identity asked for something its role or agency does not allow."""

    def __init__(self, who: str, action: str, why: str) -> None:
        super().__init__(f"{who} may not {action}: {why}")
        self.who = who
        self.action = action
        self.why = why


class WitnessRefused(FluxError):
    """The audit witness will not sign the trail's head: the history it signed before was
    rewritten or cut, the trail fails verification, or its own store was altered.

    Not transient: signing now would bless the change. A human compares the trail with a
    copy (``flux audit verify --witness``) before anything is signed again."""

    def __init__(self, store: str, problem: str) -> None:
        super().__init__(
            f"audit witness {store}: refused to sign: {problem}. Nothing was signed; run "
            "`flux audit verify --witness` on a copy of the trail and find out who changed it."
        )
        self.store = store
        self.problem = problem


class BackupRefused(FluxError):
    """A backup that cannot be trusted or a restore that would overwrite something: a file
    differs from its manifest, the target home is not empty, or the restored home does not
    match the manifest. Not transient: a human picks another backup or another target."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
