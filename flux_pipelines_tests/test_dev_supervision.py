"""``flux dev``'s supervision of Dagster's webserver and daemon, with real processes.

The fast tests run the supervisor on stand-in services (small Python processes) so each
path is exercised in a second: a requested stop, a service that dies on its own, one that
ignores SIGTERM, a leftover in a service's process group, signal dispositions inherited
from a background job. The real ``flux dev``, started as a background job, is stopped in
``test_daemon_stack.py`` (with the dispositions of its real services checked there).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from flux_pipelines.cli import dev
from flux_pipelines.cli.dev import Service, run_dev, shut_down, supervise

PY = sys.executable


def script(body: str) -> list[str]:
    return [PY, "-c", body]


def gone(pids: list[int]) -> bool:
    """No pid is still a live (non-zombie) process."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def own_signals() -> Iterator[None]:
    """run_dev installs SIGINT/SIGTERM handlers in this process: put the old ones back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_stop_terms_each_service_and_sweeps_what_its_group_left(tmp_path: Path) -> None:
    """The leader exits on SIGTERM at once, leaving a child in its group (as a code server
    can outlive its webserver): the child gets SIGTERM too, nothing is killed."""
    pidfile = tmp_path / "child.pid"
    leader = Service.start(
        "webserver",
        script(
            "import subprocess, sys, time, pathlib\n"
            f"c = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(60)'])\n"
            f"pathlib.Path({str(pidfile)!r}).write_text(str(c.pid))\n"
            "time.sleep(60)\n"
        ),
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text())
    child = int(pidfile.read_text())
    assert os.getpgid(child) == leader.pgid != os.getpgid(0)
    assert shut_down([leader], timeout=20)
    assert gone([leader.process.pid, child])


def test_a_service_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = Service.start(
        "dagster-daemon",
        script(
            "import signal, time, pathlib\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(60)\n"
        ),
    )
    wait_for(ready.exists)
    started = time.monotonic()
    assert not shut_down([stubborn], timeout=1.0)  # not clean: it had to be killed
    assert time.monotonic() - started < 10
    assert stubborn.process.returncode == -signal.SIGKILL


def test_supervise_returns_the_essential_service_that_died() -> None:
    observer = Service.start("flux metrics", script("raise SystemExit(0)"), essential=False)
    essential = Service.start("dagster-daemon", script("import time; time.sleep(1); exit(3)"))
    try:
        died = supervise([observer, essential], threading.Event())
        assert died is essential and essential.process.returncode == 3
    finally:
        shut_down([observer, essential], timeout=5)


def test_run_dev_stops_everything_and_exits_1_when_a_service_dies(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own_signals: None,
) -> None:
    """Started as a background job would start it (SIGINT, SIGTERM ignored), flux dev still
    gives its services the default dispositions; the daemon dies: the webserver is stopped."""
    report = tmp_path / "dispositions"
    web_pid = tmp_path / "web.pid"
    monkeypatch.setattr(
        dev, "code_server_command", lambda socket_path: script("import time; time.sleep(60)")
    )
    monkeypatch.setattr(dev, "code_server_serving", lambda socket_path: True)
    monkeypatch.setattr(
        dev,
        "webserver_command",
        lambda host, port, workspace: script(
            "import os, pathlib, signal, time\n"
            f"pathlib.Path({str(web_pid)!r}).write_text(str(os.getpid()))\n"
            "time.sleep(60)\n"
        ),
    )
    monkeypatch.setattr(
        dev,
        "daemon_command",
        lambda workspace: script(
            "import pathlib, signal, time\n"
            "ignored = [s.name for s in (signal.SIGINT, signal.SIGTERM)"
            " if signal.getsignal(s) is signal.SIG_IGN]\n"
            f"pathlib.Path({str(report)!r}).write_text(','.join(ignored) or 'none')\n"
            "time.sleep(1)\n"
            "raise SystemExit(3)\n"
        ),
    )
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    code = run_dev(tmp_path / "flux", "127.0.0.1", 3999, None)

    assert code == 1
    assert report.read_text() == "none"
    assert "dagster-daemon exited on its own with code 3" in capsys.readouterr().err
    assert gone([int(web_pid.read_text())])


def test_run_dev_exits_0_on_sigterm_with_every_service_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_signals: None
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    service = script(
        f"import os, pathlib, time\npathlib.Path({str(pids)!r}, str(os.getpid())).touch()\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setattr(dev, "code_server_command", lambda socket_path: service)
    monkeypatch.setattr(dev, "code_server_serving", lambda socket_path: True)
    monkeypatch.setattr(dev, "webserver_command", lambda host, port, workspace: service)
    monkeypatch.setattr(dev, "daemon_command", lambda workspace: service)
    monkeypatch.setattr(dev, "metrics_command", lambda home, host, port: service)
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)

    def stop_when_all_started() -> None:
        wait_for(lambda: len(list(pids.iterdir())) == 4)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_all_started)
    stopper.start()
    code = run_dev(tmp_path / "flux", "127.0.0.1", 3999, 9999)
    stopper.join()
    assert code == 0
    assert gone([int(p.name) for p in pids.iterdir()])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_dev_starts_nothing_else_when_the_code_server_dies_before_serving(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own_signals: None,
) -> None:
    """Definitions that fail to load: the code server exits, flux dev says so and exits 1
    without starting a webserver or daemon that would only show a broken location."""
    started = tmp_path / "started"
    others = script(f"import pathlib\npathlib.Path({str(started)!r}).touch()\n")
    monkeypatch.setattr(dev, "code_server_command", lambda socket_path: script("exit(4)"))
    monkeypatch.setattr(dev, "webserver_command", lambda host, port, workspace: others)
    monkeypatch.setattr(dev, "daemon_command", lambda workspace: others)
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)

    code = run_dev(tmp_path / "flux", "127.0.0.1", 3999, None)

    assert code == 1
    assert "dagster code-server exited with code 4 before serving" in capsys.readouterr().err
    assert not started.exists()


def test_the_served_workspace_names_the_project_location_at_the_socket(tmp_path: Path) -> None:
    import yaml

    module, location = dev.workspace_location()
    assert (module, location) == ("flux_pipelines.definitions", "flux")
    served = yaml.safe_load(dev.write_served_workspace(tmp_path, tmp_path / "s.sock").read_text())
    assert served == {
        "load_from": [
            {"grpc_server": {"socket": str(tmp_path / "s.sock"), "location_name": "flux"}}
        ]
    }
    command = dev.code_server_command(tmp_path / "s.sock")
    assert command[command.index("-m") + 1] == module
    assert command[command.index("--socket") + 1] == str(tmp_path / "s.sock")
