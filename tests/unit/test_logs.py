from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import pytest

from herald.api.logs import JsonFormatter, RedactCredentials, configure_logging, redact
from herald.api.middleware import REQUEST_ID


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/api/events?token=eyJ.a.b", "/api/events?token=[redacted]"),
        ("/api/events?topic=x&ticket=abc123&x=1", "/api/events?topic=x&ticket=[redacted]&x=1"),
        (
            "/api/oauth/callback?code=c0de&state=s7ate&iss=x",
            "/api/oauth/callback?code=[redacted]&state=[redacted]&iss=x",
        ),
        ("/api/events?TOKEN=zz", "/api/events?TOKEN=[redacted]"),
        ("/api/events?topic=token", "/api/events?topic=token"),
    ],
)
def test_redact(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_filter_rewrites_access_log_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    logger.addFilter(RedactCredentials())
    with caplog.at_level(logging.INFO, logger="test.access"):
        logger.info('%s - "%s %s"', "127.0.0.1", "GET", "/api/events?token=secret.jwt.value")
    assert "secret" not in caplog.text and "[redacted]" in caplog.text


# -- JSON lines ----------------------------------------------------------------------


def _format(record: logging.LogRecord) -> dict[str, Any]:
    RedactCredentials().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def _record(name: str, msg: str, *args: object, **kw: Any) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, logging.INFO, "f.py", 1, msg, args, None, **kw)


def test_json_line_has_time_level_event_and_request_id() -> None:
    token = REQUEST_ID.set("req-42")
    try:
        line = _format(_record("herald.hub", "pub/sub reconnected; %d channels", 3))
    finally:
        REQUEST_ID.reset(token)
    assert line["level"] == "info" and line["logger"] == "herald.hub"
    assert line["event"] == "pub/sub reconnected; 3 channels"
    assert line["request_id"] == "req-42"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert _format(_record("herald", "outside a request"))["request_id"] is None


def test_uvicorn_access_line_is_structured_and_redacted() -> None:
    record = _record(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.7:5123",
        "GET",
        "/api/events?topic=printers&token=eyJhbGciOi.secret.sig",
        "1.1",
        200,
    )
    line = _format(record)
    assert line["method"] == "GET" and line["status"] == 200 and line["client"] == "10.0.0.7:5123"
    assert line["path"] == "/api/events?topic=printers&token=[redacted]"
    assert "secret" not in orjson.dumps(line).decode()


def test_extra_fields_and_tracebacks_are_kept_and_redacted() -> None:
    try:
        raise ConnectionError("cannot reach postgresql://herald:hunter2@db/herald")
    except ConnectionError:
        record = logging.getLogger("herald").makeRecord(
            "herald",
            logging.ERROR,
            "f.py",
            1,
            "flush failed with Authorization: Bearer abc.def.ghi",
            (),
            sys.exc_info(),
            extra={"rows": 16},
        )
    line = _format(record)
    assert line["rows"] == 16 and line["level"] == "error"
    assert "abc.def" not in line["event"] and "[redacted]" in line["event"]
    assert "ConnectionError" in line["exc"] and "hunter2" not in line["exc"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
        ("postgresql+psycopg://app:pw@db/herald", "postgresql+psycopg://app:[redacted]@db/herald"),
        (
            "postgresql+psycopg://postgres@/herald?host=/tmp",
            "postgresql+psycopg://postgres@/herald?host=/tmp",
        ),
        ("Authorization: Bearer eyJ.x.y", "Authorization: Bearer [redacted]"),
        ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic [redacted]"),
        (
            "bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln in cookie",
            "bad token [redacted] in cookie",
        ),
    ],
)
def test_redact_urls_and_bearer_tokens(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_configure_logging_writes_json_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("nonsense")  # the settings check reports it; logging goes on
        assert root.level == logging.INFO
        logging.getLogger("uvicorn.error").warning("GET /x?ticket=abc123 failed")
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = orjson.loads(err[-1])
    assert line["logger"] == "uvicorn.error" and line["event"] == "GET /x?ticket=[redacted] failed"
