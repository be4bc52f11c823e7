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


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://directory.example/api", "http:// or https://"),
        ("directory.example/api", "http:// or https://"),
        ("https://user:pw@directory.example/api", "credentials"),
        ("https://directory.example/api?tenant=1", "query"),
        ("https://directory.example:99999/api", "not a valid URL"),
    ],
)
def test_a_bad_member_directory_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
):
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_URL", url)
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_KEY", "k")
    with pytest.raises(SettingsError) as e:
        Settings.load()
    assert "HERALD_MEMBER_DIRECTORY_URL" in str(e.value) and problem in str(e.value)


def test_any_member_directory_address_is_accepted_without_its_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
):
    # Operator configuration: loopback and private addresses are the operator's call.
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_KEY", "k")
    for url in ("http://127.0.0.1:8080/api/", "http://10.1.2.3/api", "https://novi.example"):
        monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_URL", url)
        assert Settings.load().member_directory_url == url.rstrip("/")


def test_a_member_directory_needs_its_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_URL", "https://novi.example/api")
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_KEY", "")
    with pytest.raises(SettingsError) as e:
        Settings.load()
    assert "HERALD_MEMBER_DIRECTORY_KEY: " in str(e.value)
    assert "must be set when HERALD_MEMBER_DIRECTORY_URL is" in str(e.value)


def test_the_member_directory_key_is_secret(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_URL", "https://novi.example/api")
    monkeypatch.setenv("HERALD_MEMBER_DIRECTORY_KEY", "the-real-key-123")
    settings = Settings.load()
    assert settings.member_directory_key is not None
    assert settings.member_directory_key.get_secret_value() == "the-real-key-123"
    assert "the-real-key-123" not in repr(settings) and "the-real-key-123" not in str(settings)
    assert (settings.member_cache_s, settings.member_timeout_s) == (14400, 5.0)
