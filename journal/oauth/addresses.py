"""Which addresses Herald's OAuth worker may send requests to (SSRF guard).

A user names the MCP server, and that server's metadata names further URLs; all
are fetched by the worker, inside the deployment's network.  So every host is
resolved and each of its addresses classified: loopback, private, link-local
(cloud metadata services live there), multicast, reserved, unspecified and any
other non-global address is refused, unless ``HERALD_OAUTH_ALLOWED_NETWORKS``
names a network that holds it (a self-hosted authorization server, tests).

The classifier is a pure function of an address and the allow-list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["IpNetwork", "literal_refusal", "parse_networks", "refused_reason"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """CIDR texts (``10.0.0.0/8``, ``::1/128``, or a bare address) as networks;
    raises ``ValueError`` naming the bad one."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as e:
            raise ValueError(f"{text!r} is not a network (CIDR) or address: {e}") from e
    return tuple(out)


def refused_reason(address: str, allowed: Sequence[IpNetwork] = ()) -> str | None:
    """Why ``address`` (a literal IP) must not be contacted, or None if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 is that IPv4 address.
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            ip = inner
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally reachable", not ip.is_global),
    ):
        if hit:
            return reason
    return None


def literal_refusal(host: str, allowed: Sequence[IpNetwork] = ()) -> str | None:
    """Why a URL's host must be refused without resolving it: a literal IP the
    classifier refuses, or a ``localhost`` name; None if only DNS can tell."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return refused_reason("127.0.0.1", allowed)
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    return refused_reason(name, allowed)
