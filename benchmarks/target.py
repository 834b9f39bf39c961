"""Where load may be sent: loopback addresses only.

The generator can saturate a service, so it refuses to point at anything but
this machine; a typo in a URL must not become a load test of someone else's host.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class NonLoopbackTargetError(ValueError):
    """The URL names a host other than a loopback address."""


def require_loopback(url: str) -> str:
    """Return `url` without a trailing slash, or raise if it is not loopback HTTP.

    Only IP literals are accepted: a name such as `localhost` goes through a
    resolver that could answer with another address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NonLoopbackTargetError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if host is None:
        raise NonLoopbackTargetError(f"no host in URL: {url!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise NonLoopbackTargetError(f"host {host!r} is not an IP literal; use 127.0.0.1") from None
    if not address.is_loopback:
        raise NonLoopbackTargetError(f"host {host!r} is not a loopback address")
    return url.rstrip("/")


def endpoint_url(base_url: str, path: str) -> str:
    """Join a checked base URL and an API path such as `/v1/embeddings`."""
    return require_loopback(base_url) + "/" + path.lstrip("/")
