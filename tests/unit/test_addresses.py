"""The OAuth worker's address classifier (issue 11, #4), a pure function tested with
literal addresses only: nothing here sends a packet."""

from __future__ import annotations

import pytest

from herald.journal.oauth.addresses import literal_refusal, parse_networks, refused_reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.20", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally reachable"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("not-an-ip", "not an IP address"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_addresses_outside_the_public_internet_are_refused(address: str, reason: str | None):
    assert refused_reason(address) == reason


def test_an_allowed_network_lets_its_addresses_through_and_no_others():
    allowed = parse_networks(["127.0.0.1/32", "10.20.0.0/16"])
    assert refused_reason("127.0.0.1", allowed) is None
    assert refused_reason("10.20.3.4", allowed) is None
    assert refused_reason("127.0.0.2", allowed) == "loopback"
    assert refused_reason("10.21.0.1", allowed) == "private"
    assert refused_reason("::1", allowed) == "loopback"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("localhost", "loopback"),
        ("api.localhost", "loopback"),
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("169.254.169.254", "link-local"),
        ("mcp.example.com", None),  # a name: the worker resolves and checks it
    ],
)
def test_literal_hosts_are_judged_without_resolving(host: str, reason: str | None):
    assert literal_refusal(host) == reason


def test_a_bad_network_is_named():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])
