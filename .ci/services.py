"""Embedded Redis + PostgreSQL for CI, used by `.ci/run` when the system servers are down.

Usage: services.py ENV_FILE

Starts `herald.journal.runtime.embedded.EmbeddedServices` under a fresh temp dir, writes
`export HERALD_TEST_REDIS_URL=...` / `export HERALD_TEST_DATABASE_URL=...` to ENV_FILE
(atomically, so its appearance means "ready"), then runs until SIGTERM/SIGINT or until
the process that started it exits, and finally stops both servers and removes the temp dir.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from herald.journal.runtime.embedded import EmbeddedServices

log = logging.getLogger("ci.services")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        log.error("usage: services.py ENV_FILE")
        return 2
    env_file = Path(argv[0]).resolve()
    parent = os.getppid()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("got %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    data_dir = Path(tempfile.mkdtemp(prefix="herald-ci-"))
    # start() must run on the main thread: children die with the thread that forked them.
    services = EmbeddedServices(data_dir)
    try:
        services.start()
        tmp = env_file.with_name(env_file.name + ".tmp")
        tmp.write_text(
            f"export HERALD_TEST_REDIS_URL={shlex.quote(services.redis_url)}\n"
            f"export HERALD_TEST_DATABASE_URL={shlex.quote(services.database_url)}\n"
        )
        tmp.replace(env_file)
        log.info("ready under %s (pid %d)", data_dir, os.getpid())
        # A SIGKILLed parent cannot stop us, so also stop once it is gone.
        while not stop.wait(1.0) and os.getppid() == parent:
            pass
    except Exception:
        log.exception("embedded services failed")
        return 1
    finally:
        services.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[services] %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
