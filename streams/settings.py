"""One settings object, read from the environment.

Every field names the environment variable it comes from, so a bad value fails at
start with a message an operator can act on (``PERSONAFLOW_PARTITIONS: ...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]*$")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Runtime configuration of workers, the CLI and the tests."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False, frozen=True)

    bootstrap_servers: str | None = Field(None, validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    topic_prefix: str = Field("", validation_alias=_env("PERSONAFLOW_TOPIC_PREFIX"))
    partitions: int = Field(8, ge=1, le=1024, validation_alias=_env("PERSONAFLOW_PARTITIONS"))
    replication_factor: int = Field(1, ge=1, le=16, validation_alias=_env("PERSONAFLOW_REPLICATION_FACTOR"))
    store: Literal["memory://", "rocksdb://"] = Field("memory://", validation_alias=_env("PERSONAFLOW_STORE"))
    data_dir: Path = Field(Path(".personaflow"), validation_alias=_env("PERSONAFLOW_DATA_DIR"))
    app_id: str = Field("personaflow", min_length=1, validation_alias=_env("PERSONAFLOW_APP_ID"))
    web_host: str = Field("127.0.0.1", min_length=1, validation_alias=_env("PERSONAFLOW_WEB_HOST"))
    web_port: int = Field(6066, ge=0, le=65535, validation_alias=_env("PERSONAFLOW_WEB_PORT"))
    # Loopback unless told otherwise: the views show every persona's state and spend.
    web_bind: str = Field("127.0.0.1", min_length=1, validation_alias=_env("PERSONAFLOW_WEB_BIND"))
    # A bearer token every data view asks for (unset: no check). Kept out
    # of the settings' repr so that it is never logged with them.
    web_token: str | None = Field(None, repr=False, validation_alias=_env("PERSONAFLOW_WEB_TOKEN"))
    # The tracing UI's page of a trace, for the dashboard's links: a URL with {trace_id}
    # (e.g. http://jaeger:16686/trace/{trace_id}).
    trace_url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://.*\{trace_id\}", validation_alias=_env("PERSONAFLOW_TRACE_URL")
    )
    # /metrics without the token, for a Prometheus that scrapes without one.
    metrics_open: bool = Field(False, validation_alias=_env("PERSONAFLOW_METRICS_OPEN"))
    # Kafka security, passed through to Faust/aiokafka.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None, validation_alias=_env("KAFKA_SECURITY_PROTOCOL")
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias=_env("KAFKA_SASL_MECHANISM")
    )
    sasl_username: str | None = Field(None, validation_alias=_env("KAFKA_SASL_USERNAME"))
    sasl_password: str | None = Field(None, validation_alias=_env("KAFKA_SASL_PASSWORD"))
    ssl_cafile: Path | None = Field(None, validation_alias=_env("KAFKA_SSL_CAFILE"))
    # Wall-clock timers: they only put tick records, stamped with their time, into the inbox.
    timer_interval_s: float = Field(1.0, gt=0, le=3600, validation_alias=_env("PERSONAFLOW_TIMER_INTERVAL_S"))
    # Event-time order across persona.bindings/control/triggers (docs/behaviour.md, section 2):
    # how long a caught-up input with no data may hold back the others (Kafka Streams'
    # max.task.idle.ms); an input with unfetched data is always waited for.
    max_task_idle_ms: int = Field(0, ge=0, le=600_000, validation_alias=_env("PERSONAFLOW_MAX_TASK_IDLE_MS"))
    # A trigger for a persona with no binding waits this long for its binding before it
    # is rejected (a stream-table join grace period, KIP-923).
    unbound_grace_ms: int = Field(5000, ge=0, le=86_400_000, validation_alias=_env("PERSONAFLOW_UNBOUND_GRACE_MS"))
    # Bounded event time (Kafka's message.timestamp.after.max.ms, default one hour since
    # Kafka 4.0): input stamped further ahead of the admitting worker's clock is refused.
    max_future_ms: int = Field(3_600_000, ge=0, le=366 * 86_400_000, validation_alias=_env("PERSONAFLOW_MAX_FUTURE_MS"))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "warning", validation_alias=_env("PERSONAFLOW_LOG_LEVEL")
    )

    @field_validator("bootstrap_servers", "sasl_username", "sasl_password", "ssl_cafile", "web_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError("only letters, digits, '.', '_' and '-' are allowed in topic names")
        return value

    @field_validator("web_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        # It travels in an Authorization header: visible ASCII, no spaces. The message
        # never repeats the value.
        if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
            raise ValueError("a token is printable ASCII without spaces")
        return value

    @field_validator("ssl_cafile")
    @classmethod
    def _cafile(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.sasl_mechanism and not (self.sasl_username and self.sasl_password):
            raise ValueError("KAFKA_SASL_MECHANISM is set: KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required")
        return self

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    def with_overrides(self, **changes: object) -> Settings:
        return self.model_copy(update=changes)


_FIELD_ENV = {
    name: field.validation_alias.choices[0]  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}


def load_settings() -> Settings:
    """Read settings from the process environment.

    Raises :class:`SettingsError` whose message names each offending variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error.get("loc") or ()
            message = error["msg"].removeprefix("Value error, ")
            if not loc:  # a rule spanning several variables names them itself
                problems.append(message)
                continue
            var = _FIELD_ENV.get(str(loc[0]), str(loc[0]))
            given = error.get("input")
            shown = "" if error["type"] == "value_error" or given is None else f" (got {given!r})"
            problems.append(f"{var}: {message}{shown}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
