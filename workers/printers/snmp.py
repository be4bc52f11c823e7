"""SNMPv2c reads with pysnmp 7's asyncio API, by numeric OID (no MIB is loaded).

``SnmpReader`` owns one ``SnmpEngine``, which belongs to the event loop that made
it: build the reader inside the loop that uses it and ``close()`` it there.  One
engine serves any number of concurrent requests to any number of agents.

A read is one GET of the scalars plus a GETBULK walk of each table subtree, all
in flight at once; a walk stops at the end of its subtree, so tables are read
whatever their row indexes are.  Every failure (no answer, an error status, an
unusable address) raises ``SnmpError``; the caller bounds the whole read with its
own timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from pyasn1.type import univ
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    bulk_walk_cmd,
    get_cmd,
)

from herald.workers.printers.parse import SCALARS, TABLES

__all__ = ["SnmpError", "SnmpReader"]

MAX_REPETITIONS = 25  # rows per GETBULK: a label printer's tables fit in one or two


class SnmpError(Exception):
    """The agent did not answer usefully; the message says how (it is shown to
    users as the printer's ``last_error``)."""


def _unwrap(value: Any) -> int | bytes | None:
    # noSuchObject, noSuchInstance and endOfMibView are Null subtypes: no value.
    if isinstance(value, univ.Null):
        return None
    if isinstance(value, univ.OctetString):
        return bytes(value.asOctets())
    if isinstance(value, univ.Integer):  # TimeTicks, Gauge32, Counter32 too
        return int(value)
    return None


class SnmpReader:
    """Reads a printer's scalars and tables over SNMPv2c."""

    def __init__(self, *, request_timeout_s: float, retries: int = 1) -> None:
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.engine = SnmpEngine()

    def close(self) -> None:
        self.engine.close_dispatcher()

    async def read(
        self,
        host: str,
        port: int,
        community: str,
        scalars: Sequence[str] = SCALARS,
        tables: Iterable[str] = TABLES,
    ) -> dict[str, int | bytes]:
        """Every value under ``scalars`` and ``tables``, keyed by dotted OID."""
        target = await self._target(host, port)
        auth = CommunityData(community)  # SNMPv2c
        try:
            async with asyncio.TaskGroup() as group:
                parts = [group.create_task(self._get(auth, target, scalars))]
                parts += [group.create_task(self._walk(auth, target, t)) for t in tables]
        except ExceptionGroup as failed:
            # The first failure says what is wrong; the other requests were cancelled.
            raise _first(failed) from None
        readings: dict[str, int | bytes] = {}
        for part in parts:
            readings.update(part.result())
        return readings

    async def _target(self, host: str, port: int) -> UdpTransportTarget | Udp6TransportTarget:
        try:
            is_v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            is_v6 = False
        kind = Udp6TransportTarget if is_v6 else UdpTransportTarget
        try:
            return await kind.create(
                (host, port), timeout=self.request_timeout_s, retries=self.retries
            )
        except PySnmpError as e:
            raise SnmpError(f"cannot resolve {host}: {e}") from e

    async def _get(self, auth: CommunityData, target: Any, oids: Sequence[str]) -> dict[str, Any]:
        objects = [ObjectType(ObjectIdentity(oid)) for oid in oids]
        error, status, index, binds = await get_cmd(
            self.engine, auth, target, ContextData(), *objects, lookupMib=False
        )
        _raise_for(error, status, index, oids)
        return {str(name): v for name, value in binds if (v := _unwrap(value)) is not None}

    async def _walk(self, auth: CommunityData, target: Any, subtree: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        walk = bulk_walk_cmd(
            self.engine,
            auth,
            target,
            ContextData(),
            0,
            MAX_REPETITIONS,
            ObjectType(ObjectIdentity(subtree)),
            lookupMib=False,
            lexicographicMode=False,
        )
        try:
            async for error, status, index, binds in walk:
                # The walk retries a timed-out request forever: stop at the first error.
                _raise_for(error, status, index, [subtree])
                for name, value in binds:
                    if (v := _unwrap(value)) is not None:
                        found[str(name)] = v
        finally:
            await walk.aclose()
        return found


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _raise_for(error: Any, status: Any, index: Any, oids: Sequence[str]) -> None:
    if error:
        raise SnmpError(str(error))
    if status:
        at = int(index or 0)
        where = f" at {oids[at - 1]}" if 0 < at <= len(oids) else ""
        raise SnmpError(f"the agent answered {status.prettyPrint()}{where}")
