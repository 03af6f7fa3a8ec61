"""W3C trace context: parsing, the fallback of an id (seed UUID arithmetic), header reading."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams import tracing
from streams.admission import RawRecord, admit, header_trace

RUN = "0c389a3b-2e32-5807-a47d-34eade48ea35"


def test_the_fallback_of_a_uuid_is_its_bytes_and_the_xor_of_its_halves():
    value = uuid.UUID(RUN)
    context = tracing.fallback(RUN)
    assert context.trace_id == value.bytes.hex() == "0c389a3b2e325807a47d34eade48ea35"
    high, low = int.from_bytes(value.bytes[:8], "big"), int.from_bytes(value.bytes[8:], "big")
    assert int(context.span_id, 16) == high ^ low
    assert context.span_id == f"{0x0C389A3B2E325807 ^ 0xA47D34EADE48EA35:016x}"
    assert context.traceparent == f"00-{context.trace_id}-{context.span_id}-01"


def test_a_uuid_whose_halves_are_equal_gets_span_id_one():
    same = "12345678-9abc-def0-1234-56789abcdef0"
    assert tracing.fallback(same).span_id == "0000000000000001"


def test_an_id_that_is_not_a_uuid_stands_for_its_uuid5():
    assert tracing.uuid_of("req-1") == uuid.uuid5(tracing.NAMESPACE, "req-1")
    assert tracing.fallback("req-1") == tracing.fallback(str(uuid.uuid5(tracing.NAMESPACE, "req-1")))


@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 is exact
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "x" * 200,
    ],
)
def test_an_invalid_traceparent_counts_as_absent(traceparent):
    assert tracing.parse(traceparent) is None


def test_a_valid_traceparent_names_its_trace_span_and_sampling():
    parsed = tracing.parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    assert parsed == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", False)
    later = tracing.parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more")
    assert later is not None and later.sampled  # a later version may append fields


@given(st.text(max_size=200))
def test_parsing_never_fails_on_any_text(text):
    parsed = tracing.parse(text)
    assert parsed is None or (len(parsed.trace_id), len(parsed.span_id)) == (32, 16)


@given(st.text(min_size=1, max_size=100), st.lists(st.text(max_size=20), max_size=4))
def test_derived_span_ids_are_sixteen_hex_never_zero_and_stable(trace_id, about):
    span = tracing.span_id(trace_id, *about)
    assert len(span) == 16 and int(span, 16) != 0 and span == tracing.span_id(trace_id, *about)


def test_headers_give_the_trace_context_and_hostile_ones_are_ignored():
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    trace = header_trace((("traceparent", parent), ("tracestate", b"a=b"), ("other", b"x")))
    assert (trace.traceparent, trace.tracestate, trace.baggage) == (parent.decode(), "a=b", None)
    assert header_trace((("tracestate", b"a=b"),)) is None
    assert header_trace((("traceparent", b"\xff\xfe"),)) is None  # not UTF-8
    assert header_trace((("traceparent", b"0" * 1000),)) is None  # too long


def test_a_trigger_without_a_trace_field_takes_the_traceparent_header():
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    value = b'{"request_id":"r1","persona":"p","provider":"github","kind":"push"}'
    raw = RawRecord("persona.triggers", 0, 0, b"p", value, 1, (("traceparent", parent.encode()),))
    assert admit("triggers", raw).record.request.trace.traceparent == parent
    field = "00-11111111111111111111111111111111-2222222222222222-01"
    value = value[:-1] + f',"trace":{{"traceparent":"{field}"}}}}'.encode()
    raw = RawRecord("persona.triggers", 0, 0, b"p", value, 1, (("traceparent", parent.encode()),))
    assert admit("triggers", raw).record.request.trace.traceparent == field  # the field wins
