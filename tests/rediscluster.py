"""A real Redis Cluster on loopback: 3 primaries + 3 replicas of the machine's
``redis-server``, created with ``redis-cli --cluster create``.

Used by tests/cluster and bench/cluster.py.  Ports are free loopback ports whose
cluster-bus port (+10000) is free too; data lives under a temporary folder and
nothing is persisted.  ``unavailable()`` says why a cluster cannot be started here
(no ``redis-server`` 7, which sharded pub/sub needs), or returns None.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis.crc import key_slot

__all__ = ["LocalCluster", "unavailable"]

MIN_VERSION = (7, 0)


def _version(binary: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def unavailable() -> str | None:
    """Why no local cluster can run here, or None when one can."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        return "redis-server and redis-cli are not on PATH (Redis Cluster tests need Redis >= 7)"
    version = _version(server)
    if version is None or version < MIN_VERSION:
        found = ".".join(map(str, version)) if version else "unknown"
        return f"redis-server {found} found; sharded pub/sub needs Redis >= 7"
    return None


def _free_port_pair() -> int:
    """A free port whose cluster-bus port (+10000) is free as well."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """``start()`` makes the cluster and waits until every slot is served and every
    replica is in sync; ``stop()`` kills the nodes and removes their folder."""

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 1) -> None:
        self.size = primaries * (1 + replicas_per_primary)
        self.replicas_per_primary = replicas_per_primary
        self.ports: list[int] = []
        self.dir = Path(tempfile.mkdtemp(prefix="herald-cluster-"))
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def cli(self, port: int, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout

    def start(self, timeout: float = 60.0) -> LocalCluster:
        for _ in range(self.size):
            port = _free_port_pair()
            (self.dir / str(port)).mkdir()
            self.ports.append(port)
            self._spawn(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(deadline, lambda p=port: self.cli(p, "PING").strip() == "PONG")
        subprocess.run(
            [
                *("redis-cli", "--cluster", "create", *self.nodes),
                *("--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"),
            ],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        self.wait_healthy(deadline - time.monotonic())
        return self

    def _spawn(self, port: int) -> None:
        self._procs[port] = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                "--dir", str(self.dir / str(port)),
                "--save", "",
                "--appendonly", "no",
                "--logfile", "redis.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def crash(self, port: int) -> None:
        """SIGKILL one node: to the cluster it disappears."""
        proc = self._procs.pop(port)
        proc.kill()
        proc.wait(10)

    def freeze(self, port: int) -> None:
        """SIGSTOP one node: it keeps its sockets open and answers nothing."""
        self._procs[port].send_signal(signal.SIGSTOP)

    def thaw(self, port: int) -> None:
        self._procs[port].send_signal(signal.SIGCONT)

    def revive(self, port: int, timeout: float = 30.0) -> None:
        """Start a crashed node again (it keeps its cluster identity) and wait until
        the cluster is healthy, with every primary replicated again."""
        self._spawn(port)
        self.wait_healthy(timeout)

    def _wait(self, deadline: float, ok: object) -> None:
        assert callable(ok)
        while True:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if ok():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"local Redis Cluster not ready; logs under {self.dir}")
            time.sleep(0.05)  # polling a subprocess state, with a deadline

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every node sees the cluster ``ok`` and every replica's link is up."""
        deadline = time.monotonic() + timeout

        def healthy() -> bool:
            for port in self.ports:
                if "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
                    return False
            for _primary, replica in self.pairs():
                if "master_link_status:up" not in self.cli(replica, "INFO", "replication"):
                    return False
            return len(self.pairs()) == self.size // (1 + self.replicas_per_primary)

        self._wait(deadline, healthy)

    def topology(self) -> list[dict[str, str]]:
        """``CLUSTER NODES`` as seen by the first reachable node."""
        for port in self.ports:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                rows = []
                for line in self.cli(port, "CLUSTER", "NODES").splitlines():
                    f = line.split()
                    rows.append({"id": f[0], "addr": f[1].split("@")[0], "flags": f[2],
                                 "master": f[3], "slots": " ".join(f[8:])})  # fmt: skip
                return rows
        raise RuntimeError("no cluster node answers")

    def pairs(self) -> list[tuple[int, int]]:
        """(primary port, replica port) for every primary that has a replica."""
        rows = self.topology()
        by_id = {r["id"]: r for r in rows}
        out = []
        for r in rows:
            if "slave" in r["flags"] and r["master"] in by_id:
                primary = by_id[r["master"]]
                if "master" in primary["flags"] and "fail" not in primary["flags"]:
                    out.append((int(primary["addr"].rsplit(":", 1)[1]),
                                int(r["addr"].rsplit(":", 1)[1])))  # fmt: skip
        return sorted(out)

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, primary port) for every served range."""
        out = []
        for r in self.topology():
            if "master" not in r["flags"]:
                continue
            for part in r["slots"].split():
                lo, _, hi = part.partition("-")
                if lo.isdigit():
                    out.append((int(lo), int(hi or lo), int(r["addr"].rsplit(":", 1)[1])))
        return out

    def primary_of(self, slot: int) -> int:
        """The port of the primary serving ``slot``."""
        for lo, hi, port in self.slot_ranges():
            if lo <= slot <= hi:
                return port
        raise LookupError(f"slot {slot} is not served")

    def users_on_every_shard(self, prefix: str, per_shard: int = 1) -> dict[int, list[str]]:
        """``per_shard`` user names per primary port whose streams live on it."""
        ranges = self.slot_ranges()
        found: dict[int, list[str]] = {port: [] for _, _, port in ranges}
        i = 0
        while any(len(names) < per_shard for names in found.values()):
            name = f"{prefix}-{i}"
            slot = key_slot(f"{{u:{name}}}".encode())
            port = next(p for lo, hi, p in ranges if lo <= slot <= hi)
            if len(found[port]) < per_shard:
                found[port].append(name)
            i += 1
        return found

    def failover(self, primary: int, timeout: float = 30.0) -> int:
        """``CLUSTER FAILOVER`` on ``primary``'s replica; waits until the replica
        serves the slots and the cluster is healthy again.  Returns the new primary."""
        replica = dict(self.pairs())[primary]
        self.cli(replica, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        self._wait(deadline, lambda: "role:master" in self.cli(replica, "INFO", "replication"))
        self.wait_healthy(deadline - time.monotonic())
        return replica

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.kill()
        for proc in self._procs.values():
            proc.wait(10)
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
