"""What the producer/ops commands do, as async functions over a :class:`Client`."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiokafka import TopicPartition
from pydantic import ValidationError

from streams.codec import describe_validation_error
from streams.records import ControlCommand, PersonaBinding, RunControl, TriggerRequest

from .client import Client, Seen, read_all


class OpsError(RuntimeError):
    """A command cannot do what was asked; the message says why."""


# ----------------------------------------------------------------------- bindings


def load_bindings(path: Path) -> list[PersonaBinding]:
    """One or more bindings from a YAML or JSON file (a mapping, a list, or YAML documents)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise OpsError(f"{path}: {exc.strerror}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise OpsError(f"{path}: not valid YAML/JSON: {exc}") from None
    items: list[Any] = []
    for document in documents:
        items.extend(document if isinstance(document, list) else [document])
    if not items:
        raise OpsError(f"{path}: no bindings found")
    bindings, problems = [], []
    for index, item in enumerate(items, 1):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"binding #{index}" + (f" ({name!r})" if name else "")
        try:
            bindings.append(PersonaBinding.model_validate_json(json.dumps(item)))
        except ValidationError as exc:
            problems.append(f"{path}: {describe_validation_error(exc, label)}")
    names = [b.name for b in bindings]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"{path}: persona(s) bound more than once: {', '.join(duplicates)}")
    if problems:
        raise OpsError("\n".join(problems))
    return bindings


def status_matches(value: Any, binding: PersonaBinding) -> bool:
    return (
        isinstance(value, dict)
        and value.get("entry_workflow") == binding.entry_workflow
        and value.get("template_ref") == binding.template_ref
        and all(value["budget"].get(k) == v for k, v in binding.budget.model_dump().items())
    )


async def bind(client: Client, bindings: list[PersonaBinding], timeout_s: float | None = 30.0) -> list[Seen]:
    """Publish bindings; with a timeout, wait until each persona's status reflects its binding."""
    wanted = {b.name: b for b in bindings}

    async def send() -> None:
        for binding in bindings:
            await client.send("bindings", binding.name, binding)

    def applied(seen: list[Seen]) -> bool:
        return all(any(r.key == name and status_matches(r.value, b) for r in seen) for name, b in wanted.items())

    seen = await _publish_and_wait(
        client, send, "status", applied, timeout_s, "bindings published, but no worker applied them"
    )
    return [r for r in seen if r.key in wanted]


async def _publish_and_wait(
    client: Client,
    send: Callable[[], Awaitable[Any]],
    answers: str,
    answered: Callable[[list[Seen]], bool],
    timeout_s: float | None,
    failure: str,
) -> list[Seen]:
    """Run ``send``, then (with a timeout) wait until ``answered`` holds of the records
    on the ``answers`` topic. The topic is followed from before ``send``, so an answer
    cannot slip in between; without a timeout nothing is awaited and nothing returned."""
    if not timeout_s:
        await send()
        return []
    async with client.following(answers) as tail:
        await send()
        try:
            return await tail.until(answered, timeout_s, failure)
        except TimeoutError:
            raise OpsError(f"{failure} within {timeout_s}s (is a worker running?)") from None


async def unbind(client: Client, name: str) -> None:
    await client.send("bindings", name, None)


# ----------------------------------------------------------------------- requests


def parse_metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OpsError(f"metadata must be key=value, got {pair!r}")
        metadata[key] = value
    return metadata


async def trigger(client: Client, request: TriggerRequest, timeout_s: float | None = 30.0) -> dict[str, Any] | None:
    """Publish a trigger and return its first receipt (None without waiting)."""

    def answers(record: Seen) -> bool:
        return record.key == request.persona and (record.value or {}).get("request_id") == request.request_id

    seen = await _publish_and_wait(
        client,
        lambda: client.send("triggers", request.persona, request),
        "receipts",
        lambda records: any(answers(r) for r in records),
        timeout_s,
        f"no receipt for request {request.request_id}",
    )
    return next((r.value for r in seen if answers(r)), None)


def build_trigger(
    persona: str,
    provider: str,
    kind: str,
    metadata: dict[str, str],
    *,
    request_id: str | None,
    cost: dict[str, Any] | None,
    priority: int,
    raw: Any,
) -> TriggerRequest:
    body = {
        "request_id": request_id or f"cli-{uuid.uuid4()}",
        "persona": persona,
        "provider": provider,
        "kind": kind,
        "metadata": metadata,
        "priority": priority,
        "raw": raw,
        "cost": cost,
    }
    try:
        return TriggerRequest.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        raise OpsError(describe_validation_error(exc, "trigger")) from None


def command_answer(persona: str, command_id: str, receipts: list[Seen], outbox: list[Seen]) -> dict[str, Any] | None:
    """How a command was answered, among the records seen: ``{"receipt": ...}`` (rejected
    commands, ``record_spend``) or ``{"event": ...}`` (the outbox event it caused)."""
    for record in receipts:
        if record.key == persona and (record.value or {}).get("request_id") == command_id:
            return {"receipt": record.value}
    for record in outbox:
        if ((record.value or {}).get("cause") or {}).get("command_id") == command_id:
            return {"event": record.value}
    return None


async def control(client: Client, command: ControlCommand, timeout_s: float | None = 30.0) -> dict[str, Any] | None:
    """Publish a command; return the outbox event it caused or the receipt it got."""
    if not timeout_s:
        await client.send("control", command.persona, command)
        return None
    async with client.following("outbox") as outbox, client.following("receipts") as receipts:
        await client.send("control", command.persona, command)

        def answered() -> dict[str, Any] | None:
            return command_answer(command.persona, command.command_id, receipts.seen, outbox.seen)

        deadline = asyncio.get_running_loop().time() + timeout_s
        while (answer := answered()) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise OpsError(
                    f"command {command.command_id} was not applied within {timeout_s}s (is a worker running?)"
                )
            await outbox.poll(0.1)
            await receipts.poll(0.05)
    return answer


async def run_control(client: Client, command: RunControl, timeout_s: float | None = 30.0) -> dict[str, Any] | None:
    """Publish run control; return its receipt (``completed`` with the event it caused, or
    ``rejected`` with the reason). A command about a run no persona registered is
    dead-lettered (reason ``unknown_run``): that becomes an OpsError."""
    if not timeout_s:
        await client.send("run_control", command.run_id, command)
        return None
    async with client.following("receipts") as receipts, client.following("dlq") as letters:
        await client.send("run_control", command.run_id, command)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for record in receipts.seen:
                if (record.value or {}).get("request_id") == command.command_id:
                    return record.value
            for record in letters.seen:
                if record.key == command.run_id and command.command_id in json.dumps(record.value or {}) + _decoded(
                    record.value
                ):
                    raise OpsError((record.value or {}).get("error") or f"run control for {command.run_id} rejected")
            if asyncio.get_running_loop().time() > deadline:
                raise OpsError(
                    f"run control {command.command_id} was not answered within {timeout_s}s (is a worker running?)"
                )
            await receipts.poll(0.1)
            await letters.poll(0.05)


def _decoded(letter: Any) -> str:
    import base64

    try:
        return base64.b64decode((letter or {}).get("value_b64") or "").decode("utf-8", "replace")
    except ValueError:
        return ""


# ------------------------------------------------------------------------ reading


async def read_topic(
    client: Client, role: str, *, follow: bool, from_beginning: bool, key: str | None = None
) -> AsyncIterator[Seen]:
    """The records of a topic, each partition in order, only those keyed ``key`` if given.

    Without ``follow``: from the earliest offset up to the end offsets read at the start,
    then it returns (records written meanwhile are left for the next reader). With
    ``follow``: from the end (``from_beginning``: the earliest offset) for as long as the
    caller reads.
    """
    async with client.following(role, from_beginning=from_beginning or not follow, keep=False) as tail:
        ends = None if follow else await tail.end_offsets()
        while ends is None or not await tail.reached(ends):
            for record in await tail.poll(1.0 if follow else 0.2):
                # A fetch may bring records past the ends read at the start: not this read's.
                if ends is not None and record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                    continue
                if key is None or record.key == key:
                    yield record


#: The workers' token, read from the environment by every command that asks a worker.
TOKEN_ENV = "PERSONAFLOW_WEB_TOKEN"


def web_token(token: str | None = None) -> str | None:
    """``token``, else ``$PERSONAFLOW_WEB_TOKEN`` (unset or blank: none)."""
    return token or os.environ.get(TOKEN_ENV, "").strip() or None


def worker_view(web_url: str, path: str, token: str | None = None) -> Any:
    """A worker's HTTP view; its error message becomes an OpsError."""
    url = web_url.rstrip("/") + path
    try:
        return http_get(url, token=token)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error")
        except (ValueError, AttributeError):
            message = None
        raise OpsError(_refused(exc, web_url, token) or message or f"{url}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise OpsError(f"no worker answered at {web_url} ({exc}); is a worker running?") from None


def _refused(exc: urllib.error.HTTPError, web_url: str, token: str | None) -> str | None:
    """What to tell about a 401 (the worker wants its token, or another one)."""
    if exc.code != 401:
        return None
    if web_token(token) is None:
        return f"the worker at {web_url} asks for its token: set {TOKEN_ENV}"
    return f"the worker at {web_url} refused the token in {TOKEN_ENV}"


def http_get(url: str, timeout_s: float = 5.0, token: str | None = None) -> Any:
    """GET a worker's JSON view, with ``Authorization: Bearer`` when a token is given or set."""
    token = web_token(token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
        return json.loads(response.read())


async def status(client: Client, name: str | None, web_url: str, token: str | None = None) -> Any:
    """Status from a worker's web port; from the compacted status topic if none answers."""
    path = f"/personas/{name}" if name else "/personas"
    try:
        return http_get(web_url.rstrip("/") + path, token=token)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and name:
            raise OpsError(f"unknown persona {name!r}") from None
        if (refused := _refused(exc, web_url, token)) is not None:  # say so rather than read around it
            raise OpsError(refused) from None
    except (OSError, ValueError):
        pass
    latest: dict[str, Any] = {}
    for record in await read_all(client, "status"):
        if record.key is not None:
            latest[record.key] = record.value
    current = {key: value for key, value in latest.items() if value is not None}
    if name is None:
        return dict(sorted(current.items()))
    if name not in current:
        raise OpsError(f"unknown persona {name!r}")
    return current[name]


async def verify(client: Client) -> list[Any]:
    """Replay both inboxes and compare with the published receipts and outbox."""
    from tables.replay import verify as replay_verify

    def positions(records: list[Seen]) -> list[tuple[int, int, bytes | None]]:
        return [(r.partition, r.offset, r.raw) for r in records]

    persona_inbox = positions(await read_all(client, "persona_inbox"))
    run_inbox = positions(await read_all(client, "run_inbox"))
    receipts = [r.value for r in await read_all(client, "receipts")]
    outbox = [r.value for r in await read_all(client, "outbox")]
    return replay_verify(persona_inbox, run_inbox, receipts, outbox)
