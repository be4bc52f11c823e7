"""Request bodies of the message routes, parsed from JSON as a client sends them."""

from __future__ import annotations

import uuid

import orjson
import pytest

from herald.api.errors import ApiError
from herald.api.messages import CreateBody
from herald.api.schemas import parse_body


def test_a_client_chosen_message_id_is_a_uuid_string():
    chosen = uuid.uuid4()
    body = parse_body(CreateBody, orjson.loads(orjson.dumps({"id": str(chosen)})))
    assert body.id == chosen


@pytest.mark.parametrize("bad", ["not-a-uuid", 12, ""])
def test_a_malformed_message_id_is_422_naming_the_field(bad: object):
    with pytest.raises(ApiError) as e:
        parse_body(CreateBody, {"id": bad})
    assert e.value.status == 422 and e.value.code == "invalid_body"
