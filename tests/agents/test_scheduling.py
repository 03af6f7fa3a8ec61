"""The step scheduler over a real broker, through the public topics only: SLO ranking under a
burst, in-flight backpressure, deadlines, breakpoints, cancelling queued work. The test acts
as the executor (``SELF_REPORTED``), so the order in which work is taken up is in its hands."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ..support.personas import SELF_REPORTED, PersonaProbe
from ..support.wait import eventually

pytestmark = pytest.mark.broker

SECOND = 1000


@pytest.fixture
def persona(worker, kafka, persona_name):
    probe = PersonaProbe(kafka, persona_name)
    yield probe
    probe.close()


def manual(**fields: Any) -> dict[str, Any]:
    return {**SELF_REPORTED, **fields}


def now_ms() -> int:
    return int(time.time() * 1000)


def send_trigger(persona: PersonaProbe, number: int, at_ms: int, **fields: Any) -> str:
    """Publish a trigger for issue ``number`` with extra fields (slo, deadline_at_ms, ...)."""
    request_id = f"{persona.name}-{number}"
    persona.kafka.send(
        "triggers",
        persona.name,
        {
            "request_id": request_id,
            "persona": persona.name,
            "provider": "linear",
            "kind": "issue",
            "metadata": {"issue_key": f"S-{number}"},
            "received_at_ms": at_ms,
            **fields,
        },  # fmt: skip
    )
    return request_id


def view(worker, path: str) -> dict[str, Any]:
    return json.loads(worker.get(path))


def test_under_a_burst_of_200_queued_triggers_breached_work_is_dispatched_first_and_counted(persona):
    persona.bind(manual(lease_ttl_ms=600_000))
    start = now_ms()
    holder = persona.trigger("linear", "issue", {"issue_key": "S-holder"}, at_ms=start)
    kinds: dict[str, str] = {}
    for n in range(200):  # queued behind the holder: no SLO, a tight one, a loose one
        if n % 4 == 0:
            kinds[send_trigger(persona, n, start + 1, slo={"tier": "gold", "queue_target_ms": 2 * SECOND})] = "tight"
        elif n % 4 == 1:
            kinds[send_trigger(persona, n, start + 1, slo={"queue_target_ms": 3_600_000})] = "loose"
        else:
            kinds[send_trigger(persona, n, start + 1, priority=n % 3)] = "none"
    persona.status(lambda s: s["queued_events"] == 200)
    # The holder reports its end 10 s later: every tight SLO is breached by then.
    persona.report(holder["run_id"], holder["lease"]["id"], "completed", at_ms=start + 10 * SECOND)
    order: list[str] = []  # run ids in the order they were dispatched
    taken: list[str] = []  # their requests
    for _ in range(200):  # complete each run as it is dispatched: the queue drains in its order
        dispatch = persona.dispatches.until(
            lambda seen: any(
                (r.value or {}).get("persona") == persona.name
                and r.value["action"] == "start"
                and r.value["envelope"]["metadata"]["issue_key"] != "S-holder"
                and r.value["run_id"] not in order
                for r in seen
            ),
            60,
            "the next dispatch",
        )
        value = next(
            r.value
            for r in dispatch
            if (r.value or {}).get("persona") == persona.name
            and r.value["action"] == "start"
            and r.value["envelope"]["metadata"]["issue_key"] != "S-holder"
            and r.value["run_id"] not in order
        )
        order.append(value["run_id"])
        taken.append(f"{persona.name}-{value['envelope']['metadata']['issue_key'][2:]}")
        persona.report(value["run_id"], value["lease_id"], "completed", at_ms=start + 10 * SECOND)
    sequence = [kinds[request_id] for request_id in taken]
    assert sequence == ["tight"] * 50 + ["loose"] * 50 + ["none"] * 100
    persona.outbox.catch_up()
    slos = [e["payload"]["slo"] for e in persona.outbox.values() if e and e.get("kind") == "run.dispatched"
            and e.get("persona") == persona.name and e["payload"].get("slo")]  # fmt: skip
    # every tight one but the first went ahead of older work (the first was the oldest itself)
    assert sum(1 for s in slos if s["preempted"]) == 49 and all(s["slack_ms"] < 0 for s in slos if s["preempted"])


def test_a_dispatch_over_the_in_flight_cost_is_deferred_and_runs_once_an_earlier_run_reconciles(persona, worker):
    persona.bind(manual(estimated_run_usd=0.5, max_inflight_cost_usd=1.0, backpressure_ms=60_000))
    parent = persona.trigger("linear", "issue", {"issue_key": "B-1"})
    run_id, lease = parent["run_id"], parent["lease"]["id"]
    persona.report(run_id, lease, "spawn", child_key="a", entry_workflow="wf/a")
    persona.report(run_id, lease, "spawn", child_key="b", entry_workflow="wf/b")
    spawned = persona.wait_run_events(run_id, "run.spawned", 2)
    children = {e["payload"]["child_key"]: e["payload"]["child_run_id"] for e in spawned}
    [deferred] = persona.wait_run_events(children["b"], "run.deferred")
    assert deferred["payload"]["reason"] == "backpressure"
    assert view(worker, f"/runs/{children['b']}")["status"] == "ready"
    first_child = persona.dispatch_for(children["a"])
    persona.report(children["a"], first_child["lease_id"], "completed")  # it reconciles: 0.5 in flight
    second = persona.dispatch_for(children["b"])
    assert second["action"] == "start" and second["attempt"] == 1


def test_work_past_its_deadline_ends_deadline_exceeded_without_a_dispatch(persona):
    persona.bind(manual(deadline_ms=2 * SECOND))
    start = now_ms()
    holder = persona.trigger("linear", "issue", {"issue_key": "D-1"}, at_ms=start)
    late = send_trigger(persona, 2, start + 1)
    assert persona.receipts_for(late)[0]["status"] == "lease_busy"
    persona.report(holder["run_id"], holder["lease"]["id"], "completed", at_ms=start + 5 * SECOND)
    failed = persona.receipts_for(late, 2)[1]
    assert (failed["status"], failed["error"]) == ("failed", "deadline_exceeded")
    [event] = persona.wait_events("persona.trigger.deadline_exceeded")
    assert event["payload"]["deadline_at_ms"] == start + 1 + 2 * SECOND
    persona.dispatches.catch_up()
    assert not [r for r in persona.dispatches.values() if r and r["envelope"]["metadata"].get("issue_key") == "S-2"]


def test_a_breakpoint_pauses_a_run_at_the_named_step_and_resume_continues_it(persona, worker):
    persona.bind(manual())
    receipt = persona.trigger("linear", "issue", {"issue_key": "P-1"})
    run_id, lease = receipt["run_id"], receipt["lease"]["id"]
    assert persona.run_control(run_id, "break", content={"step": "review"})["status"] == "completed"
    persona.report(run_id, lease, "step_started", step_id="s1", name="review")
    [paused] = persona.wait_run_events(run_id, "run.paused")
    assert (paused["payload"]["reason"], paused["payload"]["step"]) == ("breakpoint", "review")
    persona.dispatches.until(lambda seen: any(r.key == run_id and (r.value or {}).get("action") == "pause"
                                              for r in seen), 30, "pause to the executor")  # fmt: skip
    detail = eventually(lambda: (d := view(worker, f"/runs/{run_id}"))["active_pause"] and d, 30, "active_pause")
    assert detail["status"] == "paused" and detail["active_pause"]["step"] == "review"
    assert persona.run_control(run_id, "resume")["status"] == "completed"
    persona.report(run_id, lease, "completed")
    assert persona.final_receipt(receipt["request_id"])["status"] == "completed"


def test_a_queued_trigger_is_cancelled_and_unsettled_work_no_longer_lists_it(persona, worker):
    persona.bind(manual())
    persona.trigger("linear", "issue", {"issue_key": "C-1"})
    queued = send_trigger(persona, 2, now_ms())
    assert persona.receipts_for(queued)[0]["status"] == "lease_busy"
    unsettled = view(worker, f"/unsettled?persona={persona.name}")
    assert any(i.get("request_id") == queued for i in unsettled["queued_triggers"])
    command_id = f"{persona.name}-cancel"
    persona.kafka.send("control", persona.name, {"command_id": command_id, "persona": persona.name,
                                                 "action": "cancel", "actor": "ops", "target": {"request_id": queued}})  # fmt: skip
    assert persona.receipts_for(command_id)[0]["status"] == "completed"
    cancelled = persona.receipts_for(queued, 2)[1]
    assert cancelled["status"] == "cancelled" and cancelled["work_key"] == "linear:issue:S-2"
    unsettled = view(worker, f"/unsettled?persona={persona.name}")
    assert not any(i.get("request_id") == queued for i in unsettled["queued_triggers"])
