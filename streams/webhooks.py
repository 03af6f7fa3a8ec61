"""Provider webhooks in: signature checks and the mapping of a delivery to a trigger.

Pure: the server (``personaflow webhooks``) passes the raw body, the headers, the
provider's secret and the time; this module says what to answer and what to publish.

- ``github``: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>``; the kind is the
  ``X-GitHub-Event``, the request id the ``X-GitHub-Delivery``; ``ping`` publishes nothing.
- ``slack``: ``X-Slack-Signature: v0=<HMAC-SHA256 of "v0:{timestamp}:{body}">`` with
  ``X-Slack-Request-Timestamp`` at most five minutes from now; ``url_verification`` is
  answered with its challenge; an ``event_callback`` is a trigger of kind ``event.type``
  with request id ``event_id``.
- ``linear``: ``Linear-Signature: <HMAC-SHA256 of the body>``; the kind is the payload's
  ``type``, the request id the ``Linear-Delivery`` header (or a digest of the body).

Metadata carries the fields the work key is derived from (``repository`` and ``number``,
``check_run.name``, ``channel`` and ``ts``, ``issue_key``), so a pull request's deliveries
share the work key ``github:{owner/repo}:pr:{n}``. The same delivery again has the same
request id, so the pipeline answers it with the first decision instead of running again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from .codec import DecodeError, check_size, describe_validation_error, encode
from .records import MAX_METADATA_VALUE_CHARS, TriggerRequest

PROVIDERS: Final = ("github", "slack", "linear")
#: The environment variable holding each provider's signing secret.
SECRET_ENV: Final = {provider: f"PERSONAFLOW_WEBHOOK_SECRET_{provider.upper()}" for provider in PROVIDERS}
#: Slack's own advice: refuse a request whose timestamp is further than this from now,
#: so a captured request cannot be replayed later.
SLACK_MAX_SKEW_MS: Final = 5 * 60 * 1000

Payload = dict[str, Any]
Headers = Mapping[str, str]


class Refused(Exception):
    """A delivery that is not accepted: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Publish:
    """A verified delivery: publish ``request``, then answer 202."""

    request: TriggerRequest


@dataclass(frozen=True)
class Reply:
    """A verified delivery that asks for an answer only (ping, URL verification): 200."""

    body: dict[str, Any]


Outcome = Publish | Reply


def handle(provider: str, persona: str, headers: Headers, body: bytes, secret: bytes | None, now_ms: int) -> Outcome:
    """What to do with one delivery; raises :class:`Refused` (401, 400, 413, 404)."""
    if provider not in PROVIDERS:
        raise Refused(404, f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    lowered = {name.lower(): value for name, value in headers.items()}
    verify(provider, secret, lowered, body, now_ms)
    payload = parse_payload(body)
    outcome = _MAPPERS[provider](persona, lowered, payload, body)
    if isinstance(outcome, Publish):
        _check_record_size(outcome.request)
    return outcome


# ----------------------------------------------------------------- signatures


def verify(provider: str, secret: bytes | None, headers: Headers, body: bytes, now_ms: int) -> None:
    """Raise ``Refused(401)`` unless the delivery is signed with ``secret``.

    ``headers`` have lowercase names. A provider without a secret accepts nothing: an
    unsigned endpoint would let anyone start work (and spend budget).
    """
    if not secret:
        raise Refused(401, f"no secret configured for {provider}: set {SECRET_ENV[provider]}")
    if provider == "github":
        _check(_hmac(secret, body), _after(headers.get("x-hub-signature-256"), "sha256="), "X-Hub-Signature-256")
    elif provider == "slack":
        stamp = headers.get("x-slack-request-timestamp", "")
        _check_slack_time(stamp, now_ms)
        signed = b"v0:" + stamp.encode() + b":" + body
        _check(_hmac(secret, signed), _after(headers.get("x-slack-signature"), "v0="), "X-Slack-Signature")
    else:
        _check(_hmac(secret, body), headers.get("linear-signature"), "Linear-Signature")


def _hmac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _after(value: str | None, prefix: str) -> str | None:
    return value[len(prefix) :] if value is not None and value.startswith(prefix) else None


def _check(expected: str, given: str | None, header: str) -> None:
    # Bytes, so a non-ASCII header cannot make compare_digest raise; constant time, so
    # the time taken tells nothing about how much of a forged signature was right.
    if given is None or not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise Refused(401, f"missing or wrong {header}")


def _check_slack_time(stamp: str, now_ms: int) -> None:
    if not stamp.isascii() or not stamp.isdigit():
        raise Refused(401, "missing or malformed X-Slack-Request-Timestamp")
    if abs(now_ms - int(stamp) * 1000) > SLACK_MAX_SKEW_MS:
        raise Refused(401, "X-Slack-Request-Timestamp is more than 5 minutes from now (replayed or clock skew)")


# -------------------------------------------------------------------- payloads


def parse_payload(body: bytes) -> Payload:
    """The body as a JSON object; ``Refused(400)`` otherwise."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        payload = json.loads(body, parse_constant=no_constants)
    except (ValueError, RecursionError):
        hint = " (form-encoded? send application/json)" if body[:8] == b"payload=" else ""
        raise Refused(400, f"body is not valid JSON{hint}") from None
    if not isinstance(payload, dict):
        raise Refused(400, f"body must be a JSON object, got {type(payload).__name__}")
    return payload


def _dig(value: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _text(value: Any) -> str | None:
    """A metadata value: strings and integers (numbers, ids) only, not too long."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_METADATA_VALUE_CHARS:
        return value
    return None


def _metadata(**fields: Any) -> dict[str, str]:
    """The fields that have a usable value (keys with dots are passed as ``**{...}``)."""
    return {key: text for key, value in fields.items() if (text := _text(value)) is not None}


def _header(headers: Headers, name: str, title: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise Refused(400, f"missing header {title}")
    return value


def _request(persona: str, provider: str, kind: str, request_id: str, metadata: dict[str, str], raw: Any) -> Publish:
    try:
        return Publish(
            TriggerRequest.model_validate(
                {
                    "request_id": request_id,
                    "persona": persona,
                    "provider": provider,
                    "kind": kind,
                    "metadata": metadata,
                    "raw": raw,
                }
            )
        )
    except ValidationError as exc:
        raise Refused(400, describe_validation_error(exc, "trigger")) from None


def _check_record_size(request: TriggerRequest) -> None:
    # A body under the HTTP limit may still make a record over the broker's: refuse it
    # here rather than publish a record the pipeline would dead-letter.
    try:
        check_size(request.persona.encode(), encode(request))
    except DecodeError as exc:
        raise Refused(413, str(exc)) from None


# ---------------------------------------------------------------------- github

#: Events about one pull request or issue: keyed ``github:{repo}:pr:{number}``.
_GITHUB_NUMBERED: Final = {
    "pull_request": ("pull_request",),
    "pull_request_review": ("pull_request",),
    "pull_request_review_comment": ("pull_request",),
    "pull_request_review_thread": ("pull_request",),
    "issues": ("issue",),
    "issue_comment": ("issue",),
}


def _github(persona: str, headers: Headers, payload: Payload, body: bytes) -> Outcome:
    event = _header(headers, "x-github-event", "X-GitHub-Event")
    if event == "ping":
        return Reply({"ok": True, "event": "ping"})
    delivery = _header(headers, "x-github-delivery", "X-GitHub-Delivery")
    metadata = _metadata(
        event_id=delivery,
        repository=_dig(payload, "repository", "full_name"),
        action=payload.get("action"),
        sender=_dig(payload, "sender", "login"),
    )
    metadata.update(_github_subject(event, payload, delivery))
    return _request(persona, "github", event, delivery, metadata, payload)


def _github_subject(event: str, payload: Payload, delivery: str) -> dict[str, str]:
    """The fields naming what the event is about (its work key), per event."""
    if event in _GITHUB_NUMBERED:
        (subject,) = _GITHUB_NUMBERED[event]
        item = payload.get(subject)
        return _metadata(
            number=_dig(item, "number") or payload.get("number"),
            head_sha=_dig(item, "head", "sha"),
            head_ref=_dig(item, "head", "ref"),
            base_ref=_dig(item, "base", "ref"),
            is_pull_request="true" if subject == "issue" and _dig(item, "pull_request") is not None else None,
            comment_id=_dig(payload, "comment", "id"),
            review_state=_dig(payload, "review", "state"),
        )
    if event == "check_run":
        run = payload.get("check_run")
        return _metadata(
            **{"check_run.name": _dig(run, "name")},
            head_sha=_dig(run, "head_sha"),
            status=_dig(run, "status"),
            conclusion=_dig(run, "conclusion"),
        )
    if event == "check_suite":
        suite = payload.get("check_suite")
        return _metadata(
            head_sha=_dig(suite, "head_sha"),
            head_branch=_dig(suite, "head_branch"),
            status=_dig(suite, "status"),
            conclusion=_dig(suite, "conclusion"),
            app=_dig(suite, "app", "slug"),
        )
    if event == "push":
        return _metadata(
            ref=payload.get("ref"),
            before=payload.get("before"),
            after=payload.get("after"),
            pusher=_dig(payload, "pusher", "name"),
        )
    return {"dedupe_key": delivery}


# ----------------------------------------------------------------------- slack


def _slack(persona: str, headers: Headers, payload: Payload, body: bytes) -> Outcome:
    kind = payload.get("type")
    if kind == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise Refused(400, "url_verification without a string 'challenge'")
        return Reply({"challenge": challenge})
    if not isinstance(kind, str):
        raise Refused(400, "payload has no 'type'")
    if kind != "event_callback":
        # e.g. app_rate_limited: a notice to the app, not work for a persona.
        return Reply({"ok": True, "ignored": kind})
    event = payload.get("event")
    event_id = payload.get("event_id")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(event_id, str):
        raise Refused(400, "event_callback needs 'event_id' and an 'event' with a 'type'")
    channel = event.get("channel")
    metadata = _metadata(
        event_id=event_id,
        team_id=payload.get("team_id"),
        api_app_id=payload.get("api_app_id"),
        # A message names its channel; a reaction, the channel of the message it is on;
        # channel events carry the channel as an object.
        channel=channel if isinstance(channel, str) else _dig(channel, "id") or _dig(event, "item", "channel"),
        channel_id=event.get("channel_id"),
        # The message's own ts (each message is its own work), else the event's.
        ts=event.get("ts"),
        event_ts=event.get("event_ts"),
        thread_ts=event.get("thread_ts"),
        item_ts=_dig(event, "item", "ts"),
        user=event.get("user") if isinstance(event.get("user"), str) else _dig(event, "user", "id"),
        subtype=event.get("subtype"),
        event_time=payload.get("event_time"),
    )
    return _request(persona, "slack", event["type"], event_id, metadata, payload)


# ---------------------------------------------------------------------- linear


def _linear(persona: str, headers: Headers, payload: Payload, body: bytes) -> Outcome:
    kind = payload.get("type") or headers.get("linear-event")
    if not isinstance(kind, str) or not kind:
        raise Refused(400, "payload has no 'type'")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise Refused(400, "payload has no 'data' object")
    request_id = linear_request_id(headers, body)
    if kind == "Issue":
        subject = _metadata(issue_key=data.get("identifier"), issue_id=data.get("id"))
    else:  # a comment, label, reaction, attachment ... of an issue, or another entity
        subject = _metadata(
            issue_key=_dig(data, "issue", "identifier"),
            issue_id=data.get("issueId") or _dig(data, "issue", "id"),
        )
        subject = subject or _metadata(id=data.get("id"))
    metadata = _metadata(
        event_id=request_id,
        action=payload.get("action"),
        webhook_id=payload.get("webhookId"),
        organization_id=payload.get("organizationId"),
        url=payload.get("url") or data.get("url"),
    )
    metadata.update(subject)
    return _request(persona, "linear", kind, request_id, metadata, payload)


def linear_request_id(headers: Headers, body: bytes) -> str:
    """The ``Linear-Delivery`` header; without it, ``linear:sha256:<digest of the body>``:
    the body carries ``webhookTimestamp``, so the digest is the same for the same delivery
    sent again and differs between deliveries."""
    delivery = headers.get("linear-delivery", "").strip()
    return delivery or "linear:sha256:" + hashlib.sha256(body).hexdigest()


_MAPPERS: Final[dict[str, Callable[[str, Headers, Payload, bytes], Outcome]]] = {
    "github": _github,
    "slack": _slack,
    "linear": _linear,
}
