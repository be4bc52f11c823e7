"""One process probing N simulated printers, and the status endpoint while all of
them are offline.

Run from the repository root with the dev extra installed (snmpsim)::

    python bench/printers.py [--printers 200] [--interval 30] [--timeout 5]
                             [--requests 2000] [--redis-url URL] [--database-url URL]

One snmpsim agent on a loopback port serves every printer (one community each; the
printers differ by model, since model, host and port are a printer's identity).
One ``herald serve`` runs the probe in-process, as the embedded default does.

* cycle: from the first probe of a fresh set of printers until every one has a
  cached status; probes/s is N over that time.
* status: the agent is stopped, every printer goes offline (its probes now time
  out, keeping the probe loop busy), then ``GET /api/printers/{id}/status`` is
  requested sequentially for random printers: p50/p99.  PASS when p99 < 100 ms.

The printers are deleted at the end; nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import add_service_args, machine_basics, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import HeraldProcess  # noqa: E402
from tests.snmp_agent import SnmpAgent, warm_up  # noqa: E402

P99_BUDGET_MS = 100.0


async def _statuses(http: httpx.AsyncClient, ids: list[str]) -> list[dict[str, object]]:
    found = (await http.get("/api/printers/status")).json()["printers"]
    return [s for s in found if s["printer_id"] in ids]


async def _until(http: httpx.AsyncClient, ids: list[str], ok: object, deadline_s: float) -> None:
    assert callable(ok)
    deadline = time.monotonic() + deadline_s
    while not all(ok(s) for s in await _statuses(http, ids)):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the printers")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-printers-"))
    agent = SnmpAgent(workdir)
    tag = f"bench{random.randrange(16**6):06x}"
    communities = [f"{tag}-{i:03d}" for i in range(args.printers)]
    for c in communities:
        agent.load(c, "idle")
    agent.start()
    await warm_up(agent, communities[0])
    os.environ.setdefault("HERALD_TEST_REDIS_URL", args.redis_url)
    os.environ.setdefault("HERALD_TEST_DATABASE_URL", args.database_url)
    server = HeraldProcess(
        workdir,
        HERALD_REDIS_URL=args.redis_url,
        HERALD_DATABASE_URL=args.database_url,
        HERALD_WORKER_IN_PROCESS="true",
        HERALD_PRINTER_PROBE_INTERVAL_S=str(args.interval),
        HERALD_PRINTER_PROBE_TIMEOUT_S=str(args.timeout),
        HERALD_PRINTER_PROBE_CONCURRENCY=str(args.concurrency),
    )
    ids: list[str] = []
    server.start(timeout=180)  # a loaded machine takes a while to import and migrate
    try:
        headers = {"Authorization": f"Bearer {server.token('bench', 'admin')}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            try:
                began = time.monotonic()
                for i, c in enumerate(communities):
                    body = {
                        "name": c,
                        "model": f"PT-P750W-{i}",
                        "host": "127.0.0.1",
                        "port": agent.port,
                        "community": c,
                    }
                    ids.append((await http.post("/api/printers", json=body)).json()["id"])
                registered = time.monotonic() - began
                await _until(http, ids, lambda s: s["online"] is True, 600)
                cycle_s = time.monotonic() - began
                agent.stop()
                await _until(http, ids, lambda s: s["online"] is False, 600 + args.interval)
                latencies = []
                for _ in range(args.requests):
                    pid = random.choice(ids)
                    t = time.perf_counter()
                    r = await http.get(f"/api/printers/{pid}/status")
                    latencies.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200 and r.json()["online"] is False
            finally:
                for pid in ids:
                    await http.delete(f"/api/printers/{pid}")
    finally:
        server.stop()
    agent.close()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"machine: {machine_basics()}")
    print(
        f"printers {args.printers}, interval {args.interval:g} s, timeout {args.timeout:g} s, "
        f"concurrency {args.concurrency}"
    )
    print(f"registration of all printers: {registered:.2f} s")
    print(
        f"full cycle (registration to every status cached): {cycle_s:.2f} s, "
        f"{args.printers / cycle_s:.1f} probes/s"
    )
    print(
        f"status endpoint, all offline, {args.requests} requests: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    ok = p99 < P99_BUDGET_MS
    print(("PASS" if ok else "FAIL") + f": p99 {'<' if ok else '>='} {P99_BUDGET_MS:g} ms")
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--printers", type=int, default=200)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=2000)
    add_service_args(p)
    raise SystemExit(asyncio.run(run(p.parse_args())))


if __name__ == "__main__":
    main()
