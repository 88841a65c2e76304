"""Dagster's default run launcher, plus a health check for run workers that died.

The default launcher starts each run in a process on the code server's host and never
asks whether that process is still alive: a run worker killed with SIGKILL (OOM killer,
lost host, ``kill -9``) after its code server went away stays STARTED forever and holds
its agency's queue slot. With a health check, Dagster's own run monitoring (in the daemon,
every ``run_monitoring.poll_interval_seconds``) marks such a run failed with the reason,
and run retries re-execute it from the failed step.

How a run worker is found: the run's ``flux/run_worker`` tag (``host:pid:start``, written
by the run itself as its first step starts), else the pid in Dagster's "Started process for
run" event. A worker on this host is checked through ``/proc``: a missing pid, a zombie, or
a pid reused by a newer process means dead. A worker elsewhere is asked about through its
code server. When nothing is known yet the run is left alone (reported RUNNING), because
Dagster fails any run whose worker status is not RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from flux_pipelines.errors import RunStorageUnavailable

RUN_WORKER_TAG = "flux/run_worker"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
LAST_WORDS_DIR = "run_errors"


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


@dataclass(frozen=True)
class RunWorker:
    host: str
    pid: int
    start_ticks: int | None = None  # /proc/<pid>/stat starttime, guards against pid reuse

    def tag_value(self) -> str:
        return f"{self.host}:{self.pid}:{self.start_ticks or ''}"

    @classmethod
    def parse(cls, value: str) -> RunWorker | None:
        host, _, rest = value.rpartition(":")
        host, _, pid = host.rpartition(":")
        try:
            return cls(host=host, pid=int(pid), start_ticks=int(rest) if rest else None)
        except ValueError:
            return None

    @classmethod
    def current(cls) -> RunWorker:
        return cls(socket.gethostname(), os.getpid(), process_start_ticks(os.getpid()))


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def local_process_alive(worker: RunWorker) -> bool:
    try:
        stat = Path(f"/proc/{worker.pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): fall back to a signal probe
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: exited, not yet reaped
        return False
    return worker.start_ticks is None or int(fields[19]) == worker.start_ticks


def record_run_worker(instance: DagsterInstance, run_id: str) -> None:
    """Tag the run with this process, so a health check can find it, and watch for a lost
    run storage (idempotent)."""
    watch_storage_loss(run_id)
    worker = RunWorker.current()
    run = instance.get_run_by_id(run_id)
    if run is not None and run.tags.get(RUN_WORKER_TAG) != worker.tag_value():
        instance.add_run_tags(run_id, {RUN_WORKER_TAG: worker.tag_value()})


def find_run_worker(instance: DagsterInstance, run: DagsterRun) -> RunWorker | None:
    tagged = run.tags.get(RUN_WORKER_TAG)
    if tagged:
        return RunWorker.parse(tagged)
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
        from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
        from dagster._serdes import deserialize_value

        client = self._get_grpc_client_for_termination(run.run_id)
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
