"""Dagster's default run launcher, plus a health check for run workers that died.

The default launcher starts each run in a process on the code server's host and never
asks whether that process is still alive: a run worker killed with SIGKILL (OOM killer,
lost host, ``kill -9``) after its code server went away stays STARTED forever and holds
its agency's queue slot. With a health check, Dagster's own run monitoring (in the daemon,
every ``run_monitoring.poll_interval_seconds``) marks such a run failed with the reason,
and run retries re-execute it from the failed step.

How a run worker is found: the run's ``flux/run_worker`` tag (``run_id@host:pid:start``,
written by the run itself as its first step starts), else the pid in Dagster's "Started
process for run" event. A retry or re-execution copies its parent's tags, this one
included: a tag naming another run is the parent's dead worker, not this run's, and is
ignored until the new worker writes its own. A worker on this host is checked with
psutil: a missing pid, a zombie, or a pid reused by a newer process (another start time)
means dead. A worker elsewhere is asked about through its code server. When nothing is
known yet the run is left alone (reported RUNNING), because Dagster fails any run whose
worker status is not RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher

# Private, no public equivalent in dagster 1.13 (each checked with hasattr(dagster, name)):
# the gRPC error of an unreachable code server (narrower than the public DagsterError),
from dagster._core.errors import DagsterUserCodeUnreachableError

# the result type and statuses that RunLauncher.check_run_worker_health must return,
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

# the run tag in which the default launcher records the code server that started the run.
from dagster._core.storage.tags import GRPC_INFO_TAG

from flux_pipelines.errors import RunStorageUnavailable
from flux_pipelines.names import RUN_ERRORS_ZONE

RUN_WORKER_TAG = "flux/run_worker"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
LAST_WORDS_DIR = RUN_ERRORS_ZONE


def last_words_path(run_id: str) -> Path:
    from flux_pipelines.home import resolve_home

    return resolve_home() / LAST_WORDS_DIR / f"{run_id}.txt"


def record_last_words(run_id: str, message: str) -> None:
    """Leave a run's classified error where run monitoring will find it: when the run
    storage itself is down, the run cannot write its own failure event."""
    path = last_words_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message, encoding="utf-8")


class StorageLossWatcher(logging.Handler):
    """Writes a run's last words when Dagster's Postgres storage starts failing.

    dagster-postgres logs each failed connection attempt before it gives up; once it gives
    up, the run worker dies in Dagster's own code without writing a failure event. This
    handler (installed by the run's steps) turns the first such warning into a classified
    message that run monitoring reports when it marks the dead run failed.
    """

    SIGNAL = "Retrying failed database connection"

    def __init__(self, run_id: str) -> None:
        super().__init__(logging.WARNING)
        self.run_id = run_id
        self.recorded = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.recorded or self.SIGNAL not in record.getMessage():
            return
        self.recorded = True
        detail = record.getMessage().split(":", 1)[-1]
        record_last_words(self.run_id, str(RunStorageUnavailable(self.run_id, detail)))


def watch_storage_loss(run_id: str) -> None:
    """Install one StorageLossWatcher for this run in this process (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h, StorageLossWatcher) and h.run_id == run_id for h in root.handlers):
        root.addHandler(StorageLossWatcher(run_id))


def read_last_words(run_id: str) -> str | None:
    try:
        return last_words_path(run_id).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


START_TOLERANCE = 0.05  # seconds; start times are kept to 1/100 s (the kernel's clock tick)


@dataclass(frozen=True)
class RunWorker:
    host: str
    pid: int
    started: float | None = None  # seconds after boot the process started: guards pid reuse
    run_id: str | None = None  # the run whose worker this is (None in tags before it)

    def tag_value(self) -> str:
        started = "" if self.started is None else f"{self.started:.2f}"
        owner = "" if self.run_id is None else f"{self.run_id}@"
        return f"{owner}{self.host}:{self.pid}:{started}"

    def works_for(self, run: DagsterRun) -> bool:
        """False for a tag the run inherited from the run it retries or re-executes."""
        if self.run_id is None:  # an older tag: trusted only on a run that copied no tags
            return run.parent_run_id is None
        return self.run_id == run.run_id

    @classmethod
    def parse(cls, value: str) -> RunWorker | None:
        """Also reads tags without a run id, and those written before psutil, whose start
        is in clock ticks (an integer)."""
        run_id, _, value = value.rpartition("@")
        host, _, rest = value.rpartition(":")
        host, _, pid = host.rpartition(":")
        try:
            if not rest:
                started = None
            elif "." in rest:
                started = float(rest)
            else:
                started = int(rest) / os.sysconf("SC_CLK_TCK")
            return cls(host=host, pid=int(pid), started=started, run_id=run_id or None)
        except (ValueError, OSError):
            return None

    @classmethod
    def current(cls, run_id: str | None = None) -> RunWorker:
        return cls(socket.gethostname(), os.getpid(), process_started(os.getpid()), run_id)


def process_started(pid: int) -> float | None:
    """Seconds after boot the process started (None when it does not exist). psutil's
    create_time is wall-clock (boot time + this); subtracting the boot time read now keeps
    the value stable when the clock is stepped (NTP) between the worker's tag and a check."""
    try:
        return psutil.Process(pid).create_time() - psutil.boot_time()
    except psutil.Error:
        return None


def local_process_alive(worker: RunWorker) -> bool:
    """Alive: the pid exists, is not a zombie (exited, not yet reaped) and, when the tag
    recorded it, started when the worker did (else the pid was reused)."""
    try:
        process = psutil.Process(worker.pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        started = process.create_time() - psutil.boot_time()
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:  # exists, but not ours to inspect: cannot say it died
        return True
    return worker.started is None or abs(started - worker.started) < START_TOLERANCE


def record_run_worker(instance: DagsterInstance, run_id: str) -> None:
    """Tag the run with this process, so a health check can find it, and watch for a lost
    run storage (idempotent)."""
    watch_storage_loss(run_id)
    worker = RunWorker.current(run_id)
    run = instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(RUN_WORKER_TAG) != worker.tag_value():
        instance.add_run_tags(run_id, {RUN_WORKER_TAG: worker.tag_value()})


def find_run_worker(instance: DagsterInstance, run: DagsterRun) -> RunWorker | None:
    tagged = RunWorker.parse(run.tags.get(RUN_WORKER_TAG, ""))
    if tagged is not None and tagged.works_for(run):
        return tagged
    records = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=50
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        pid = metadata.get("pid")
        if pid is not None and "Started process for run" in (record.event_log_entry.message or ""):
            host = json.loads(run.tags.get(GRPC_INFO_TAG, "{}")).get("host", "localhost")
            host = socket.gethostname() if host in LOCAL_HOSTS else host
            return RunWorker(host=host, pid=int(str(pid.value)))
    return None


class FluxRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher that can tell run monitoring when a run worker has died."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = find_run_worker(self._instance, run)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not recorded yet")
        if worker.host == socket.gethostname():
            if local_process_alive(worker):
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"pid {worker.pid} alive")
            last_words = read_last_words(run.run_id)
            why = (
                f"its last error: {last_words}"
                if last_words
                else "it was killed or crashed without reporting (SIGKILL, out of memory, "
                "lost storage connection). Nothing it left half-done is visible: each "
                "partition loads in one transaction. Re-execute from failure (run retries "
                "do this automatically)."
            )
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"the run worker (pid {worker.pid} on {worker.host}) is gone; {why}",
            )
        return self._ask_code_server(run, worker)

    def _ask_code_server(self, run: DagsterRun, worker: RunWorker) -> CheckRunHealthResult:
        from dagster import deserialize_value

        # the code server's gRPC request/reply types have no public equivalent
        from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult

        # The launcher's own (private, unannotated) way to reach the run's code server: it
        # reads the grpc_info tag and the TLS setting the same way terminate() does.
        client = self._get_grpc_client_for_termination(run.run_id)  # type: ignore[no-untyped-call]
        if client is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no code server to ask")
        try:
            reply = deserialize_value(
                client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id)),
                CanCancelExecutionResult,
            )
        except DagsterUserCodeUnreachableError as exc:  # says nothing about the worker
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"code server unreachable: {exc}", transient=True
            )
        if reply.can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{worker.host} runs it")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the code server on {worker.host} no longer runs this run's worker (pid "
            f"{worker.pid}); it died without reporting. Re-execute from failure.",
        )
