"""The codec turns bad bytes into errors a producer can act on."""

from __future__ import annotations

import pytest

from streams.codec import DecodeError, decode, encode
from streams.records import MAX_RECORD_BYTES, ControlCommand, TriggerRequest


def test_encode_then_decode_round_trips_with_nulls_present():
    request = TriggerRequest(request_id="r", persona="p", provider="github", kind="push")
    data = encode(request)
    assert b'"cost":null' in data
    assert decode(TriggerRequest, data) == request


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "record value is null; expected a JSON TriggerRequest"),
        (b"\xff\xfe", "value is not valid JSON"),
        (b"[1, 2]", "value must be a JSON object (TriggerRequest), got list"),
        (b'{"request_id":"r","provider":"x","kind":"k"}', "TriggerRequest schema violation: persona: field required"),
        (
            b'{"request_id":"r","persona":"p","provider":"x","kind":"k","colour":"red"}',
            "TriggerRequest schema violation: colour: unknown field (check the spelling against the contract)",
        ),
    ],
)
def test_decode_errors_name_the_problem(value, message):
    with pytest.raises(DecodeError) as caught:
        decode(TriggerRequest, value)
    assert str(caught.value).startswith(message)


def test_records_over_one_mebibyte_are_refused_before_parsing():
    with pytest.raises(DecodeError, match=f"the limit is {MAX_RECORD_BYTES} bytes"):
        decode(TriggerRequest, b" " * (MAX_RECORD_BYTES + 1))


def test_nested_errors_give_the_dotted_path():
    with pytest.raises(DecodeError, match=r"cost\.tokens: field required"):
        decode(
            ControlCommand,
            b'{"command_id":"c","persona":"p","action":"record_spend","actor":"a","cost":{"cost_usd":1}}',
        )
