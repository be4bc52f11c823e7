from __future__ import annotations

import logging

import pytest

from api.logs import RedactCredentials, redact


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/api/events?token=eyJ.a.b", "/api/events?token=[redacted]"),
        ("/api/events?topic=x&ticket=abc123&x=1", "/api/events?topic=x&ticket=[redacted]&x=1"),
        ("/api/events?TOKEN=zz", "/api/events?TOKEN=[redacted]"),
        ("/api/events?topic=token", "/api/events?topic=token"),
    ],
)
def test_redact(raw: str, shown: str):
    assert redact(raw) == shown


def test_filter_rewrites_access_log_arguments(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("test.access")
    logger.addFilter(RedactCredentials())
    with caplog.at_level(logging.INFO, logger="test.access"):
        logger.info('%s - "%s %s"', "127.0.0.1", "GET", "/api/events?token=secret.jwt.value")
    assert "secret" not in caplog.text and "[redacted]" in caplog.text
