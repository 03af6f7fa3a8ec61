"""Readable lines of ``personaflow tail`` and the demo."""

from __future__ import annotations

from personaflow import render


def test_a_receipt_line_says_queued_once():
    queued = {"persona": "p", "status": "queued", "queued": True, "request_id": "r1", "at_ms": 0}
    busy = {**queued, "status": "lease_busy"}

    assert render.receipt(queued) == "- receipt p queued request=r1"
    assert render.receipt(busy) == "- receipt p lease_busy (queued) request=r1"


def test_a_receipt_line_carries_the_work_key_and_lease():
    value = {
        "persona": "p",
        "status": "completed",
        "queued": False,
        "request_id": "r1",
        "at_ms": 1_000,
        "work_key": "github:o/r:pr:1",
        "lease": {"id": "L1"},
    }

    assert render.receipt(value) == "00:00:01.000 receipt p completed request=r1 work_key=github:o/r:pr:1 lease=L1"


def test_a_json_record_of_the_wrong_shape_is_shown_not_fatal():
    from personaflow.client import Seen
    from personaflow.render import line

    odd = Seen(topic="t", partition=0, offset=1, key="k", value={"kind": "audit.checkpoint", "heads": 5}, raw=b"",
               timestamp_ms=0, headers={})  # fmt: skip
    assert line("audit", odd).startswith("audit key='k': (not a audit record)")
    assert "seq 3" in line("audit", Seen("t", 0, 1, "k", {"kind": "audit.chain_broken", "stream": "s", "seq": 3},
                                         b"", 0, {}))  # fmt: skip
