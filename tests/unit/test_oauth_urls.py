"""The URL rules of the OAuth client: which URLs Herald sends OAuth traffic to, where
well-known metadata is looked for, and what an authorization URL carries."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from herald.journal.oauth.keys import pending_key
from herald.journal.oauth.pending import UnsafeUrl, check_url, new_state
from herald.workers._oauth_client import (
    AuthServer,
    Client,
    authorization_url,
    pkce_pair,
    well_known_urls,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://mcp.example.com/mcp",
        "https://mcp.example.com",
        "http://127.0.0.1:8080/mcp",
        "http://localhost:3000",
        "http://[::1]:9000/x",
    ],
)
def test_https_anywhere_and_http_on_loopback_are_accepted(url):
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://mcp.example.com/mcp", "must use https"),
        ("ftp://mcp.example.com", "absolute https"),
        ("mcp.example.com/mcp", "absolute https"),
        ("/relative", "absolute https"),
        ("https://user:pw@mcp.example.com", "credentials"),
        ("https://mcp.example.com/#frag", "fragment"),
        ("https://mcp.example.com:99999", "not a valid URL"),
        ("https://mcp.example.com/a b", "spaces"),
        ("", "1..2048"),
        ("https://x.example/" + "a" * 2100, "1..2048"),
    ],
)
def test_unsafe_urls_are_refused_with_a_reason(url, why):
    with pytest.raises(UnsafeUrl, match=why):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://as.example", ["https://as.example/.well-known/x"]),
        ("https://as.example/", ["https://as.example/.well-known/x"]),
        (
            "https://as.example/tenant/1",
            ["https://as.example/.well-known/x/tenant/1", "https://as.example/.well-known/x"],
        ),
    ],
)
def test_well_known_urls_insert_the_path_then_fall_back_to_the_root(url, expected):
    assert well_known_urls(url, "x") == expected


def test_the_authorization_url_carries_pkce_state_and_resource_and_keeps_its_query():
    server = AuthServer(
        "https://as.example",
        "https://as.example/authorize?tenant=7",
        "https://as.example/token",
        None,
        (),
        False,
    )
    verifier, challenge = pkce_pair()
    url = authorization_url(
        server,
        Client("cid", None, "none"),
        redirect_uri="https://herald.example/api/oauth/callback",
        state="st",
        challenge=challenge,
        resource="https://mcp.example/mcp",
        scope="tools.read",
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "tenant": "7",
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": "https://herald.example/api/oauth/callback",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": "https://mcp.example/mcp",
        "scope": "tools.read",
    }
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode() and 43 <= len(verifier) <= 128


def test_states_are_unique_and_their_keys_do_not_contain_them():
    a, b = new_state(), new_state()
    assert a != b and len(a) >= 43
    assert a not in pending_key(a)
