"""API keys: read from the environment or a file, kept only as SHA-256 hashes, compared in
constant time. With no keys configured the service is open (and says so at start)."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from serve_app.errors import AuthenticationFailed
from serve_app.gateway_config import AuthConfig


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """Who made a request: a key's id (a hash prefix, safe to log) or the open service's client."""

    key_id: str


class KeyStore:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(key) for key in keys]

    @classmethod
    def from_config(cls, config: AuthConfig, environ: dict[str, str] | None = None) -> KeyStore:
        environ = dict(os.environ) if environ is None else environ
        keys: list[str] = []
        if config.api_keys_env:
            keys += [k.strip() for k in environ.get(config.api_keys_env, "").split(",")]
        if config.api_keys_file:
            path = Path(config.api_keys_file).expanduser()
            if not path.is_file():
                raise ValueError(f"auth.api_keys_file: {path} does not exist")
            for line in path.read_text().splitlines():
                keys.append(line.split("#", 1)[0].strip())
        return cls([key for key in keys if key])

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an `Authorization: Bearer <key>` header; 401 if missing or wrong."""
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
        presented = _digest(key.strip())
        # Compare with every stored digest, no early exit: timing says nothing about which.
        matched: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(presented, digest):
                matched = digest
        if matched is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Caller(key_id="key-" + matched.hex()[:12])
