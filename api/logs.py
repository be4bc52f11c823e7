"""Logging set-up.  Credentials in URLs (``?token=``, ``?ticket=``) never reach a log."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactCredentials", "redact"]

_SECRET_PARAM = re.compile(r"(?i)([?&](?:token|ticket|access_token)=)[^&\s\"]*")


def redact(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


class RedactCredentials(logging.Filter):
    """Rewrites a record's message arguments so query-string credentials are hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
