"""Provider webhooks: signatures, refusals, and the trigger (and work key) a delivery becomes."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from streams.records import MAX_RECORD_BYTES
from streams.webhooks import Publish, Refused, Reply, handle
from tables.envelope import normalize_trigger_envelope

SECRET = b"It's a Secret to Everybody"
NOW_MS = 1_713_988_800_000


def sign(message: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def github(event: str, payload: Any, delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958", **headers: str):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={sign(body)}"}
    return handle("github", "merge_captain", {**sent, **headers}, body, SECRET, NOW_MS)


def slack(payload: Any, *, at_s: int = NOW_MS // 1000, secret: bytes = SECRET, now_ms: int = NOW_MS):
    body = json.dumps(payload).encode()
    headers = {
        "X-Slack-Request-Timestamp": str(at_s),
        "X-Slack-Signature": "v0=" + sign(f"v0:{at_s}:".encode() + body, secret),
    }
    return handle("slack", "triage", headers, body, SECRET, now_ms)


def linear(
    payload: Any, *, delivery: str | None = "0f8e2a40-1111-4c2b-9d2b-2a5d8c1e0001", signature: str | None = None
):
    body = json.dumps(payload).encode()
    headers = {"Linear-Signature": signature or sign(body)}
    if "type" in payload:
        headers["Linear-Event"] = payload["type"]
    if delivery is not None:
        headers["Linear-Delivery"] = delivery
    return handle("linear", "groomer", headers, body, SECRET, NOW_MS)


def work_key(outcome) -> str:
    assert isinstance(outcome, Publish), outcome
    request = outcome.request
    return normalize_trigger_envelope(
        request.provider, request.kind, request.metadata, NOW_MS, request.request_id
    ).subject_key


def refusal(call) -> tuple[int, str]:
    with pytest.raises(Refused) as refused:
        call()
    return refused.value.status, refused.value.reason


PULL_REQUEST = {
    "action": "opened",
    "number": 462,
    "pull_request": {"number": 462, "head": {"sha": "abc123", "ref": "fix"}, "base": {"ref": "main"}},
    "repository": {"full_name": "burin-labs/harn"},
    "sender": {"login": "octocat"},
}


# ---------------------------------------------------------------------- github


def test_a_signed_github_pull_request_becomes_a_trigger_keyed_by_repo_and_number():
    outcome = github("pull_request", PULL_REQUEST)
    assert isinstance(outcome, Publish)
    request = outcome.request
    assert (request.request_id, request.persona, request.provider, request.kind) == (
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "merge_captain",
        "github",
        "pull_request",
    )
    assert request.metadata["action"] == "opened" and request.metadata["head_sha"] == "abc123"
    assert request.raw == PULL_REQUEST
    assert work_key(outcome) == "github:burin-labs/harn:pr:462"


def test_the_same_github_delivery_maps_to_the_same_request():
    assert github("pull_request", PULL_REQUEST) == github("pull_request", PULL_REQUEST)


def test_issues_and_their_comments_are_keyed_by_the_issue_number():
    issue = {"action": "opened", "issue": {"number": 9}, "repository": {"full_name": "a/b"}}
    assert work_key(github("issues", issue)) == "github:a/b:pr:9"
    comment = {**issue, "action": "created", "comment": {"id": 5}, "issue": {"number": 9, "pull_request": {}}}
    outcome = github("issue_comment", comment)
    assert work_key(outcome) == "github:a/b:pr:9"
    assert isinstance(outcome, Publish) and outcome.request.metadata["is_pull_request"] == "true"


def test_a_check_run_is_keyed_by_its_check_name_and_a_push_by_repo_and_event():
    check = {"action": "completed", "check_run": {"name": "ci", "head_sha": "s"}, "repository": {"full_name": "a/b"}}
    assert work_key(github("check_run", check)) == "github:a/b:check:ci"
    push = {"ref": "refs/heads/main", "after": "f00", "repository": {"full_name": "a/b"}}
    outcome = github("push", push)
    assert work_key(outcome) == "github:a/b:push"
    assert isinstance(outcome, Publish) and outcome.request.metadata["ref"] == "refs/heads/main"


def test_another_github_event_is_a_trigger_carrying_its_delivery_as_dedupe_key():
    outcome = github("release", {"action": "published", "repository": {"full_name": "a/b"}}, delivery="d-1")
    assert isinstance(outcome, Publish)
    assert outcome.request.metadata["dedupe_key"] == "d-1" and outcome.request.metadata["event_id"] == "d-1"


def test_a_github_ping_is_answered_and_publishes_nothing():
    assert github("ping", {"zen": "Keep it logically awesome."}) == Reply({"ok": True, "event": "ping"})


def test_header_names_are_case_insensitive():
    body = json.dumps(PULL_REQUEST).encode()
    headers = {
        "x-github-event": "pull_request",
        "X-GITHUB-DELIVERY": "d",
        "x-hub-signature-256": "sha256=" + sign(body),
    }
    assert work_key(handle("github", "p", headers, body, SECRET, NOW_MS)) == "github:burin-labs/harn:pr:462"


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", "sha256=" + "0" * 64, sign(b"{}"), "sha1=abc", "sha256=é"],
    ids=["missing", "empty", "no-digest", "wrong-digest", "no-prefix", "sha1", "non-ascii"],
)
def test_a_github_delivery_without_the_right_signature_is_401(signature):
    body = json.dumps(PULL_REQUEST).encode()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    status, _ = refusal(lambda: handle("github", "p", headers, body, SECRET, NOW_MS))
    assert status == 401


def test_a_body_changed_after_signing_is_401():
    body = json.dumps(PULL_REQUEST).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": "d",
        "X-Hub-Signature-256": "sha256=" + sign(body),
    }
    status, _ = refusal(lambda: handle("github", "p", headers, body.replace(b"462", b"463"), SECRET, NOW_MS))
    assert status == 401


@pytest.mark.parametrize("secret", [None, b""])
def test_a_provider_without_a_secret_accepts_nothing(secret):
    body = b"{}"
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d", "X-Hub-Signature-256": "sha256=" + sign(body, b"")}
    status, reason = refusal(lambda: handle("github", "p", headers, body, secret, NOW_MS))
    assert status == 401 and "PERSONAFLOW_WEBHOOK_SECRET_GITHUB" in reason


def test_an_unknown_provider_is_404():
    assert refusal(lambda: handle("gitlab", "p", {}, b"{}", SECRET, NOW_MS))[0] == 404


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"a": NaN}', b"payload=%7B%7D", b"\xff\xfe\x00"],
    ids=["text", "array", "nan", "form", "binary"],
)
def test_a_signed_body_that_is_not_a_json_object_is_400(body):
    status, reason = refusal(lambda: github("pull_request", body))
    assert status == 400
    if body.startswith(b"payload="):
        assert "application/json" in reason


def test_a_github_delivery_without_event_or_delivery_id_is_400():
    body = json.dumps(PULL_REQUEST).encode()
    signed = {"X-Hub-Signature-256": "sha256=" + sign(body)}
    for missing in ({**signed, "X-GitHub-Delivery": "d"}, {**signed, "X-GitHub-Event": "pull_request"}):
        assert refusal(lambda: handle("github", "p", missing, body, SECRET, NOW_MS))[0] == 400


def test_a_delivery_too_large_for_one_record_is_413():
    big = {**PULL_REQUEST, "padding": "x" * MAX_RECORD_BYTES}
    assert refusal(lambda: github("pull_request", big))[0] == 413


# ----------------------------------------------------------------------- slack

MESSAGE = {
    "type": "event_callback",
    "team_id": "T1",
    "event_id": "Ev08MFMKH6",
    "event_time": 1713988800,
    "event": {"type": "message", "channel": "C123", "user": "U1", "text": "hi", "ts": "1713988800.000100"},
}


def test_a_signed_slack_event_becomes_a_trigger_keyed_by_channel_and_ts():
    outcome = slack(MESSAGE)
    assert isinstance(outcome, Publish)
    assert (outcome.request.request_id, outcome.request.kind) == ("Ev08MFMKH6", "message")
    assert work_key(outcome) == "slack:C123:1713988800.000100"


def test_a_slack_reaction_is_keyed_by_the_channel_of_its_message_and_its_own_event_ts():
    reaction = {
        **MESSAGE,
        "event": {
            "type": "reaction_added",
            "user": "U1",
            "item": {"type": "message", "channel": "C9", "ts": "1.0001"},
            "event_ts": "2.0002",
        },
    }
    assert work_key(slack(reaction)) == "slack:C9:2.0002"


def test_slack_url_verification_is_answered_with_the_challenge_after_the_signature_check():
    challenge = {
        "type": "url_verification",
        "token": "t",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    }
    assert slack(challenge) == Reply({"challenge": challenge["challenge"]})
    assert refusal(lambda: slack(challenge, secret=b"another secret"))[0] == 401


@pytest.mark.parametrize("offset_ms", [-5 * 60_000 - 1000, 5 * 60_000 + 1000], ids=["old", "future"])
def test_a_slack_request_more_than_five_minutes_from_now_is_401(offset_ms):
    status, reason = refusal(lambda: slack(MESSAGE, at_s=(NOW_MS + offset_ms) // 1000))
    assert status == 401 and "5 minutes" in reason


def test_a_slack_request_exactly_five_minutes_old_is_accepted():
    assert isinstance(slack(MESSAGE, at_s=NOW_MS // 1000 - 300), Publish)


def test_a_slack_request_without_a_timestamp_is_401():
    body = json.dumps(MESSAGE).encode()
    headers = {"X-Slack-Signature": "v0=" + sign(b"v0::" + body)}
    assert refusal(lambda: handle("slack", "p", headers, body, SECRET, NOW_MS))[0] == 401


def test_a_slack_callback_without_event_id_or_event_type_is_400():
    assert refusal(lambda: slack({**MESSAGE, "event_id": None}))[0] == 400
    assert refusal(lambda: slack({**MESSAGE, "event": {"channel": "C1"}}))[0] == 400


def test_a_slack_notice_that_is_not_an_event_is_answered_and_publishes_nothing():
    assert slack({"type": "app_rate_limited", "team_id": "T1"}) == Reply({"ok": True, "ignored": "app_rate_limited"})


# ---------------------------------------------------------------------- linear

ISSUE = {
    "action": "update",
    "type": "Issue",
    "data": {"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "identifier": "ENG-42", "title": "Fix it"},
    "url": "https://linear.app/acme/issue/ENG-42",
    "webhookTimestamp": 1713988800000,
    "webhookId": "w-1",
}


def test_a_signed_linear_issue_becomes_a_trigger_keyed_by_the_issue_identifier():
    outcome = linear(ISSUE)
    assert isinstance(outcome, Publish)
    request = outcome.request
    assert (request.request_id, request.kind, request.metadata["action"]) == (
        "0f8e2a40-1111-4c2b-9d2b-2a5d8c1e0001",
        "Issue",
        "update",
    )
    assert work_key(outcome) == "linear:issue:ENG-42"


def test_a_linear_comment_is_keyed_by_its_issue():
    comment = {"action": "create", "type": "Comment", "data": {"id": "c1", "issueId": "i-7", "body": "lgtm"}}
    assert work_key(linear(comment)) == "linear:issue:i-7"
    named = {**comment, "data": {"id": "c1", "issue": {"id": "i-7", "identifier": "ENG-7"}}}
    assert work_key(linear(named)) == "linear:issue:ENG-7"


def test_without_a_delivery_header_the_linear_request_id_is_a_digest_of_the_body():
    first, again = linear(ISSUE, delivery=None), linear(ISSUE, delivery=None)
    later = linear({**ISSUE, "webhookTimestamp": ISSUE["webhookTimestamp"] + 1}, delivery=None)
    assert isinstance(first, Publish) and isinstance(again, Publish) and isinstance(later, Publish)
    assert first.request.request_id == again.request.request_id != later.request.request_id
    assert first.request.request_id.startswith("linear:sha256:")


def test_a_linear_delivery_with_a_wrong_signature_is_401():
    assert refusal(lambda: linear(ISSUE, signature=sign(b"something else")))[0] == 401


def test_a_linear_payload_without_type_or_data_is_400():
    assert refusal(lambda: linear({"action": "create", "data": {}}))[0] == 400
    assert refusal(lambda: linear({"action": "create", "type": "Issue"}))[0] == 400
