"""Logging: one JSON object per line, and no credential ever reaches a log.

Every line has ``time`` (RFC 3339 UTC, ``Z``), ``level``, ``logger``, ``event`` (the
message) and ``request_id`` (null outside a request; see ``herald.api.middleware``).
uvicorn's access lines also get ``method``, ``path``, ``status`` and ``client``.
Query-string credentials (``?token=``, ``?ticket=``), bearer and basic credentials, anything
shaped like a JWT and URL passwords are replaced by ``[redacted]`` in the message,
its arguments and any traceback, whichever logger wrote them.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson

from herald.api.middleware import REQUEST_ID
from herald.journal.envelope import format_time

__all__ = ["JsonFormatter", "RedactCredentials", "configure_logging", "redact"]

# code and state: an OAuth callback's query (single-use, but still nobody's business).
_SECRET_NAMES = frozenset({"token", "ticket", "access_token", "code", "state"})
# Any query parameter: its name is compared once percent-decoded (Starlette decodes
# ``?%74oken=`` to ``token``, so the redaction must too).
_PARAM = re.compile(r"([?&])([^=&\s\"?#]+)(=)[^&\s\"#]*")
# Basic too: the member directory's key travels as ``Authorization: Basic {key}``.
_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(@)")
# A JWT wherever it appears (its header always starts with '{"' → "eyJ").
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def _redact_param(m: re.Match[str]) -> str:
    name = unquote_plus(m.group(2)).strip().lower()
    if name in _SECRET_NAMES:
        return f"{m.group(1)}{m.group(2)}{m.group(3)}[redacted]"
    return m.group(0)


def redact(text: str) -> str:
    text = _PARAM.sub(_redact_param, text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _JWT.sub("[redacted]", text)
    return _URL_PASSWORD.sub(r"\1[redacted]\2", text)


class RedactCredentials(logging.Filter):
    """Rewrites a record's message and string arguments so credentials are hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docs for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": format_time(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
            "request_id": REQUEST_ID.get(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            line.update(zip(_ACCESS_FIELDS, args, strict=True))
            line["path"] = redact(str(line["path"]))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for every logger (uvicorn's propagate here when it is run
    with ``log_config=None``).  An unknown level falls back to INFO: the settings
    check reports the bad variable properly."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # On the handler, so records propagated from any logger are filtered too.
    handler.addFilter(RedactCredentials())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    name = level.upper()
    root.setLevel(name if name in logging.getLevelNamesMapping() else "INFO")
