from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from herald.api.auth import Authenticator, AuthError, load_or_create_secret
from herald.journal.runtime.settings import Settings

SECRET = "s" * 40


def _hs() -> Authenticator:
    return Authenticator(Settings(jwt_secret=SECRET))  # type: ignore[arg-type]


def test_issued_token_verifies_to_its_principal():
    auth = _hs()
    p = auth.verify(auth.issue("alice", ("admin",), 60))
    assert p.user == "alice" and p.roles == {"admin"} and p.expires_at > time.time()


# Expiry offsets, not instants: parameters are built at collection time, long
# before a test runs in a full suite.
@pytest.mark.parametrize(
    ("claims", "key", "code"),
    [
        ({"sub": "a", "exp": -60}, SECRET, "token_expired"),
        ({"sub": "a", "exp": 600}, "x" * 40, "bad_signature"),
        ({"sub": "a"}, SECRET, "missing_claim"),
        ({"exp": 600}, SECRET, "missing_claim"),
        ({"sub": "a b", "exp": 600}, SECRET, "bad_claims"),
        ({"sub": "a", "exp": 600, "roles": "admin"}, SECRET, "bad_claims"),
    ],
)
def test_refusals_say_what_was_wrong(claims: dict[str, object], key: str, code: str):
    if "exp" in claims:
        claims = {**claims, "exp": time.time() + float(claims["exp"])}  # type: ignore[arg-type]
    token = jwt.encode(claims, key, algorithm="HS256")
    with pytest.raises(AuthError) as e:
        _hs().verify(token)
    assert e.value.status == 401 and e.value.code == code


def test_garbage_and_wrong_algorithm_are_refused():
    with pytest.raises(AuthError) as e:
        _hs().verify("not-a-jwt")
    assert e.value.code == "malformed_token"
    none_token = jwt.encode({"sub": "a", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(AuthError) as e:
        _hs().verify(none_token)
    assert e.value.code == "bad_algorithm"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithms(algorithm: str, tmp_path):
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pub_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pub_pem)
    settings = Settings(jwt_algorithm=algorithm, jwt_public_key=str(tmp_path / "pub.pem"))  # type: ignore[arg-type]
    auth = Authenticator(settings)
    assert not auth.can_issue
    token = jwt.encode(
        {"sub": "svc", "exp": time.time() + 60, "roles": ["service"]}, private, algorithm=algorithm
    )
    assert auth.verify(token).roles == {"service"}
    forged = jwt.encode({"sub": "svc", "exp": time.time() + 60}, "x" * 40, algorithm="HS256")
    with pytest.raises(AuthError):
        auth.verify(forged)


def test_embedded_secret_is_generated_once_and_private(tmp_path):
    first = load_or_create_secret(tmp_path / "d")
    assert load_or_create_secret(tmp_path / "d") == first and len(first) >= 32
    assert (tmp_path / "d" / "jwt_secret").stat().st_mode & 0o077 == 0
