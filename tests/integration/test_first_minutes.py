"""A newcomer's first ten minutes, on the embedded default: every client — ``herald
tail``, ``tail --message``, ``demo-chat``, the README's Python scripts through
``herald.connect()`` — finds the running ``herald serve`` from its folder alone,
and ``herald token`` refuses to sign with a secret no server knows.

One ``herald serve`` (embedded Redis and PostgreSQL, a free port) serves the whole
module; every command runs in its folder with no ``HERALD_*`` variable set.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration

HERALD = str(Path(sys.executable).with_name("herald"))
README = Path(__file__).resolve().parents[2] / "README.md"
DEADLINE_S = 60.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(folder: Path, *args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HERALD, *args], cwd=folder, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Lines:
    """A process's output lines, readable with a deadline as they arrive."""

    proc: subprocess.Popen[str]
    seen: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the process ended: let the reader finish, then close the pipe."""
        self._thread.join(DEADLINE_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, predicate: object, timeout: float = DEADLINE_S) -> str:
        """The first new line for which ``predicate(line)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError("no such line in time; saw:\n" + "".join(self.seen)) from None
            if line is None:
                raise AssertionError("the process ended; it printed:\n" + "".join(self.seen))
            self.seen.append(line)
            if predicate(line):  # type: ignore[operator]
                return line


@dataclass
class Served:
    folder: Path
    url: str
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("newcomer")
    for attempt in range(3):
        # A free port can be taken by another process before the server binds it:
        # then it exits saying so, and starts again on another port.
        port = free_port()
        proc = subprocess.Popen(
            [HERALD, "serve", "--port", str(port)],
            cwd=folder,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = Lines(proc)
        try:
            out.until(lambda line: "dev token" in line, timeout=120)
            token = out.until(lambda line: line.startswith("ey")).strip()
            out.until(lambda line: line.startswith("herald: ready"), timeout=120)
            break
        except AssertionError as e:
            proc.wait(60)
            out.close()
            if "address already in use" not in str(e) or attempt == 2:
                raise
    try:
        yield Served(folder, f"http://127.0.0.1:{port}", token)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            for p in psutil.process_iter(["cmdline"]):
                if str(folder) in " ".join(p.info["cmdline"] or ()):
                    p.kill()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    assert not (folder / ".herald" / "runtime.json").exists()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _publish(served: Served, user: str, type_: str, data: dict[str, object]) -> str:
    body = {"user": user, "type": type_, "data": data}
    r = httpx.post(f"{served.url}/api/publish", json=body, headers=_auth(served.token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _history(served: Served, user: str) -> list[dict[str, object]]:
    r = httpx.get(
        f"{served.url}/api/events/history?user={user}&limit=1000", headers=_auth(served.token)
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, object]] = r.json()["events"]
    return events


def _readme_python(after: str) -> str:
    """The first Python block of the README after the line containing ``after``."""
    text = README.read_text()
    start = text.index(after)
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert m is not None, f"no python block after {after!r} in the README"
    return m.group(1)


def test_tail_finds_the_running_server(served: Served, unique: str):
    first = _publish(served, unique, "demo.seq", {"n": 0})
    # From the cursor of the first event: deterministic, no race with the live start.
    tail = subprocess.Popen(
        [HERALD, "tail", "--user", unique, "--cursor", first],
        cwd=served.folder,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal, even when the suite itself runs as a background
        # job of a script (whose children start with SIGINT ignored).
        preexec_fn=_default_sigint,
    )
    out = Lines(tail)
    try:
        for n in (1, 2):
            _publish(served, unique, "demo.seq", {"n": n})
        printed = [orjson.loads(out.until(lambda line: '"demo.seq"' in line)) for _ in (1, 2)]
        assert [e["data"]["n"] for e in printed] == [1, 2]
    finally:
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=DEADLINE_S)
    assert "ConnectError" not in err and "reconnecting" not in err, err


def test_demo_chat_and_tail_message_exit_after_the_end(served: Served, unique: str):
    message = str(uuid.uuid4())
    chat = _run(served.folder, "demo-chat", "--user", unique, "--message-id", message,
                "--delay-ms", "0")  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert f"/api/messages/{message}/events" in chat.stdout
    assert f"{served.url}/api/messages" in chat.stdout  # the running server's URL, not :8000
    tail = _run(served.folder, "tail", "--user", unique, "--message", message)
    assert tail.returncode == 0, tail.stderr
    # Exits after `end` on the first connection, not on a reconnect that gets a 204.
    assert "reconnecting" not in tail.stderr, tail.stderr
    envelopes = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert envelopes[-1]["type"] == "message.end"
    text = "".join(e["data"]["text"] for e in envelopes if e["type"] == "message.answer")
    assert text.split() == resources.files("herald").joinpath("demo_answer.txt").read_text().split()
    started = [e["type"] for e in _history(served, unique)]
    assert started == ["chat.message.started", "chat.message.finished"]


def test_readme_producer_scripts_run_as_printed(served: Served):
    before = {e["id"] for e in _history(served, "dev")}
    script = served.folder / "hello.py"
    script.write_text(_readme_python("Publish from Python"))
    hello = subprocess.run(
        [sys.executable, script.name], cwd=served.folder, env=_env(), capture_output=True,
        text=True, timeout=DEADLINE_S,
    )  # fmt: skip
    assert hello.returncode == 0, hello.stderr
    new = [e for e in _history(served, "dev") if e["id"] not in before]
    assert "demo.hello" in [e["type"] for e in new], new

    answer = served.folder / "answer.py"
    answer.write_text(_readme_python("A chat answer from Python"))
    streamed = subprocess.run(
        [sys.executable, answer.name], cwd=served.folder, env=_env(), capture_output=True,
        text=True, timeout=DEADLINE_S,
    )  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    (message_id,) = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", streamed.stdout)
    r = httpx.get(
        f"{served.url}/api/messages/{message_id}/events?format=json",
        headers=_auth(served.token),
    )
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["events"]][-1] == "message.end"


def test_an_admin_streams_another_users_events(served: Served, unique: str):
    first = _publish(served, unique, "demo.seq", {"n": 1})
    _publish(served, unique, "demo.seq", {"n": 2})
    url = f"{served.url}/api/events?user={unique}&last_event_id={first}"
    with httpx.stream("GET", url, headers=_auth(served.token), timeout=DEADLINE_S) as r:
        assert r.status_code == 200
        data = next(line for line in r.iter_lines() if line.startswith("data: "))
    envelope = orjson.loads(data.removeprefix("data: "))
    assert envelope["subject"] == f"user:{unique}" and envelope["data"] == {"n": 2}


def test_token_and_tail_outside_a_data_folder_refuse(tmp_path: Path):
    token = _run(tmp_path, "token", "--user", "dev", "--role", "admin")
    assert token.returncode == 2 and token.stdout == ""
    assert "no JWT secret" in token.stderr and "herald serve" in token.stderr
    assert not (tmp_path / ".herald").exists()  # no secret was made up
    tail = _run(tmp_path, "tail", "--user", "dev", timeout=30)
    assert tail.returncode == 2 and "no running `herald serve`" in tail.stderr
    publish = _run(tmp_path, "publish", "--user", "dev", "demo.x", "{}")
    assert publish.returncode == 2 and "no running `herald serve`" in publish.stderr


def test_token_from_the_served_folder_is_accepted(served: Served):
    minted = _run(served.folder, "token", "--user", "dev", "--role", "admin")
    assert minted.returncode == 0, minted.stderr
    r = httpx.get(f"{served.url}/api/whoami", headers=_auth(minted.stdout.strip()))
    assert r.status_code == 200 and r.json()["user"] == "dev"
