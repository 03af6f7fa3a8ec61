"""The topics (README, "Topics") with the configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its role, base name, what its key is, and whether it is compacted."""

    role: str
    base: str
    key: str
    compacted: bool = False
    internal: bool = False
    description: str = ""
    #: Kept forever (``retention.ms = -1``): a small topic whose records stay evidence.
    kept: bool = False


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("bindings", "persona.bindings", "persona", True, description="PersonaBinding or null (unbind)"),
    TopicSpec("triggers", "persona.triggers", "persona", description="TriggerRequest from producers"),
    TopicSpec("control", "persona.control", "persona", description="ControlCommand from ops"),
    TopicSpec("run_events", "persona.run.events", "run id", description="RunEvent from executors"),
    TopicSpec("run_control", "persona.run.control", "run id", description="RunControl from ops/runs"),
    TopicSpec("dispatch", "persona.runs.dispatch", "run id", description="RunDispatch to executors"),
    TopicSpec("receipts", "persona.receipts", "persona", description="Receipt per decision"),
    TopicSpec("outbox", "persona.outbox", "persona", description="OutboxEvent per transition"),
    TopicSpec("status", "persona.status", "persona", True, description="latest PersonaStatus"),
    TopicSpec("dlq", "persona.dlq", "original key", description="DeadLetter"),
    TopicSpec(
        "audit",
        "persona.audit",
        "stream (checkpoints: 'checkpoint')",
        description="AuditNotice from the audit consumer: signed checkpoints, broken chains",
        kept=True,
    ),
    TopicSpec(
        "persona_inbox",
        "persona.inbox",
        "persona",
        internal=True,
        description="validated persona input and internal notices (one ordered stream per persona)",
    ),
    TopicSpec(
        "run_inbox",
        "persona.run.inbox",
        "run id",
        internal=True,
        description="the run directory: runs registered by their persona, and executors' reports and"
        " run control, routed from here to the run's persona",
    ),
)

BY_ROLE: dict[str, TopicSpec] = {spec.role: spec for spec in SPECS}


@dataclass(frozen=True)
class TopicNames:
    """Full topic names for one prefix; attribute per role (``names.triggers``)."""

    prefix: str = ""

    def name(self, role: str) -> str:
        return self.prefix + BY_ROLE[role].base

    def __getattr__(self, role: str) -> str:
        if role in BY_ROLE:
            return self.name(role)
        raise AttributeError(role)

    def all(self) -> dict[str, str]:
        return {spec.role: self.prefix + spec.base for spec in SPECS}
