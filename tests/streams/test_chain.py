"""The canonical form the hash chain covers: one digest whoever computes it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams import chain

BASE = {
    "event_id": "persona:p/1",
    "stream": "persona:p",
    "seq": 1,
    "kind": "persona.trigger.received",
    "persona": "p",
    "occurred_at_ms": 1,
    "payload": {"b": 1, "a": [1.5, None, "é"]},
    "cause": {"type": "trigger"},
}


def test_absent_optional_fields_count_as_null_as_the_pipeline_writes_them():
    # A recorder reading a producer's event without ``run_id``/``trace`` and a verifier
    # rebuilding it from columns (where they are null) must agree.
    assert chain.canonical(BASE) == chain.canonical({**BASE, "run_id": None, "trace": None})
    assert chain.canonical({**BASE, "prev_digest": "0" * 64, "digest": "x"}) == chain.canonical(BASE)


@given(st.permutations(sorted(BASE)), st.sampled_from([(), ("run_id",), ("trace",), ("run_id", "trace")]))
def test_key_order_and_explicit_nulls_never_change_the_digest(order, nulls):
    event = {key: BASE[key] for key in order} | {name: None for name in nulls}
    assert chain.recompute(event) == chain.link(chain.GENESIS, chain.canonical(BASE))
