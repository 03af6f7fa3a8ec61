"""Tamper evidence in the audit store (README, "Audit"): 10,000 chained events recorded into
SQLite and PostgreSQL, a signed checkpoint, then one event altered, one deleted in the
middle and the newest three of a stream deleted: ``personaflow audit verify`` names each
break and exits 1; untouched, it exits 0. The recorder flags a broken chain as it records."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from audit.chain import checkpoint, signed_bytes, verify
from audit.recorder import AuditRecorder, LogRecord
from audit.schema import checkpoints, events
from personaflow.cli import main
from personaflow.keys import SigningKey
from streams import records, wire
from streams.inbox import BindingChanged, RunReportReceived, TriggerReceived
from tables import persona as transition
from tables.store import MemoryStore

T = "persona.outbox"
T0 = 1_777_032_000_000
KEY = SigningKey.from_seed(bytes(range(32)))


def _binding(name: str, **fields: object) -> object:
    return wire.from_model(records.PersonaBinding.model_validate({"name": name, "entry_workflow": "wf", **fields}))


def published(count: int) -> list[bytes]:
    """``count`` outbox events from the pure transition: three inline personas and external
    runs (persona and run streams), in publication order."""
    store, offsets, out = MemoryStore(), itertools.count(), []
    dispatch = wire.decoder(wire.RunDispatch)

    def feed(record: object) -> list:
        txn = store.transaction()
        outputs = transition.apply(txn, record, next(offsets))
        store.apply(txn)
        out.extend(o.value_bytes() for o in outputs if o.role == "outbox")
        return outputs

    for name in ("p1", "p2", "p3"):
        feed(BindingChanged(at_ms=T0, persona=name, binding=_binding(name)))
    feed(BindingChanged(at_ms=T0, persona="x", binding=_binding("x", execution="external")))
    for n in itertools.count():
        persona = ("p1", "p2", "p3", "x")[n % 4]
        request = wire.TriggerRequest(
            request_id=f"r{n}", persona=persona, provider="github", kind="pull_request", metadata={"number": str(n)}
        )
        outputs = feed(TriggerReceived(at_ms=T0 + n, request=request))
        for sent in (o for o in outputs if o.role == "dispatch"):
            d = dispatch.decode(sent.value_bytes())
            for kind in ("started", "completed"):
                report = wire.RunEvent(event_id=f"e{n}{kind}", run_id=d.run_id, lease_id=d.lease_id, kind=kind)
                feed(RunReportReceived(at_ms=T0 + n, persona="x", event=report))
        if len(out) >= count:
            return out[:count]
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def ten_thousand() -> list[bytes]:
    return published(10_000)


def record_all(recorder: AuditRecorder, values: list[bytes]) -> None:
    for start in range(0, len(values), 2000):
        chunk = values[start : start + 2000]
        result = recorder.record("g", [LogRecord(T, 0, start + n, v) for n, v in enumerate(chunk)])
        assert result.problems == [] and result.stored == len(chunk)


def audit_verify(url: str, keys: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "--db", url, "verify", "--keys", str(keys)])
    return result.exit_code, result.output


def tamper_and_verify(url: str, values: list[bytes], tmp_path: Path) -> str:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [KEY.public_json()]}))
    recorder = AuditRecorder.open(url)
    try:
        record_all(recorder, values)
        assert checkpoint(recorder.engine, KEY) == 1
        code, output = audit_verify(url, keys)
        assert code == 0, output
        assert "10000 event(s)" in output and "1 checkpoint(s): intact" in output
        with recorder.engine.begin() as connection:
            ends = dict(
                connection.execute(
                    sa.select(events.c.stream, sa.func.max(events.c.seq)).group_by(events.c.stream)
                ).all()
            )
            # 1. one event altered (its payload), 2. one deleted in the middle, 3. the newest three deleted
            connection.execute(
                events.update().where(events.c.event_id == "persona:p1/100").values(payload={"forged": True})
            )
            connection.execute(events.delete().where(events.c.event_id == "persona:p2/200"))
            connection.execute(
                events.delete().where(events.c.stream == "persona:p3", events.c.seq > ends["persona:p3"] - 3)
            )
        code, output = audit_verify(url, keys)
    finally:
        recorder.close()
    assert code == 1, output
    last = ends["persona:p3"]
    assert "3 broken stream(s)" in output
    assert "persona:p1 seq 100: altered: the digest does not recompute" in output
    assert "persona:p2 seq 200: missing: seq 200 not stored (the next stored is 201)" in output
    assert (
        f"persona:p3 seq {last - 2}: missing: seq {last - 2}..{last} not stored; checkpoint 1 names seq {last}"
        in output
    )
    assert f"the stream ends at seq {last - 3}" in output
    return output


def test_sqlite_store_names_each_break(ten_thousand: list[bytes], tmp_path: Path) -> None:
    output = tamper_and_verify(f"sqlite:///{tmp_path / 'audit.db'}", ten_thousand, tmp_path)
    print(output)


def test_postgresql_store_names_each_break(ten_thousand: list[bytes], postgres_url: str, tmp_path: Path) -> None:
    output = tamper_and_verify(postgres_url, ten_thousand, tmp_path)
    print(output)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[AuditRecorder]:
    store = AuditRecorder.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield store
    store.close()


def test_the_recorder_flags_a_changed_event_and_a_broken_link_as_chain_problems(recorder: AuditRecorder) -> None:
    values = published(40)
    first = [orjson.loads(v) for v in values if orjson.loads(v)["stream"] == "persona:p1"][:3]
    changed = dict(first[1], payload={"forged": True})
    relinked = dict(first[2], prev_digest="f" * 64)
    batch = [orjson.dumps(first[0]), orjson.dumps(changed), orjson.dumps(relinked)]
    result = recorder.record("g", [LogRecord(T, 0, n, v) for n, v in enumerate(batch)])
    assert result.stored == 3  # stored as published; the problems say what is wrong
    assert [p["kind"] for p in recorder.problems()] == ["chain", "chain"]
    assert "persona:p1/2: digest" in result.problems[0] and "does not recompute" in result.problems[0]
    assert "persona:p1/3: digest" in result.problems[1]  # a changed prev_digest changes the digest too


def test_a_forged_checkpoint_signature_and_an_unknown_key_are_breaks(recorder: AuditRecorder, tmp_path: Path) -> None:
    record_all(recorder, published(100))
    assert checkpoint(recorder.engine, KEY) == 1
    keys = tmp_path / "keys.json"
    other = SigningKey.from_seed(bytes(32))
    keys.write_text(json.dumps({"keys": [other.public_json()]}))
    url = recorder.engine.url.render_as_string(hide_password=False)
    code, output = audit_verify(url, keys)
    assert code == 1 and "which is not known here" in output
    keys.write_text(json.dumps({"keys": [KEY.public_json()]}))
    with recorder.engine.begin() as connection:
        connection.execute(checkpoints.update().values(at_ms=1))
    code, output = audit_verify(url, keys)
    assert code == 1 and "audit.checkpoint seq 1: checkpoint 1: the signature does not match its content" in output


def test_the_consumer_checkpoints_only_when_events_were_stored(recorder: AuditRecorder) -> None:
    import asyncio

    from audit.consumer import AuditConsumer
    from engine.kafka import BrokerAddress
    from streams.settings import Settings

    auditor = AuditConsumer(Settings(), BrokerAddress("localhost:1", False), recorder, signer=KEY)
    asyncio.run(auditor.checkpoint())  # nothing stored yet: no checkpoint
    record_all(recorder, published(20))
    auditor.unchecked = True
    asyncio.run(auditor.checkpoint())
    asyncio.run(auditor.checkpoint())  # nothing new since
    with recorder.engine.connect() as connection:
        rows = connection.execute(sa.select(checkpoints.c.number, checkpoints.c.key_id, checkpoints.c.heads)).all()
    assert [(number, kid) for number, kid, _ in rows] == [(1, KEY.kid)]
    assert set(rows[0].heads) >= {"persona:p1", "persona:p2", "persona:p3"}


def copies(engine: sa.Engine) -> list:
    """The checkpoints as the consumer publishes them on persona.audit."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(checkpoints).order_by(checkpoints.c.number)).all()
    return [wire.AuditNotice(kind="audit.checkpoint", group="g", **dict(row._mapping)) for row in rows]


def test_the_newest_checkpoint_deleted_with_the_events_after_it_shows_only_against_its_copy(
    recorder: AuditRecorder,
) -> None:
    values = published(300)
    record_all(recorder, values[:200])
    assert checkpoint(recorder.engine, KEY, now_ms=T0) == 1
    record_all(recorder, values[200:])
    assert checkpoint(recorder.engine, KEY, now_ms=T0 + 60_000) == 2
    witnessed = copies(recorder.engine)
    known = {KEY.kid: KEY.public}
    assert verify(recorder.engine, known, witnessed).ok
    with recorder.engine.begin() as connection:  # what a careful editor of the store does
        connection.execute(checkpoints.delete().where(checkpoints.c.number == 2))
        connection.execute(events.delete().where(events.c.stored_at_ms >= 0, events.c.event_id.in_(
            [orjson.loads(v)["event_id"] for v in values[200:]]
        )))  # fmt: skip
    alone = verify(recorder.engine, known)
    assert alone.ok  # the store alone cannot tell
    found = verify(recorder.engine, known, witnessed)
    assert not found.ok and found.witnessed == 2
    text = [str(b) for b in found.breaks]
    assert "persona.audit seq 2: checkpoint 2 is on persona.audit but not in the store" in text
    # the copy vouches for the heads it names: the streams that lost their newest events show too
    assert any(t.startswith("persona:") and "checkpoint 2 names seq" in t for t in text), text


def test_a_checkpoint_copy_that_differs_or_does_not_verify_is_a_break(recorder: AuditRecorder) -> None:
    record_all(recorder, published(50))
    assert checkpoint(recorder.engine, KEY, now_ms=T0) == 1
    (copy,) = copies(recorder.engine)
    known = {KEY.kid: KEY.public}
    forged = msgspec.structs.replace(copy, heads={"persona:p1": [1, "0" * 64]})
    assert "copy of checkpoint 1: the signature does not match" in str(verify(recorder.engine, known, [forged]).breaks)
    other = SigningKey.from_seed(bytes(32))
    resigned = msgspec.structs.replace(
        copy,
        key_id=other.kid,
        signature=base64.urlsafe_b64encode(other.sign(signed_bytes(copy.number, copy.at_ms, copy.previous, copy.heads)))
        .rstrip(b"=")
        .decode(),
    )
    found = verify(recorder.engine, {**known, other.kid: other.public}, [resigned, resigned])
    assert [str(b) for b in found.breaks] == [
        "persona.audit seq 1: checkpoint 1 in the store differs from its copy on persona.audit"
    ] and found.witnessed == 1


def test_a_forged_copy_does_not_hide_the_real_copy_of_a_checkpoint_the_store_lost(recorder: AuditRecorder) -> None:
    values = published(300)
    record_all(recorder, values[:200])
    assert checkpoint(recorder.engine, KEY, now_ms=T0) == 1
    record_all(recorder, values[200:])
    assert checkpoint(recorder.engine, KEY, now_ms=T0 + 60_000) == 2
    real = copies(recorder.engine)[1]
    forged = msgspec.structs.replace(real, signature="A" * 86)  # published first, does not verify
    with recorder.engine.begin() as connection:
        connection.execute(checkpoints.delete().where(checkpoints.c.number == 2))
        gone = [orjson.loads(v)["event_id"] for v in values[200:]]
        connection.execute(events.delete().where(events.c.event_id.in_(gone)))
    found = verify(recorder.engine, {KEY.kid: KEY.public}, [forged, real])
    text = [str(b) for b in found.breaks]
    assert found.witnessed == 1 and "persona.audit seq 2: copy of checkpoint 2: the signature" in " ".join(text)
    assert any(t.startswith("persona:") and "checkpoint 2 names seq" in t for t in text), text


def test_notices_the_broker_refuses_are_kept_for_the_next_try_and_the_consumer_goes_on(recorder: AuditRecorder) -> None:
    import asyncio

    from aiokafka.errors import KafkaTimeoutError

    from audit.consumer import AuditConsumer
    from engine.kafka import BrokerAddress
    from streams.settings import Settings

    class Refusing:
        """A producer whose broker is away for the first send (the error path only)."""

        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.calls = 0

        async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future:
            self.calls += 1
            if self.calls == 1:
                raise KafkaTimeoutError()
            self.sent.append(key)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    auditor = AuditConsumer(Settings(), BrokerAddress("localhost:1", False), recorder, group="g")
    auditor.notices = [auditor._break_notice("run:r/3", "d"), auditor._break_notice("persona:p/9", "d")]
    producer = Refusing()
    asyncio.run(auditor.publish(producer))
    assert len(auditor.notices) == 2 and producer.sent == []
    asyncio.run(auditor.publish(producer))
    assert auditor.notices == [] and producer.sent == [b"run:r", b"persona:p"]
