"""Authenticated encryption of small secrets at rest (OAuth token sets): AES-256-GCM.

``SecretBox.seal(plaintext, context)`` returns ``version || nonce || ciphertext+tag``;
``SecretBox.open`` returns the plaintext, or raises ``SecretBoxError`` when the bytes
were altered, sealed under another key, or sealed for another ``context``.  The
context is authenticated but not stored: it binds a ciphertext to where it belongs
(a user and a server), so a ciphertext copied into another row does not open.

``secretbox_for(settings)`` derives the key with HKDF-SHA256 from ``HERALD_SECRET_KEY``
or, when that is empty, from the JWT secret: ``HERALD_JWT_SECRET``, or the one the
embedded default generated in ``DATA_DIR``.  Changing the source of the key makes
every stored secret unreadable (each user then connects again).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from herald.journal.runtime.settings import Settings

__all__ = ["KeyUnavailable", "SecretBox", "SecretBoxError", "key_material", "secretbox_for"]

_VERSION = b"\x01"
_NONCE_BYTES = 12  # AES-GCM's standard nonce; random nonces are safe far beyond our volumes
# The file `herald serve` writes the generated JWT secret to (api.auth.load_or_create_secret);
# tests/unit/test_secretbox.py checks that both sides agree on it.
EMBEDDED_SECRET_FILE = "jwt_secret"


class SecretBoxError(Exception):
    """A sealed value could not be opened: altered, another key, or another context."""

    code = "secret_unreadable"


class KeyUnavailable(SecretBoxError):
    """No key material is configured; the message says which variable to set."""

    code = "encryption_key_missing"


class SecretBox:
    """AES-256-GCM with a random nonce per seal; one instance per key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a SecretBox key is exactly 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def derive(cls, material: bytes, *, purpose: bytes = b"herald oauth tokens v1") -> SecretBox:
        """A box whose key is HKDF-SHA256(material, info=purpose): a JWT secret and the
        key derived from it are never the same bytes, and each purpose has its own key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
        return cls(hkdf.derive(material))

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _VERSION + context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SecretBoxError("not a sealed value of a known version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _VERSION + context)
        except InvalidTag as e:
            raise SecretBoxError(
                "the sealed value was altered, or sealed with another key or context"
            ) from e


def key_material(settings: Settings) -> bytes:
    """The secret the encryption key is derived from; raises ``KeyUnavailable`` if none."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.jwt_algorithm == "HS256":
        # Embedded default: `herald serve` generated the JWT secret into the data
        # folder, and every process of that installation shares the folder.
        path = Path(settings.data_dir) / EMBEDDED_SECRET_FILE
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            return text.encode()
    raise KeyUnavailable(
        "no key to encrypt OAuth tokens: set HERALD_SECRET_KEY (at least 32 bytes)"
        + (" or HERALD_JWT_SECRET" if settings.jwt_algorithm == "HS256" else "")
    )


def secretbox_for(settings: Settings) -> SecretBox:
    """The box for OAuth secrets under this installation's key (see the module docstring)."""
    return SecretBox.derive(key_material(settings))
