from __future__ import annotations

import pytest

from herald.journal.runtime.settings import Settings, SettingsError


def test_defaults(monkeypatch: pytest.MonkeyPatch):
    for var in ("HERALD_REDIS_URL", "HERALD_DATABASE_URL", "HERALD_JWT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    s = Settings.load()
    assert s.embedded and s.max_envelope_bytes == 65536 and s.stream_maxlen == 10000
    assert s.idempotency_window_s == 300 and s.port == 8000


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        ("HERALD_STREAM_MAXLEN", "lots", "valid integer"),
        ("HERALD_MAX_ENVELOPE_BYTES", "10", "greater than or equal to 256"),
        ("HERALD_REDIS_URL", "http://x", "must start with redis://"),
        ("HERALD_DATABASE_URL", "mysql://x", "postgresql"),
        ("HERALD_JWT_ALGORITHM", "none", "HS256"),
        ("HERALD_JWT_SECRET", "short", "at least 32 bytes"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, problem: str
):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        Settings.load()
    assert var in str(e.value) and problem in str(e.value)
    if "SECRET" in var:
        assert value not in str(e.value), "secrets are never echoed"


def test_postgres_url_is_normalised_to_psycopg(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql://u@h/db")
    assert Settings.load().database_url == "postgresql+psycopg://u@h/db"
