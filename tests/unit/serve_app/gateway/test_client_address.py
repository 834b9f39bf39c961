"""Which address a request is charged to, for every proxy arrangement."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from serve_app.gateway.client_address import CLIENT_ADDRESS_HEADER, ClientAddresses


def scope(peer: str | None, headers: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 41234) if peer else None,
        "headers": [(name.encode(), value.encode()) for name, value in headers],
    }


LB = "10.0.0.5"
TRUSTED = [ip_network("10.0.0.0/24")]


@pytest.mark.parametrize(
    ("behind_haproxy", "trusted", "peer", "headers", "expected"),
    [
        # Serve's Python proxy: the connection's peer, whatever it claims.
        (False, [], "198.51.100.7", [("x-forwarded-for", "203.0.113.9")], "198.51.100.7"),
        (False, [], "127.0.0.1", [("x-forwarded-for", "203.0.113.9")], "127.0.0.1"),
        (False, [], "198.51.100.7", [(CLIENT_ADDRESS_HEADER, "203.0.113.9")], "198.51.100.7"),
        (False, [], None, [], "unknown"),
        # Our HAProxy: the address it saw, in the header it sets; a client's own header is
        # replaced by HAProxy before it arrives, and X-Forwarded-For is not believed.
        (True, [], "127.0.0.1", [(CLIENT_ADDRESS_HEADER, "198.51.100.7")], "198.51.100.7"),
        (
            True,
            [],
            "127.0.0.1",
            [(CLIENT_ADDRESS_HEADER, "198.51.100.7"), ("x-forwarded-for", "203.0.113.9")],
            "198.51.100.7",
        ),
        (True, [], "127.0.0.1", [], "127.0.0.1"),
        # A trusted load balancer in front: its X-Forwarded-For names the client, read from
        # the right, and only as far as the hops are trusted.
        (False, TRUSTED, LB, [("x-forwarded-for", "203.0.113.9")], "203.0.113.9"),
        (
            False,
            TRUSTED,
            LB,
            [("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
            "203.0.113.9",
        ),
        (
            False,
            TRUSTED,
            LB,
            [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.9")],
            "203.0.113.9",
        ),
        (False, TRUSTED, LB, [], LB),
        (False, TRUSTED, "198.51.100.7", [("x-forwarded-for", "203.0.113.9")], "198.51.100.7"),
        (
            True,
            TRUSTED,
            "127.0.0.1",
            [(CLIENT_ADDRESS_HEADER, LB), ("x-forwarded-for", "203.0.113.9")],
            "203.0.113.9",
        ),
        (False, TRUSTED, LB, [("x-forwarded-for", "not-an-address, 10.0.0.8")], "not-an-address"),
    ],
)
def test_the_client_address(
    behind_haproxy: bool,
    trusted: list[Any],
    peer: str | None,
    headers: list[tuple[str, str]],
    expected: str,
) -> None:
    addresses = ClientAddresses(trusted, behind_haproxy=behind_haproxy)
    assert addresses.of(scope(peer, headers)) == expected
