"""SecretBox: sealed values open only unaltered, under the same key and context; the
key comes from HERALD_SECRET_KEY, else the JWT secret, else the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.api.auth import load_or_create_secret
from herald.journal.oauth.secretbox import KeyUnavailable, SecretBox, SecretBoxError, secretbox_for
from herald.journal.oauth.tokens import sealing_context
from herald.journal.runtime.settings import Settings, SettingsError

KEY_A = "a" * 40
KEY_B = "b" * 40


def _settings(**values: object) -> Settings:
    # Explicit, so HERALD_* variables in the environment cannot change the key.
    values = {"secret_key": None, "jwt_secret": None, **values}
    return Settings.load(redis_url="memory://", **values)


def test_round_trip_and_a_fresh_nonce_per_seal():
    box = SecretBox.derive(b"x" * 32)
    one, two = box.seal(b"token set", b"ctx"), box.seal(b"token set", b"ctx")
    assert one != two  # same plaintext, different nonce: equal secrets are not visible
    assert box.open(one, b"ctx") == box.open(two, b"ctx") == b"token set"
    assert b"token set" not in one


@pytest.mark.parametrize("index", [0, 1, 12, 13, -1])  # version, nonce, body, tag
def test_any_altered_byte_is_refused(index):
    box = SecretBox.derive(b"x" * 32)
    sealed = bytearray(box.seal(b"secret", b"ctx"))
    sealed[index] ^= 0x01
    with pytest.raises(SecretBoxError):
        box.open(bytes(sealed), b"ctx")


def test_truncated_or_empty_values_are_refused():
    box = SecretBox.derive(b"x" * 32)
    sealed = box.seal(b"secret", b"ctx")
    for bad in (b"", sealed[:10], sealed[:-1]):
        with pytest.raises(SecretBoxError):
            box.open(bad, b"ctx")


def test_another_context_or_key_does_not_open():
    box = SecretBox.derive(b"x" * 32)
    sealed = box.seal(b"secret", sealing_context("alice", "https://mcp.example/a"))
    with pytest.raises(SecretBoxError):
        box.open(sealed, sealing_context("bob", "https://mcp.example/a"))
    with pytest.raises(SecretBoxError):
        box.open(sealed, sealing_context("alice", "https://mcp.example/b"))
    with pytest.raises(SecretBoxError):
        SecretBox.derive(b"y" * 32).open(sealed, sealing_context("alice", "https://mcp.example/a"))


def test_contexts_cannot_be_confused_by_separators():
    assert sealing_context("a:b", "c") != sealing_context("a", "b:c")


def test_purposes_get_different_keys():
    sealed = SecretBox.derive(b"x" * 32, purpose=b"one").seal(b"s", b"")
    with pytest.raises(SecretBoxError):
        SecretBox.derive(b"x" * 32, purpose=b"two").open(sealed, b"")


def test_secret_key_wins_over_the_jwt_secret():
    both = secretbox_for(_settings(secret_key=KEY_A, jwt_secret=KEY_B))
    sealed = both.seal(b"s", b"")
    assert secretbox_for(_settings(secret_key=KEY_A)).open(sealed, b"") == b"s"
    with pytest.raises(SecretBoxError):
        secretbox_for(_settings(jwt_secret=KEY_B)).open(sealed, b"")


def test_the_jwt_secret_is_used_when_no_secret_key_is_set():
    sealed = secretbox_for(_settings(jwt_secret=KEY_B)).seal(b"s", b"")
    assert secretbox_for(_settings(jwt_secret=KEY_B, secret_key="")).open(sealed, b"") == b"s"


def test_the_embedded_default_uses_the_generated_jwt_secret(tmp_path: Path):
    # `herald serve` without HERALD_JWT_SECRET generates one into the data folder;
    # the worker (which cannot import api) must find the same secret there.
    secret = load_or_create_secret(tmp_path)
    embedded = secretbox_for(_settings(data_dir=tmp_path))
    assert secretbox_for(_settings(jwt_secret=secret)).open(embedded.seal(b"s", b""), b"") == b"s"


def test_no_key_material_is_a_clear_error(tmp_path: Path):
    with pytest.raises(KeyUnavailable, match="HERALD_SECRET_KEY"):
        secretbox_for(_settings(data_dir=tmp_path / "empty"))
    with pytest.raises(KeyUnavailable, match="HERALD_SECRET_KEY"):
        secretbox_for(_settings(jwt_algorithm="RS256", data_dir=tmp_path))


def test_a_short_secret_key_is_refused_by_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HERALD_SECRET_KEY", "short")
    with pytest.raises(SettingsError, match=r"HERALD_SECRET_KEY: .*at least 32 bytes") as e:
        Settings.load()
    assert "short" not in str(e.value)  # secrets are never echoed


def test_a_key_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"x" * 16)
