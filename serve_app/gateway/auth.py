"""API keys: read from the environment or a file, kept only as SHA-256 hashes, compared in
constant time. With no keys configured the service is open (and says so at start).

Failed authentications are limited per client address: past a burst, an address gets 429 for any
key it has not already used successfully, a right guess included, so guessing is slowed down
while the clients that share its address keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.errors import AuthenticationFailed, RateLimited, retry_after_header
from serve_app.gateway.config import AuthConfig
from serve_app.gateway.rate_limit import RecentCallers, TokenBucket
from serve_app.gateway.tenants import DEFAULT_TENANT, Tenants

# A '#' at the start of a line or after whitespace starts a comment; one inside a key is refused.
_COMMENT = re.compile(r"(^|\s)#.*$")
# Keys travel in an HTTP header: printable ASCII without spaces.
_KEY = re.compile(r"^[\x21-\x7e]+$")
# A keys-file line: the key, then optionally its tenant (ASCII blanks only: any other space
# character stays in the key, which then fails the check above).
_BLANKS = re.compile(r"[ \t]+")
KNOWN_KEYS_PER_ADDRESS = 4


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _checked(key: str, where: str) -> str:
    if "#" in key:
        raise ValueError(
            f"auth: {where}: a key contains '#'; put comments on their own line or after a space"
        )
    if not _KEY.match(key):
        raise ValueError(
            f"auth: {where}: a key must be printable ASCII without spaces (it is sent in the "
            "Authorization header); this one could never match"
        )
    return key


@dataclass(frozen=True)
class Caller:
    """Who made a request: a key's id (a hash prefix, safe to log) or the open service's client."""

    key_id: str
    tenant: str = DEFAULT_TENANT


def _tenant_on_line(words: list[str], tenants: Tenants | None, where: str) -> str:
    """The tenant a keys-file line names after its key (`default` when none)."""
    if len(words) == 1:
        return DEFAULT_TENANT
    if len(words) > 2:
        raise ValueError(f"auth: {where}: expected '<key>' or '<key> <tenant>', not more words")
    if tenants is None:
        raise ValueError(
            f"auth: {where}: names tenant {words[1]!r}, but gateway.tenants.file is not set"
        )
    if words[1] not in tenants:
        raise ValueError(
            f"auth: {where}: unknown tenant {words[1]!r}; declared: {', '.join(tenants.names())}"
        )
    return words[1]


class KeyStore:
    def __init__(self, keys: list[str], tenant_of: dict[str, str] | None = None) -> None:
        """`tenant_of` maps keys to their tenant; the others are the default tenant's."""
        self._digests = [_digest(_checked(key, "a configured key")) for key in keys]
        self._tenants = {_digest(key): tenant for key, tenant in (tenant_of or {}).items()}

    @classmethod
    def from_config(
        cls,
        config: AuthConfig,
        environ: dict[str, str] | None = None,
        tenants: Tenants | None = None,
    ) -> KeyStore:
        """The configured keys; ValueError naming the place of a key that could never match
        or of a tenant that is not declared."""
        environ = dict(os.environ) if environ is None else environ
        keys: list[str] = []
        tenant_of: dict[str, str] = {}
        if config.api_keys_env:
            values = environ.get(config.api_keys_env, "").split(",")
            for number, value in enumerate(values, start=1):
                if value.strip():
                    where = f"key {number} of ${config.api_keys_env}"
                    keys.append(_checked(value.strip(), where))
        if config.api_keys_file:
            path = Path(config.api_keys_file).expanduser()
            if not path.is_file():
                raise ValueError(f"auth.api_keys_file: {path} does not exist")
            for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
                words = _BLANKS.split(_COMMENT.sub("", line).strip(" \t"))
                if words[0]:
                    where = f"{path} line {number}"
                    keys.append(_checked(words[0], where))
                    tenant_of[words[0]] = _tenant_on_line(words, tenants, where)
        return cls(keys, tenant_of)

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
        if not key.strip().isascii():
            raise AuthenticationFailed("Incorrect API key provided.")
        presented = _digest(key.strip())
        # Compare with every stored digest, no early exit: timing says nothing about which.
        matched: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(presented, digest):
                matched = digest
        if matched is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return Caller(
            key_id="key-" + matched.hex()[:12],
            tenant=self._tenants.get(matched, DEFAULT_TENANT),
        )


@dataclass
class _AddressRecord:
    failures: TokenBucket
    known_keys: list[str] = field(default_factory=list)


class FailedAuthLimit:
    """Per client address: a bucket of failed attempts, and the keys it authenticated with."""

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        rate_per_s = config.failed_attempts_per_min / 60.0
        self._addresses = RecentCallers(
            lambda: _AddressRecord(
                TokenBucket(rate_per_s, config.failed_attempts_burst, self._clock())
            )
        )

    def authenticate(self, keys: KeyStore, authorization: str | None, address: str) -> Caller:
        """`keys.authenticate`, refused with 429 for an address past its failed attempts."""
        record = self._addresses.get(address)
        now_s = self._clock()
        blocked = record.failures.remaining(now_s) < 1
        try:
            caller = keys.authenticate(authorization)
        except AuthenticationFailed:
            if blocked:
                raise self._refused(record, now_s) from None
            record.failures.take(1, now_s)
            raise
        if blocked and caller.key_id not in record.known_keys:
            raise self._refused(record, now_s)
        if caller.key_id not in record.known_keys:
            record.known_keys = [*record.known_keys, caller.key_id][-KNOWN_KEYS_PER_ADDRESS:]
        return caller

    @staticmethod
    def _refused(record: _AddressRecord, now_s: float) -> RateLimited:
        wait_s = record.failures.seconds_until(1, now_s)
        return RateLimited(
            f"Too many failed authentications from this address; retry in {wait_s:.0f} s.",
            code="too_many_failed_authentications",
            headers=retry_after_header(wait_s),
        )
