"""An httpx client for the OAuth worker that connects only to addresses the
classifier allows (``journal.oauth.addresses``).

The check sits in the connection layer, not before the request: the host is
resolved once, every address it resolves to is classified, and the TCP
connection goes to a vetted address (TLS still verifies the host name), so a
DNS answer that changes between a check and the connect cannot slip through.
Redirects are not followed, so every URL the worker fetches passes here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from herald.journal.oauth.addresses import IpNetwork, refused_reason

__all__ = ["AddressRefused", "GuardedBackend", "guarded_client"]


class AddressRefused(Exception):
    """A host resolves to an address the worker must not contact."""

    code = "address_refused"


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allowed: Sequence[IpNetwork], inner: httpcore.AsyncNetworkBackend) -> None:
        self.allowed = tuple(allowed)
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            reason = refused_reason(address, self.allowed)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to a {reason} address; Herald does not connect there "
                    "(HERALD_OAUTH_ALLOWED_NETWORKS can allow a network)"
                )
        return await self.inner.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not reachable from the OAuth worker")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(allowed: Sequence[IpNetwork], **kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)`` whose connections pass ``GuardedBackend``."""
    transport = httpx.AsyncHTTPTransport()
    pool = transport._pool
    # httpx builds its pool with httpcore's default backend and offers no argument
    # for another: wrap the one it made.
    pool._network_backend = GuardedBackend(allowed, pool._network_backend)
    return httpx.AsyncClient(transport=transport, **kwargs)
