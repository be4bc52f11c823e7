"""A member directory on loopback that tests script: Starlette served by uvicorn.

It answers ``GET /customers/{uuid}`` as a test told it to (status, body, headers),
counts and records every request (with its ``Authorization`` header), and can hold
the requests for one uuid until the test releases them, so a test can prove what
happens while a call is in flight without sleeping.  It runs on its own event loop
in a thread; ``with MemberDirectoryServer() as upstream:`` starts and stops it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Answer", "MemberDirectoryServer", "Seen"]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, body: Any, status: int = 200, **headers: str) -> Answer:
        return cls(status, orjson.dumps(body), headers)


@dataclass(frozen=True)
class Seen:
    uuid: str
    authorization: str | None
    path: str


class MemberDirectoryServer:
    """The scripted directory; ``url`` is its root (what HERALD_MEMBER_DIRECTORY_URL names)."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._seen: list[Seen] = []
        self._changed = threading.Condition()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)  # connections queue here until uvicorn accepts them
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        app = Starlette(
            routes=[
                Route("/customers/{uuid}", self._customer),
                Route("/elsewhere/{uuid}", self._customer),  # a redirect's target
            ]
        )
        config = uvicorn.Config(app, log_config=None, lifespan="off", ws="none", http="h11")
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="member-directory", daemon=True)

    # What tests call.

    def answer(self, uuid: str, answer: Answer) -> None:
        self._answers[uuid] = answer

    def hold(self, uuid: str) -> None:
        """Requests for ``uuid`` wait (after being counted) until ``release(uuid)``."""
        self._gates[uuid] = asyncio.Event()

    def release(self, uuid: str) -> None:
        gate = self._gates.pop(uuid, None)
        if gate is not None:
            self._loop.call_soon_threadsafe(gate.set)

    def seen(self, uuid: str | None = None) -> list[Seen]:
        with self._changed:
            return [s for s in self._seen if uuid is None or s.uuid == uuid]

    def count(self, uuid: str) -> int:
        return len(self.seen(uuid))

    async def arrived(self, uuid: str, n: int = 1, within_s: float = 30) -> None:
        """Wait until the directory has received ``n`` requests for ``uuid``."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self._count(uuid) >= n, within_s)

        assert await asyncio.to_thread(wait), f"{n} request(s) for {uuid} never arrived"

    # The server side.

    def _count(self, uuid: str) -> int:
        return sum(1 for s in self._seen if s.uuid == uuid)

    async def _customer(self, request: Request) -> Response:
        uuid = request.path_params["uuid"]
        with self._changed:
            self._seen.append(Seen(uuid, request.headers.get("authorization"), request.url.path))
            self._changed.notify_all()
        gate = self._gates.get(uuid)
        if gate is not None:
            await gate.wait()
        answer = self._answers.get(uuid, Answer(404, b'{"error":"not found"}'))
        return Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type="application/json",
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        self._loop.close()

    def __enter__(self) -> MemberDirectoryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for uuid in list(self._gates):
            self.release(uuid)
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()
        assert not self._thread.is_alive(), "the member directory did not stop"
