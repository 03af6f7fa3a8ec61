"""Drive one persona through the public topics only, as a producer and executor would."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from personaflow.ops import command_answer

from .sync import SyncClient, SyncTail

Predicate = Callable[[dict[str, Any]], bool]

#: External execution where the test itself acts as the executor: the session's reference
#: executor, if one runs, gets the dispatches too but stays silent.
SELF_REPORTED: dict[str, Any] = {"execution": "external", "executor_options": {"silent": "true"}}


class PersonaProbe:
    """Publishes to bindings/triggers/control/run.events; reads receipts/outbox/status/dispatch."""

    def __init__(self, kafka: SyncClient, name: str, timeout_s: float = 60.0) -> None:
        self.kafka = kafka
        self.name = name
        self.timeout_s = timeout_s
        self.receipts: SyncTail = kafka.tail("receipts")
        self.outbox: SyncTail = kafka.tail("outbox")
        self.statuses: SyncTail = kafka.tail("status")
        self.dispatches: SyncTail = kafka.tail("dispatch")
        self.ids = itertools.count(1)

    def close(self) -> None:
        for tail in (self.receipts, self.outbox, self.statuses, self.dispatches):
            tail.stop()

    # ------------------------------------------------------------------ inputs

    def bind(self, binding: dict[str, Any], at_ms: int | None = None) -> dict[str, Any]:
        binding = {"entry_workflow": "workflows/run.harn#main", **binding, "name": self.name}
        self.kafka.send("bindings", self.name, binding, timestamp_ms=at_ms)
        return self.status(
            lambda s: (
                s["entry_workflow"] == binding["entry_workflow"] and s["template_ref"] == binding.get("template_ref")
            )
        )

    def trigger(
        self,
        provider: str,
        kind: str,
        metadata: dict[str, str] | None = None,
        *,
        cost: dict | None = None,
        at_ms: int | None = None,
        priority: int = 0,
        request_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any] | str:
        request_id = request_id or f"{self.name}-req-{next(self.ids)}"
        request = {
            "request_id": request_id,
            "persona": self.name,
            "provider": provider,
            "kind": kind,
            "metadata": metadata or {},
            "cost": cost,
            "priority": priority,
            "received_at_ms": at_ms,
        }
        self.kafka.send("triggers", self.name, request)
        return self.receipts_for(request_id)[0] if wait else request_id

    def control(
        self, action: str, at_ms: int | None = None, *, cost: dict | None = None, command_id: str | None = None
    ) -> dict[str, Any]:
        return self.control_for(self.name, action, at_ms, cost=cost, command_id=command_id)

    def control_for(
        self,
        persona: str,
        action: str,
        at_ms: int | None = None,
        *,
        cost: dict | None = None,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a command (to any persona) and wait until it was applied or answered."""
        command_id = command_id or f"{persona}-cmd-{next(self.ids)}"
        self.kafka.send(
            "control",
            persona,
            {
                "command_id": command_id,
                "persona": persona,
                "action": action,
                "actor": "test",
                "cost": cost,
                "at_ms": at_ms,
            },
        )

        deadline = time.monotonic() + self.timeout_s
        while (answer := command_answer(persona, command_id, self.receipts.seen, self.outbox.seen)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"command {command_id} ({action}) not applied within {self.timeout_s}s")
            self.kafka.run(self.outbox.tail.poll(0.05))
            self.kafka.run(self.receipts.tail.poll(0.05))
        (value,) = answer.values()  # the receipt or the outbox event
        return value

    def report(self, run_id: str, lease_id: str, kind: str, **fields: Any) -> None:
        """Report on a run as its executor would."""
        event = {
            "event_id": f"{run_id}-{kind}-{next(self.ids)}",
            "run_id": run_id,
            "lease_id": lease_id,
            "kind": kind,
            **fields,
        }
        self.kafka.send("run_events", run_id, event)

    # ----------------------------------------------------------------- outputs

    def receipts_for(self, request_id: str, count: int = 1) -> list[dict[str, Any]]:
        """The first ``count`` receipts about a request (waits for them)."""

        def mine(seen: list) -> list[dict[str, Any]]:
            return [r.value for r in seen if r.key == self.name and (r.value or {}).get("request_id") == request_id]

        self.receipts.until(
            lambda seen: len(mine(seen)) >= count, self.timeout_s, f"{count} receipt(s) for {request_id}"
        )
        return mine(self.receipts.seen)

    def status(self, where: Predicate = lambda s: True) -> dict[str, Any]:
        """Wait until the latest published status of the persona satisfies ``where``.

        Catches up with what is already on the topic first, so an old status cannot
        answer for a newer one; ``where`` should still be specific to the state awaited.
        """
        self.kafka.run(self.statuses.tail.catch_up())

        def latest(seen: list) -> dict[str, Any] | None:
            mine = [r.value for r in seen if r.key == self.name]
            return mine[-1] if mine else None

        self.statuses.until(
            lambda seen: (s := latest(seen)) is not None and where(s), self.timeout_s, f"status of {self.name}"
        )
        return latest(self.statuses.seen)  # type: ignore[return-value]

    def events(self, kind_prefix: str = "") -> list[dict[str, Any]]:
        return [
            r.value
            for r in self.outbox.seen
            if r.key == self.name and (r.value or {}).get("kind", "").startswith(kind_prefix)
        ]

    def wait_events(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        self.outbox.until(
            lambda seen: len([r for r in seen if r.key == self.name and (r.value or {}).get("kind") == kind]) >= count,
            self.timeout_s,
            f"{count} {kind} event(s)",
        )
        return self.events(kind)

    def dispatch_for(self, run_id: str) -> dict[str, Any]:
        self.dispatches.until(lambda seen: any(r.key == run_id for r in seen), self.timeout_s, f"dispatch of {run_id}")
        return next(r.value for r in self.dispatches.seen if r.key == run_id)

    # -------------------------------------------------------------------- runs

    def run_control(
        self, run_id: str, action: str, *, content: Any = None, reason: str | None = None, wait: bool = True
    ) -> dict[str, Any] | str:
        """Send run control (as ops would) and wait for its receipt."""
        command_id = f"{run_id}-{action}-{next(self.ids)}"
        self.kafka.send(
            "run_control",
            run_id,
            {
                "command_id": command_id,
                "run_id": run_id,
                "action": action,
                "actor": "test",
                "content": content,
                "reason": reason,
            },
        )
        if not wait:
            return command_id
        return self.receipts_for(command_id)[0]

    def run_events(self, run_id: str, kind_prefix: str = "run.") -> list[dict[str, Any]]:
        """The run stream's events published so far (the outbox is read to its end first)."""
        self.outbox.catch_up()
        return [e for e in self.events(kind_prefix) if e.get("stream") == f"run:{run_id}"]

    def wait_run_events(self, run_id: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until the run's stream holds ``count`` events of ``kind``."""

        def found(seen: list) -> int:
            return sum(
                1
                for r in seen
                if r.key == self.name
                and (r.value or {}).get("stream") == f"run:{run_id}"
                and r.value.get("kind") == kind
            )

        self.outbox.until(lambda seen: found(seen) >= count, self.timeout_s, f"{count} {kind} of run {run_id}")
        return [e for e in self.run_events(run_id) if e["kind"] == kind]

    def dispatches_of(self, run_id: str) -> list[dict[str, Any]]:
        return [r.value for r in self.dispatches.seen if r.key == run_id]

    def final_receipt(self, request_id: str) -> dict[str, Any]:
        """Wait for the request's final receipt (completed, failed or cancelled)."""

        def finals(seen: list) -> list[dict[str, Any]]:
            return [
                r.value
                for r in seen
                if r.key == self.name
                and (r.value or {}).get("request_id") == request_id
                and r.value.get("status") in ("completed", "failed", "cancelled")
            ]

        self.receipts.until(lambda seen: bool(finals(seen)), self.timeout_s, f"final receipt of {request_id}")
        return finals(self.receipts.seen)[0]
