"""Who is calling: the client's network address, as far as the service can know it for sure.

The address starts as the peer of the connection: behind the service's own HAProxy, the address
HAProxy saw, which it writes into `CLIENT_ADDRESS_HEADER` (replacing anything a client sent; see
serve_app/gateway/haproxy_wrapper.py); behind Serve's Python proxy, the connection's peer.
Only while that address is one of the operator's `trusted_proxies` is the next
`X-Forwarded-For` hop (from the right) believed, so a client
cannot choose its own address by sending the header.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address

from starlette.types import Scope

CLIENT_ADDRESS_HEADER = "x-serve-client-addr"
_FORWARDED_FOR = b"x-forwarded-for"
UNKNOWN = "unknown"


class ClientAddresses:
    def __init__(
        self, trusted_proxies: Iterable[IPv4Network | IPv6Network], behind_haproxy: bool
    ) -> None:
        self._trusted = tuple(trusted_proxies)
        self._peer_header = CLIENT_ADDRESS_HEADER.encode() if behind_haproxy else None

    def of(self, scope: Scope) -> str:
        peer = self._peer(scope)
        if not self._trusted:
            return peer
        hops = self._forwarded_hops(scope)
        while hops and self._is_trusted(peer):
            peer = hops.pop()
        return peer

    def _peer(self, scope: Scope) -> str:
        if self._peer_header is not None:
            for name, value in scope.get("headers", []):
                if name == self._peer_header:
                    return bytes(value).decode("latin-1").strip()
        client = scope.get("client")
        return str(client[0]) if client else UNKNOWN

    @staticmethod
    def _forwarded_hops(scope: Scope) -> list[str]:
        hops: list[str] = []
        for name, value in scope.get("headers", []):
            if name == _FORWARDED_FOR:
                hops += [hop.strip() for hop in bytes(value).decode("latin-1").split(",")]
        return [hop for hop in hops if hop]

    def _is_trusted(self, address: str) -> bool:
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self._trusted)
