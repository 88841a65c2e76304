"""A real OIDC-style token issuer for the access tests: an RSA key pair, its JWKS served over
HTTP on 127.0.0.1 (what ``jwt.PyJWKClient`` fetches from a provider), and signed tokens.

Nothing is mocked: the verifier under test fetches the keys over a socket and checks real
RS256 signatures; a forged token is signed with another key pair.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://login.test/realms/flux"
AUDIENCE = "flux"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    """Signs tokens with its key; ``jwks_url`` serves the public half."""

    jwks_url: str = ""
    kid: str = "test-key-1"
    private: rsa.RSAPrivateKey = field(default_factory=_key)

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        sub: str,
        groups: list[str],
        *,
        email: str | None = None,
        lifetime: int = 300,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        key: rsa.RSAPrivateKey | None = None,
        **extra: Any,
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "groups": groups,
            "email": email or f"{sub}@example.org",
            **extra,
        }
        return jwt.encode(claims, key or self.private, algorithm="RS256", headers={"kid": self.kid})

    def env(self) -> dict[str, str]:
        """The environment that points Flux's verifier at this issuer."""
        return {
            "FLUX_OIDC_ISSUER": ISSUER,
            "FLUX_OIDC_AUDIENCE": AUDIENCE,
            "FLUX_OIDC_JWKS_URL": self.jwks_url,
        }


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An issuer whose JWKS is served by a real HTTP server until the block ends."""
    issuer = Issuer()
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.jwks_url = f"http://127.0.0.1:{server.server_address[1]}/certs"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    """A running issuer for a test module (conftest registers this module's fixtures)."""
    with running_issuer() as running:
        yield running


@pytest.fixture
def oidc_home(tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Flux home whose tokens the module's issuer signs."""
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    return tmp_path
