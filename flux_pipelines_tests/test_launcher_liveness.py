"""The run launcher's liveness check for a run worker on this host (psutil): real processes.

A live worker is alive; one that exited (reaped or still a zombie) is dead; a pid whose
start time differs from the one the worker tagged (pid reuse) is dead; tags written before
psutil (start in clock ticks) still match their live process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster import DagsterRun

from flux_pipelines.instance.launcher import (
    RUN_WORKER_TAG,
    RunWorker,
    local_process_alive,
    process_started,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def worker_for(process: subprocess.Popen[bytes]) -> RunWorker:
    return RunWorker(socket.gethostname(), process.pid, process_started(process.pid))


def test_a_running_worker_is_alive_and_its_tag_round_trips(
    sleeper: subprocess.Popen[bytes],
) -> None:
    worker = worker_for(sleeper)
    assert worker.started is not None and local_process_alive(worker)
    parsed = RunWorker.parse(worker.tag_value())
    assert parsed is not None and local_process_alive(parsed)
    assert parsed.host == socket.gethostname() and parsed.pid == sleeper.pid
    assert RunWorker.current().pid == os.getpid() and local_process_alive(RunWorker.current())


def test_a_zombie_worker_is_dead(sleeper: subprocess.Popen[bytes]) -> None:
    worker = worker_for(sleeper)
    sleeper.kill()
    deadline = time.monotonic() + 10
    while psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE:  # not reaped yet
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not local_process_alive(worker)


def test_a_reaped_worker_is_dead(sleeper: subprocess.Popen[bytes]) -> None:
    worker = worker_for(sleeper)
    sleeper.kill()
    sleeper.wait()
    assert not psutil.pid_exists(sleeper.pid)
    assert not local_process_alive(worker)


def test_a_reused_pid_is_not_the_worker(sleeper: subprocess.Popen[bytes]) -> None:
    """The pid is alive, but started at another time than the worker that tagged it."""
    worker = worker_for(sleeper)
    assert worker.started is not None
    earlier = RunWorker(worker.host, worker.pid, worker.started - 5.0)
    assert not local_process_alive(earlier)
    untimed = RunWorker(worker.host, worker.pid, None)  # a pid from Dagster's event: no start
    assert local_process_alive(untimed)


def test_a_tag_from_before_psutil_in_clock_ticks_still_matches(
    sleeper: subprocess.Popen[bytes],
) -> None:
    stat = Path(f"/proc/{sleeper.pid}/stat").read_text()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # what the old tag stored
    legacy = RunWorker.parse(f"{socket.gethostname()}:{sleeper.pid}:{ticks}")
    assert legacy is not None and local_process_alive(legacy)
    stale = RunWorker.parse(f"{socket.gethostname()}:{sleeper.pid}:{ticks - 500}")
    assert stale is not None and not local_process_alive(stale)


def test_unreadable_tags_are_none() -> None:
    assert RunWorker.parse("no-pid") is None
    assert RunWorker.parse("host:notapid:") is None
    assert RunWorker.parse("host:12:") == RunWorker("host", 12, None)
    assert RunWorker.parse("r1@host:12:") == RunWorker("host", 12, None, "r1")


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_retry_is_not_failed_for_the_dead_worker_it_inherited_from_its_parent() -> None:
    """Run retries copy the parent's tags, its dead worker's tag too: until the retry's own
    worker tags itself, run monitoring must not read the parent's death as the retry's."""
    launcher = {"module": "flux_pipelines.instance.launcher", "class": "FluxRunLauncher"}
    host = socket.gethostname()
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:

        def health(run_id: str, worker: RunWorker, parent: str | None = None) -> str:
            tags = {RUN_WORKER_TAG: worker.tag_value()}
            run = DagsterRun(
                "ingest_nasa", run_id, tags=tags, parent_run_id=parent, root_run_id=parent
            )
            instance.add_run(run)
            return instance.run_launcher.check_run_worker_health(run).status.value

        parents_worker = RunWorker(host, dead_pid(), None, "parent")
        assert health("parent", parents_worker) == "FAILED"  # its own worker died
        assert health("retry", parents_worker, parent="parent") == "RUNNING"  # not yet known
        assert health("retry-2", RunWorker(host, dead_pid(), None, "retry-2"), "parent") == (
            "FAILED"  # once the retry's own worker has tagged it and died
        )
        older_tag = RunWorker(host, dead_pid())  # written before tags named their run
        assert health("fresh", older_tag) == "FAILED"
        assert health("retry-3", older_tag, parent="fresh") == "RUNNING"
