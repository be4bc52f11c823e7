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
import os
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
from pysnmp.smi import builder, view
from pysnmp.smi import mibs as bundled_mibs

from herald.workers.printers.parse import SCALARS, TABLES

__all__ = ["SnmpError", "SnmpReader"]

MAX_REPETITIONS = 16  # rows per GETBULK: a label printer's tables fit in one or two


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


class _NoMibCompiler:
    """Numeric OIDs need no MIB: never compile one (nor fetch its source)."""

    def compile(self, *names: str, **_: Any) -> dict[str, str]:
        return dict.fromkeys(names, "missing")


def _numeric_only(engine: SnmpEngine) -> None:
    # pysnmp resolves every OID through a MIB view whose builder, when pysmi is
    # importable, first builds a MIB compiler: seconds of CPU on the event loop, and
    # a compile may try to download MIB sources.  A builder that already "has" a
    # compiler which never compiles keeps reads numeric, with or without pysmi.
    mib_builder = builder.MibBuilder()
    mib_builder.set_mib_compiler(_NoMibCompiler(), os.path.dirname(bundled_mibs.__file__))
    mib_view = view.MibViewController(mib_builder)
    engine.cache["mibViewController"] = mib_view
    # Index the bundled MIBs now, not during the first probe (it takes a while).
    ObjectType(ObjectIdentity(SCALARS[0])).resolve_with_mib(mib_view)


class SnmpReader:
    """Reads a printer's scalars and tables over SNMPv2c."""

    def __init__(self, *, request_timeout_s: float, retries: int = 1) -> None:
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.engine = SnmpEngine()
        _numeric_only(self.engine)

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
