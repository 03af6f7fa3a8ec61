"""``personaflow webhooks`` over real HTTP against the session broker (and worker)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from personaflow.webhooks import WebhookConfig, WebhookServer

from ..support.personas import PersonaProbe

pytestmark = pytest.mark.broker

SECRETS = {"github": b"gh-secret", "slack": b"slack-secret", "linear": b"linear-secret"}
MAX_BYTES = 8192


@pytest.fixture(scope="module")
def webhooks(settings, broker) -> Iterator[str]:
    """The webhook server on a free port, on a loop of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="webhooks", daemon=True)
    thread.start()
    server = WebhookServer(settings, broker, WebhookConfig(SECRETS, MAX_BYTES), "127.0.0.1", 0)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def post(url: str, body: bytes | Iterable[bytes], headers: dict[str, str]) -> tuple[int, Any]:
    """POST and return (status, decoded JSON answer); an iterable body is sent chunked."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sign(provider: str, body: bytes) -> str:
    return hmac.new(SECRETS[provider], body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str, delivery: str, signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + (signature or sign("github", body)),
    }


def pull_request(number: int) -> bytes:
    return json.dumps(
        {
            "action": "opened",
            "number": number,
            "pull_request": {"number": number, "head": {"sha": "abc", "ref": "fix"}, "base": {"ref": "main"}},
            "repository": {"full_name": "acme/app"},
            "sender": {"login": "octocat"},
        }
    ).encode()


def linear_delivery(persona: str, webhooks: str, signature: str | None = None) -> tuple[int, Any]:
    body = json.dumps({"action": "create", "type": "Issue", "data": {"id": "i1", "identifier": "ENG-1"}}).encode()
    headers = {
        "Content-Type": "application/json",
        "Linear-Delivery": str(uuid.uuid4()),
        "Linear-Signature": signature or sign("linear", body),
    }
    return post(f"{webhooks}/webhooks/linear/{persona}", body, headers)


def test_a_signed_github_pull_request_runs_once_under_its_pr_work_key_even_when_delivered_twice(
    webhooks, kafka, worker, persona_name
):
    probe = PersonaProbe(kafka, persona_name, timeout_s=30)
    triggers = kafka.tail("triggers")
    probe.bind({})
    body, delivery = pull_request(7), str(uuid.uuid4())
    url = f"{webhooks}/webhooks/github/{persona_name}"

    assert post(url, body, github_headers(body, "pull_request", delivery)) == (202, {"request_id": delivery})
    (published,) = triggers.wait_for_key(persona_name)
    assert (published["request_id"], published["provider"], published["kind"]) == (delivery, "github", "pull_request")
    (receipt,) = probe.receipts_for(delivery)
    assert (receipt["status"], receipt["work_key"]) == ("completed", "github:acme/app:pr:7")

    # GitHub's "Redeliver": the same delivery id, so the pipeline answers with the same decision.
    assert post(url, body, github_headers(body, "pull_request", delivery)) == (202, {"request_id": delivery})
    first, again = probe.receipts_for(delivery, count=2)
    assert again["receipt_id"] == first["receipt_id"] and again["status"] == "completed"
    probe.outbox.catch_up()
    assert len(probe.events("persona.run.completed")) == 1
    probe.close()


def test_refused_deliveries_publish_nothing_and_say_why(webhooks, kafka, persona_name):
    triggers = kafka.tail("triggers")
    body = pull_request(8)
    github_url = f"{webhooks}/webhooks/github/{persona_name}"
    wrong = github_headers(body, "pull_request", "d-wrong", signature=sign("linear", body))
    assert post(github_url, body, wrong)[0] == 401
    assert post(github_url, b"{not json", github_headers(b"{not json", "pull_request", "d-bad"))[0] == 400
    big = b'{"pad": "' + b"x" * MAX_BYTES + b'"}'
    assert post(github_url, big, github_headers(big, "pull_request", "d-big"))[0] == 413
    chunked = post(github_url, iter([big[:4000], big[4000:]]), github_headers(big, "pull_request", "d-chunked"))
    assert chunked[0] == 413
    assert post(f"{webhooks}/webhooks/gitlab/{persona_name}", body, {})[0] == 404
    status, answer = linear_delivery(persona_name, webhooks, signature="0" * 64)
    assert status == 401 and "Linear-Signature" in answer["error"]

    # A good delivery after them: per-persona order on the topic, so it is the first and
    # only record for the persona once it has arrived.
    status, answer = linear_delivery(persona_name, webhooks)
    assert status == 202
    (published,) = triggers.wait_for_key(persona_name)
    assert published["request_id"] == answer["request_id"]
    assert published["metadata"]["issue_key"] == "ENG-1"
    assert triggers.for_key(persona_name) == [published]


def test_slack_url_verification_is_answered_and_a_stale_slack_request_is_401(webhooks, kafka, persona_name):
    triggers = kafka.tail("triggers")
    url = f"{webhooks}/webhooks/slack/{persona_name}"

    def slack_headers(body: bytes, at_s: int) -> dict[str, str]:
        signature = sign("slack", f"v0:{at_s}:".encode() + body)
        return {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(at_s),
            "X-Slack-Signature": f"v0={signature}",
        }

    challenge = json.dumps({"type": "url_verification", "token": "t", "challenge": "c-123"}).encode()
    assert post(url, challenge, slack_headers(challenge, int(time.time()))) == (200, {"challenge": "c-123"})

    event = json.dumps(
        {
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10]}",
            "event": {"type": "app_mention", "channel": "C1", "user": "U1", "ts": "1.2"},
        }
    ).encode()
    status, answer = post(url, event, slack_headers(event, int(time.time()) - 6 * 60))
    assert status == 401 and "5 minutes" in answer["error"]
    event_id = json.loads(event)["event_id"]
    assert post(url, event, slack_headers(event, int(time.time()))) == (202, {"request_id": event_id})
    (published,) = triggers.wait_for_key(persona_name)
    assert (published["request_id"], published["kind"]) == (event_id, "app_mention")
    assert triggers.for_key(persona_name) == [published]  # neither the challenge nor the stale request
