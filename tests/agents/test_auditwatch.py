"""The worker's view of ``persona.audit`` (no broker: notices fed in as bytes)."""

from __future__ import annotations

from agents import auditwatch
from agents.auditwatch import AuditView
from streams import wire


def notice(**fields: object) -> bytes:
    return wire.encode(wire.AuditNotice(group="g", at_ms=1, **fields))


def broken(stream: str, seq: int, at_ms: int = 1) -> bytes:
    return wire.encode(
        wire.AuditNotice(kind="audit.chain_broken", group="g", at_ms=at_ms, stream=stream, seq=seq, detail="d")
    )


def test_each_stream_keeps_its_first_break_and_the_newest_checkpoint_wins():
    view = AuditView()
    view.add(broken("run:r1", 4))
    view.add(broken("run:r1", 9))  # later breaks of the same stream follow from the first
    view.add(notice(kind="audit.checkpoint", number=2, heads={"a": [1, "x"], "b": [2, "y"]}))
    view.add(notice(kind="audit.checkpoint", number=1, heads={}))  # republished older copy
    shown = view.to_json()
    assert [(b["stream"], b["seq"]) for b in shown["broken"]] == [("run:r1", 4)] and shown["broken_total"] == 1
    assert shown["checkpoint"]["number"] == 2 and shown["checkpoint"]["streams"] == 2
    assert "heads" not in shown["checkpoint"]  # the view never holds the heads themselves


def test_unreadable_notices_are_skipped_and_the_kept_breaks_are_capped(monkeypatch):
    monkeypatch.setattr(auditwatch, "BROKEN_KEPT", 3)
    view = AuditView()
    for raw in (None, b"", b"\xff", b'{"kind": "other"}'):
        view.add(raw)
    for n in range(5):
        view.add(broken(f"persona:p{n}", 1, at_ms=n))
    shown = view.to_json()
    assert shown["notices"] == 5 and shown["broken_total"] == 5 and len(shown["broken"]) == 3


def test_a_stream_past_the_kept_ones_is_counted_once(monkeypatch):
    monkeypatch.setattr(auditwatch, "BROKEN_KEPT", 1)
    view = AuditView()
    for _ in range(3):
        view.add(broken("persona:a", 1))
        view.add(broken("persona:b", 1))  # not kept, still counted once
    assert view.to_json()["broken_total"] == 2 and len(view.broken) == 1
