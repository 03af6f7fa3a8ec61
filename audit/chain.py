"""The audit store's tamper evidence: signed checkpoints of stream heads, and the whole-store check.

Every outbox event carries ``prev_digest`` and ``digest`` (``streams.chain``), so a changed
event no longer recomputes and a removed one leaves a gap or a broken link. Removing the
newest events of a stream leaves neither; a checkpoint catches that: the consumer
periodically writes a row of ``audit_checkpoints`` with the heads (``[seq, digest]``) of the
streams that moved since the previous checkpoint, signed with the worker's Ed25519 key.
:func:`verify` then checks that every checkpointed head is still stored with that digest.

Checkpoints are chained too (each names the previous one's signature), so removing one
in the middle shows. Removing the newest checkpoint together with the events after the
one before it does not show from the store alone: the consumer therefore also publishes
every checkpoint on ``persona.audit`` (``audit.checkpoint`` notices), and :func:`verify`
given those copies (``witnessed``) names a checkpoint the store lost, and vouches for the
heads it names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams import capability, chain
from streams.capability import Signer

from .schema import checkpoints, events

#: Where the consumer publishes checkpoint copies (the topic's base name; the stream of
#: breaks found comparing them).
WITNESS = "persona.audit"
#: Rows read at a time by :func:`verify`.
READ_CHUNK = 5000


def signed_bytes(number: int, at_ms: int, previous: str, heads: dict[str, list[Any]]) -> bytes:
    """What a checkpoint's signature covers: canonical JSON (as event bodies are written)."""
    return chain.encode_canonical({"number": number, "at_ms": at_ms, "previous": previous, "heads": heads})


def checkpoint(engine: sa.Engine, signer: Signer, now_ms: int | None = None) -> int | None:
    """Write the next checkpoint: the heads of streams with events stored since the previous
    one (all streams for the first). Returns its number, or None if no stream moved."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    with engine.begin() as connection:
        last = connection.execute(
            sa.select(checkpoints.c.number, checkpoints.c.at_ms, checkpoints.c.signature)
            .order_by(checkpoints.c.number.desc())
            .limit(1)
        ).first()
        moved = sa.select(events.c.stream).distinct()
        if last is not None:
            moved = moved.where(events.c.stored_at_ms >= last.at_ms)
        tops = (
            sa.select(events.c.stream, sa.func.max(events.c.seq).label("seq"))
            .where(events.c.stream.in_(moved))
            .group_by(events.c.stream)
            .subquery()
        )
        rows = connection.execute(
            sa.select(events.c.stream, events.c.seq, events.c.chain_digest).join(
                tops, sa.and_(events.c.stream == tops.c.stream, events.c.seq == tops.c.seq)
            )
        )
        heads = {stream: [seq, digest] for stream, seq, digest in rows}
        if not heads:
            return None
        number = 1 if last is None else last.number + 1
        previous = "" if last is None else last.signature
        signature = capability.b64encode(signer.sign(signed_bytes(number, now, previous, heads)))
        connection.execute(
            checkpoints.insert().values(
                number=number, at_ms=now, heads=heads, previous=previous, key_id=signer.kid, signature=signature
            )
        )
        return number


def stored_checkpoint(engine: sa.Engine, number: int | None = None) -> dict[str, Any] | None:
    """Checkpoint ``number`` as stored (None: the newest), or None if there is none."""
    query = sa.select(checkpoints)
    query = query.where(checkpoints.c.number == number) if number is not None else query
    with engine.connect() as connection:
        row = connection.execute(query.order_by(checkpoints.c.number.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class Break:
    """The first broken link of a stream (or of the checkpoints: stream ``audit.checkpoint``)."""

    stream: str
    seq: int
    what: str

    def __str__(self) -> str:
        return f"{self.stream} seq {self.seq}: {self.what}"


@dataclass
class Verified:
    events: int = 0
    streams: int = 0
    checkpoints: int = 0
    #: Checkpoint copies from ``persona.audit`` compared with the store.
    witnessed: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12] + "…"


def _rows(engine: sa.Engine) -> Iterator[Any]:
    """Every event, by stream and seq, read in chunks (keyset pagination: no long cursor)."""
    columns = [
        events.c.stream,
        events.c.seq,
        events.c.event_id,
        events.c.kind,
        events.c.persona,
        events.c.run_id,
        events.c.occurred_at_ms,
        events.c.payload,
        events.c.cause,
        events.c.trace,
        events.c.raw,
        events.c.prev_digest,
        events.c.chain_digest,
    ]
    after: tuple[str, int] | None = None
    with engine.connect() as connection:
        while True:
            statement = sa.select(*columns).order_by(events.c.stream, events.c.seq).limit(READ_CHUNK)
            if after is not None:
                statement = statement.where(sa.tuple_(events.c.stream, events.c.seq) > sa.tuple_(*after))
            chunk = connection.execute(statement).all()
            yield from chunk
            if len(chunk) < READ_CHUNK:
                return
            after = (chunk[-1].stream, chunk[-1].seq)


def _event(row: Any) -> dict[str, Any]:
    """The event as published (without its digest fields), from its columns."""
    payload, cause = row.payload, row.cause
    if row.raw is not None:  # the columns hold a copy without NUL; the digest is the exact event's
        exact = orjson.loads(row.raw)
        payload, cause = exact["payload"], exact["cause"]
    return {
        "event_id": row.event_id,
        "stream": row.stream,
        "seq": row.seq,
        "kind": row.kind,
        "persona": row.persona,
        "run_id": row.run_id,
        "occurred_at_ms": row.occurred_at_ms,
        "payload": payload,
        "cause": cause,
        "trace": row.trace,
    }


def _signature_problem(public_keys: dict[str, bytes], row: Any) -> str | None:
    """Why checkpoint ``row`` (stored, or a copy) is not signed by a known key, or None."""
    if row.key_id not in public_keys:
        return f"checkpoint {row.number} is signed by key {row.key_id!r}, which is not known here"
    try:
        Ed25519PublicKey.from_public_bytes(public_keys[row.key_id]).verify(
            capability.b64decode(row.signature), signed_bytes(row.number, row.at_ms, row.previous, row.heads)
        )
    except (InvalidSignature, ValueError, TypeError):
        return f"checkpoint {row.number}: the signature does not match its content"
    return None


def _check_witnessed(
    witnessed: Iterable[Any],
    stored: dict[int, str],
    public_keys: dict[str, bytes],
    heads: dict[str, list[tuple[int, str | None, int]]],
    result: Verified,
) -> None:
    """Compare the copies of checkpoints published on ``persona.audit`` with the store: a
    validly signed copy the store lacks (or holds otherwise) is a break, and vouches for its
    heads all the same; a copy whose signature fails is a break of the topic's copies."""
    seen: set[tuple[int, str]] = set()
    problems: list[Break] = []
    for copy in sorted(witnessed, key=lambda c: c.number):
        if (copy.number, copy.signature) in seen:  # republished after a restart
            continue
        # A copy that does not verify is a break of the copies, and hides no good one: it
        # is checked before it could count as the copy of its number.
        bad = _signature_problem(public_keys, copy)
        if bad is not None:
            problems.append(Break(WITNESS, copy.number, f"copy of {bad}"))
            continue
        seen.add((copy.number, copy.signature))
        if copy.number not in stored:
            problems.append(
                Break(WITNESS, copy.number, f"checkpoint {copy.number} is on {WITNESS} but not in the store")
            )
        elif stored[copy.number] != copy.signature:
            problems.append(
                Break(WITNESS, copy.number, f"checkpoint {copy.number} in the store differs from its copy on {WITNESS}")
            )
        else:
            continue  # the stored checkpoint vouches for the same heads
        for stream, (seq, digest) in copy.heads.items():
            heads.setdefault(stream, []).append((seq, digest, copy.number))
    result.witnessed = len(seen)
    result.breaks.extend(problems[:1])  # the first, as for any stream


def _check_checkpoints(
    engine: sa.Engine, public_keys: dict[str, bytes], result: Verified, witnessed: Iterable[Any] = ()
) -> dict[str, list[tuple[int, str | None, int]]]:
    """Check the checkpoints' own chain and signatures, and against their copies
    (``witnessed``); return the heads they vouch for (stream -> [(seq, digest, number)])."""
    heads: dict[str, list[tuple[int, str | None, int]]] = {}
    stored: dict[int, str] = {}
    previous = ""
    expected = 1
    broken = False
    with engine.connect() as connection:
        for row in connection.execute(sa.select(checkpoints).order_by(checkpoints.c.number)):
            result.checkpoints += 1
            problem = None
            if row.number != expected:
                problem = f"checkpoint {expected} missing (the next stored is {row.number})"
            elif row.previous != previous:
                problem = f"checkpoint {row.number} does not name checkpoint {expected - 1}'s signature"
            else:
                problem = _signature_problem(public_keys, row)
            stored[row.number] = row.signature
            if problem is not None and not broken:
                result.breaks.append(Break("audit.checkpoint", row.number, problem))
                broken = True
            expected, previous = row.number + 1, row.signature
            if problem is None or "missing" in problem:  # a good signature: its heads count
                for stream, (seq, digest) in row.heads.items():
                    heads.setdefault(stream, []).append((seq, digest, row.number))
    _check_witnessed(witnessed, stored, public_keys, heads, result)
    return heads


def verify(engine: sa.Engine, public_keys: dict[str, bytes], witnessed: Iterable[Any] = ()) -> Verified:
    """Re-check the whole store: every digest recomputes, every stream's seq is gap-free from
    1 and each event links to its predecessor, every checkpoint is signed by a known key and
    every head it names is still stored with its digest; ``witnessed``: the checkpoints'
    copies from ``persona.audit`` (objects with a stored checkpoint's fields), each of which
    must be in the store as it is there. One :class:`Break` per broken stream: its first."""
    result = Verified()
    vouched = _check_checkpoints(engine, public_keys, result, witnessed)
    first: dict[str, Break] = {}
    stream: str | None = None
    last_seq, last_digest = 0, chain.GENESIS

    def broke(at: str, seq: int, what: str) -> None:
        if at not in first:
            first[at] = Break(at, seq, what)

    ends: dict[str, int] = {}
    for row in _rows(engine):
        result.events += 1
        ends[row.stream] = row.seq
        if row.stream != stream:
            result.streams += 1
            stream, last_seq, last_digest = row.stream, 0, chain.GENESIS
        if row.stream in first:
            last_seq = row.seq
            continue
        if row.seq != last_seq + 1:
            missing = str(last_seq + 1) if row.seq == last_seq + 2 else f"{last_seq + 1}..{row.seq - 1}"
            broke(row.stream, last_seq + 1, f"missing: seq {missing} not stored (the next stored is {row.seq})")
        elif row.chain_digest is None:
            if last_digest != chain.GENESIS:  # only events from before the chain may lack digests
                broke(row.stream, row.seq, "no digest, after events that have one")
        else:
            computed = chain.link(row.prev_digest or chain.GENESIS, chain.canonical(_event(row)))
            if computed != row.chain_digest:
                broke(
                    row.stream,
                    row.seq,
                    f"altered: the digest does not recompute (stored {_short(row.chain_digest)},"
                    f" computed {_short(computed)})",
                )
            elif row.prev_digest != last_digest:
                broke(
                    row.stream,
                    row.seq,
                    f"broken link: prev_digest {_short(row.prev_digest)} is not seq {row.seq - 1}'s digest"
                    f" {_short(last_digest)}",
                )
            last_digest = row.chain_digest
        last_seq = row.seq
        for seq, digest, number in vouched.get(row.stream, ()):
            if seq == row.seq and digest != row.chain_digest:
                broke(
                    row.stream,
                    seq,
                    f"altered: checkpoint {number} holds digest {_short(digest)}, stored {_short(row.chain_digest)}",
                )
        if row.stream in vouched:
            vouched[row.stream] = [head for head in vouched[row.stream] if head[0] != row.seq]
    for at, heads in vouched.items():
        for seq, digest, number in sorted(heads):
            named = f"checkpoint {number} names seq {seq} (digest {_short(digest)})"
            end = ends.get(at, 0)
            if end < seq:  # the newest events are gone: the first of them is the break
                gone = str(seq) if end + 1 == seq else f"{end + 1}..{seq}"
                broke(at, end + 1, f"missing: seq {gone} not stored; {named}, the stream ends at seq {end}")
            else:
                broke(at, seq, f"missing: {named}, not stored")
    result.breaks.extend(sorted(first.values(), key=lambda b: (b.stream, b.seq)))
    return result
