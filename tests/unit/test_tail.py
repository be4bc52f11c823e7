"""``herald tail``'s client over a mocked HTTP server: following a chat message it
stops at the terminal envelope instead of reconnecting for a 204."""

from __future__ import annotations

import io

import httpx
import orjson
import pytest

from herald.api.tail import MESSAGE_TERMINAL_TYPES, Tail
from herald.journal.messages.store import TERMINAL_TYPES


def _frame(seq: int, type_: str) -> bytes:
    envelope = {"id": str(seq), "type": f"message.{type_}", "data": {"n": seq}}
    return f"id: {seq}\ndata: ".encode() + orjson.dumps(envelope) + b"\n\n"


def _server(body: bytes, hits: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        hits.append(request.headers.get("last-event-id", ""))
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(answer)


def test_the_terminal_types_are_the_message_stores():
    assert {f"message.{t}" for t in TERMINAL_TYPES} == MESSAGE_TERMINAL_TYPES


@pytest.mark.parametrize("terminal", sorted(TERMINAL_TYPES))
async def test_following_a_message_stops_after_its_terminal_event(terminal: str):
    hits: list[str] = []
    body = b"retry: 3000\n\n" + _frame(0, "answer") + _frame(1, terminal)
    out, err = io.StringIO(), io.StringIO()
    tail = Tail("http://herald/api/messages/m/events", "t", [], out=out, err=err,
                until_terminal=True)  # fmt: skip
    async with httpx.AsyncClient(transport=_server(body, hits)) as http:
        assert await tail._once(http) is True
    assert [orjson.loads(line)["id"] for line in out.getvalue().splitlines()] == ["0", "1"]
    assert hits == [""] and "connected to http://herald/api/messages/m/events" in err.getvalue()


async def test_a_user_stream_does_not_stop_at_a_message_type():
    hits: list[str] = []
    body = _frame(0, "end")
    tail = Tail("http://herald/api/events", "t", [], out=io.StringIO(), err=io.StringIO())
    async with httpx.AsyncClient(transport=_server(body, hits)) as http:
        assert await tail._once(http) is False  # the stream ended: reconnect from "0"
    assert tail.cursor == "0"
