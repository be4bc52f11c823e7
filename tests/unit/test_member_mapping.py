"""The member directory's answer → Herald's: pure functions, tested with tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from herald.api.members.mapping import (
    InvalidMember,
    Member,
    display_name,
    member_from_body,
    normalise_email,
    parse_member_uuid,
    retry_after_s,
)

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("first", "last", "name", "shown"),
    [
        ("Ann", "Smith", "Ann Smith", "Ann S."),
        ("Ann", "", "Ann Smith", "Ann Smith"),
        ("", "Smith", "Ann Smith", "Ann Smith"),
        ("", "", "Guild of Ann", "Guild of Ann"),
        ("Ann", "", "", "Ann"),
        ("", "Smith", "", None),
        ("", "", "", None),
        (" ", "  ", " \t", None),
        ("  Ann ", " de Vries ", "", "Ann d."),
        ("Åsa", "Östberg", "", "Åsa Ö."),
        ("", "", "  Ann \n Smith ", "Ann Smith"),
    ],
)
def test_display_name(first: str, last: str, name: str, shown: str | None) -> None:
    assert display_name(first, last, name) == shown


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("ann@example.org", "ann@example.org"),
        ("ann news@example.org", "ann+news@example.org"),
        ("a b c@example.org", "a+b+c@example.org"),
        ("  ann@example.org  ", "ann@example.org"),
        ("Ann.Smith@Example.ORG", "Ann.Smith@example.org"),
        ("ann+news@example.org", "ann+news@example.org"),
        ("", None),
        ("   ", None),
    ],
)
def test_normalise_email(raw: str, email: str | None) -> None:
    assert normalise_email(raw) == email


@pytest.mark.parametrize(
    ("body", "member"),
    [
        (
            {"FirstName": "Ann", "LastName": "Smith", "Email": "a b@x.org"},
            Member("Ann S.", "a+b@x.org"),
        ),
        ({"Email": "a@x.org"}, Member(None, "a@x.org")),
        ({"Name": "Ann"}, Member("Ann", None)),
        ({}, None),
        ({"FirstName": "", "LastName": None, "Name": " ", "Email": ""}, None),
        ({"UniqueID": "u", "Active": False}, None),
    ],
)
def test_member_from_body(body: dict[str, Any], member: Member | None) -> None:
    assert member_from_body(body) == member


@pytest.mark.parametrize(
    "body", [[], "Ann", 3, None, {"FirstName": 5}, {"Email": ["a@x.org"]}, {"Name": {"a": 1}}]
)
def test_a_body_that_is_not_a_member_record_is_invalid(body: Any) -> None:
    with pytest.raises(InvalidMember):
        member_from_body(body)


def test_a_cached_member_round_trips() -> None:
    member = Member("Ann S.", "ann@example.org")
    assert Member.from_json(member.to_json()) == member
    with pytest.raises(InvalidMember):
        Member.from_json({"full_name": 3, "email": None})


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e", "0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e"),
        ("0B4E7A0E-5FE8-4AD2-8EB8-E6D2B8CB2C4E", "0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e"),
        ("0b4e7a0e5fe84ad28eb8e6d2b8cb2c4e", None),
        ("{0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e}", None),
        ("urn:uuid:0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4e", None),
        ("0b4e7a0e-5fe8-4ad2-8eb8-e6d2b8cb2c4g", None),
        ("0b4e7a0e+5fe8-4ad2-8eb8-e6d2b8cb2c4e", None),
        ("", None),
    ],
)
def test_parse_member_uuid(text: str, canonical: str | None) -> None:
    assert parse_member_uuid(text) == canonical


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("17", 17),
        (" 17 ", 17),
        ("0", 1),
        ("999999", 3600),
        ("Sun, 22 Nov 2026 10:02:00 GMT", 120),
        ("Sun, 22 Nov 2026 09:00:00 GMT", 1),
        ("soon", 60),
        ("-5", 60),
        ("1.5", 60),
        ("", 60),
        (None, 60),
    ],
)
def test_retry_after_s(header: str | None, seconds: int) -> None:
    assert retry_after_s(header, NOW, default=60) == seconds
