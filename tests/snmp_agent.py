"""A real SNMP agent for tests and benchmarks: ``snmpsim-command-responder`` on a
free loopback UDP port, one simulated agent per community.

snmpsim serves every ``<community>.snmprec`` file of its data folder (lines
``OID|tag|value``, sorted by OID) to requests with that community.  The data files
of the printer states live in ``tests/data/printers/``:

=========================== ==========================================================
``idle.snmprec``            idle and online, 12 mm tape, one-byte error state (none)
``printing.snmprec``        hrPrinterStatus printing
``cover_open_no_paper``     noPaper + doorOpen (first byte) and outputNearFull +
                            inputTrayEmpty (second byte); device down
``media_changed.snmprec``   24 mm tape loaded
``rebooted.snmprec``        like media_changed, but sysUpTime much lower
=========================== ==========================================================

The printer is hrDeviceIndex 2 (device 1 is its network interface), so a probe
that hard-coded index ``.1`` would read the wrong row.  ``load()`` swaps a
community's file while the agent runs; snmpsim notices by the file's mtime (whole
seconds), so each load moves the mtime one second further.  Its log (every request
with its source port and the community's context name) is kept with arrival times,
so tests count the requests each printer got and which process sent them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "printers"
RESPONDER = str(Path(sys.executable).with_name("snmpsim-command-responder"))
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
_SOURCE = re.compile(r"transportAddress \('127\.0\.0\.1', (\d+)\).*securityName (\w+)")
_REQUEST = re.compile(r"^Request var-binds: (\S+?)=")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # time.monotonic() when the agent logged it
    community: str
    source_port: int
    first_oid: str


class SnmpAgent:
    """``snmpsim-command-responder`` on ``127.0.0.1:port`` over the files in ``workdir``."""

    def __init__(self, workdir: Path, *, port: int | None = None):
        self.data_dir = workdir / "snmp-data"
        self.cache_dir = workdir / "snmp-cache"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_udp_port()
        self.proc: subprocess.Popen[str] | None = None
        self.requests: list[Request] = []
        self.log: list[str] = []
        self._mtime = int(time.time())
        self._changed = threading.Condition()
        self._ready = threading.Event()

    # -- data ---------------------------------------------------------------------

    def load(self, community: str, state: str) -> None:
        """Serve ``tests/data/printers/<state>.snmprec`` to ``community`` from now on."""
        self.write(community, (DATA / f"{state}.snmprec").read_text())

    def write(self, community: str, records: str) -> None:
        target = self.data_dir / f"{community}.snmprec"
        scratch = target.with_suffix(".tmp")
        scratch.write_text(records)
        self._mtime = max(self._mtime + 1, int(time.time()))
        os.utime(scratch, (self._mtime, self._mtime))
        os.replace(scratch, target)

    # -- process ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the agent; returns once it listens.  Communities are the files
        present now (snmpsim scans its data folder at start only)."""
        self._ready.clear()
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                RESPONDER,
                f"--data-dir={self.data_dir}",
                f"--cache-dir={self.cache_dir}",
                f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
                "--log-level=info",  # one line per request: what the tests count
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("snmpsim did not start:\n" + "".join(self.log[-40:]))

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        names = {hashlib.md5(p.stem.encode()).hexdigest(): p.stem for p in self._files()}
        source: tuple[int, str] | None = None
        for line in proc.stdout:
            if len(self.log) < 10000:
                self.log.append(line)
            if "Listening at UDP/IPv4 endpoint" in line:
                self._ready.set()
            if found := _SOURCE.search(line):
                source = int(found[1]), names.get(found[2], found[2])
            elif (found := _REQUEST.match(line)) and source is not None:
                with self._changed:
                    self.requests.append(Request(time.monotonic(), source[1], source[0], found[1]))
                    self._changed.notify_all()
                source = None

    def _files(self) -> list[Path]:
        return sorted(self.data_dir.glob("*.snmprec"))

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._pump_thread.join(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    # -- what it saw --------------------------------------------------------------

    def probes(self, community: str | None = None) -> list[Request]:
        """The probes seen so far: a probe starts with its GET of sysDescr."""
        with self._changed:
            return [
                r
                for r in self.requests
                if r.first_oid == SYS_DESCR and (community is None or r.community == community)
            ]

    def wait_probes(self, predicate: object, timeout: float) -> list[Request]:
        """Block until ``predicate(probes)`` is true; the probes then."""
        assert callable(predicate)
        with self._changed:
            ok = self._changed.wait_for(lambda: predicate(self._probes_locked()), timeout)
            assert ok, f"timed out waiting for probes; {len(self.requests)} requests seen"
            return self._probes_locked()

    def _probes_locked(self) -> list[Request]:
        return [r for r in self.requests if r.first_oid == SYS_DESCR]


async def warm_up(agent: SnmpAgent, community: str, deadline_s: float = 90.0) -> None:
    """Unhurried reads until one is answered: snmpsim's first answer takes seconds
    (it loads its modules and opens the data file), longer than a test's probe
    timeout, and on a fresh machine under load more than one read's 15 s."""
    from herald.workers.printers.snmp import SnmpError, SnmpReader

    reader = SnmpReader(request_timeout_s=15, retries=0)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    try:
        while True:
            try:
                await reader.read("127.0.0.1", agent.port, community)
                return
            except SnmpError:
                if loop.time() >= give_up:
                    raise
    finally:
        reader.close()
