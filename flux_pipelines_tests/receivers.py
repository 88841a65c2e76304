"""Real alert receivers for tests: an SMTP server (aiosmtpd) and a webhook receiver
(http.server), both on loopback, both started and stopped by the test that uses them.

``start_or_skip`` is the policy for a component a test cannot start: under CI (``CI`` set)
the test fails, so a broken receiver is never a silent skip there; elsewhere it skips with
the reason (the same policy as the PostgreSQL fixture in conftest.py).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def start_or_skip(component: str, start: Callable[[], T]) -> T:
    """``start()``; when it raises OSError, fail under CI and skip elsewhere, naming why."""
    try:
        return start()
    except OSError as exc:
        if in_ci():
            pytest.fail(f"CI is set and {component} could not be started: {exc}")
        pytest.skip(f"{component} could not be started here: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An SMTP server on a fixed port that can be stopped and started again; it keeps every
    message with its envelope recipients in an ``X-Rcpt`` header."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message["X-Rcpt"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def subjects(self) -> list[str]:
        return [str(m["Subject"]).strip() for m in self.messages]


class Receiver:
    """A webhook receiver collecting the JSON bodies posted to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        """Each body's headline: Slack's ``text`` or a Teams card's ``title``."""
        return [str(b.get("text") if "blocks" in b else b.get("title")) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def started_mailbox() -> Mailbox:
    box = Mailbox()
    start_or_skip("the SMTP server (aiosmtpd)", box.start)
    return box


def started_receiver() -> Receiver:
    return start_or_skip("the webhook receiver (http.server)", Receiver)


def wait_for(
    what: str, ready: Callable[[], bool], timeout: float, detail: Callable[[], str]
) -> float:
    """Poll ``ready`` until it holds; the seconds it took, or an AssertionError naming
    ``what`` and ``detail()`` (for instance a log tail)."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{detail()}")
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """A started SMTP server for one test (conftest registers this module's fixtures)."""
    box = started_mailbox()
    yield box
    box.stop()
