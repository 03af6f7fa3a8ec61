"""Fast twins of the contract records, for use inside the pipeline.

The contract (:mod:`streams.records`) is pydantic: it validates what producers send,
with errors a person can act on, and exports JSON Schema. Once a record is admitted,
the pipeline passes it around and stores it many times, so inside it the same records
are msgspec structs generated from the pydantic models: same field names, types and
defaults, no validation, and about ten times cheaper to decode and encode. The contract
stays the single source of truth; ``tests/streams/test_wire.py`` checks that every twin
encodes to JSON its contract model accepts.

Type checkers cannot see the fields of classes made at run time: they read the stub
``streams/wire.pyi`` instead, which :mod:`streams.wirestub` writes from the twins
(``make wire-stub`` after a change to the contract; a test fails while it is stale).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec
from pydantic import BaseModel

from . import records

if TYPE_CHECKING:
    from typing_extensions import TypeForm

_T = TypeVar("_T")

_TWINS: dict[type[BaseModel], type[msgspec.Struct]] = {}


def _plain(annotation: Any) -> Any:
    """The annotation without pydantic metadata, with models replaced by their twins."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _plain(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return twin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_plain(arg) for arg in get_args(annotation))]  # noqa: UP007 - built at run time
    if origin is Literal or origin is None:
        return annotation
    args = get_args(annotation)
    if origin is list:  # list[...] and dict[...] of types known only at run time
        return types.GenericAlias(list, (_plain(args[0]),))
    if origin is dict:
        return types.GenericAlias(dict, (_plain(args[0]), _plain(args[1])))
    return annotation


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        kind = twin(type(value))
        return msgspec.field(default_factory=lambda: msgspec.convert(value.model_dump(), kind))
    if isinstance(value, (list, dict)) and not value:
        return msgspec.field(default_factory=type(value))
    return value


def twin(model: type[BaseModel], **overrides: Any) -> type[msgspec.Struct]:
    """The msgspec struct with ``model``'s fields (``overrides``: other types for some)."""
    if not overrides and model in _TWINS:
        return _TWINS[model]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        annotation = overrides.get(name, _plain(info.annotation))
        if info.is_required():
            fields.append((name, annotation))
        else:
            fields.append((name, annotation, _default(info.default)))
    frozen = bool(model.model_config.get("frozen"))
    # Records are plain data and never form reference cycles: the garbage collector need
    # not track them (fewer objects to scan; measured 10 % less CPU per trigger with the
    # collector tuning in agents.worker).
    struct = msgspec.defstruct(model.__name__, fields, kw_only=True, frozen=frozen, module=__name__, gc=False)
    if not overrides:
        _TWINS[model] = struct
    return struct


# The records the pipeline handles (names as in the contract).
Trace = twin(records.Trace)
RunCost = twin(records.RunCost)
Slo = twin(records.Slo)
Debug = twin(records.Debug)
CancelTarget = twin(records.CancelTarget)
StepSlo = twin(records.StepSlo)
BudgetPolicy = twin(records.BudgetPolicy)
PolicyMatch = twin(records.PolicyMatch)
PolicyRule = twin(records.PolicyRule)
Policy = twin(records.Policy)
PolicyScope = twin(records.PolicyScope)
RetryPolicy = twin(records.RetryPolicy)
RunLimits = twin(records.RunLimits)
PersonaBinding = twin(records.PersonaBinding)
TriggerRequest = twin(records.TriggerRequest)
ControlCommand = twin(records.ControlCommand)
ExecutorIdentity = twin(records.ExecutorIdentity)
RunEvent = twin(records.RunEvent)
RunControl = twin(records.RunControl)
TriggerEnvelope = twin(records.TriggerEnvelope)
PersonaLease = twin(records.PersonaLease)
Receipt = twin(records.Receipt)
RunDispatch = twin(records.RunDispatch)
OutboxEvent = twin(records.OutboxEvent)
PersonaBudgetStatus = twin(records.PersonaBudgetStatus)
PersonaAssignmentStatus = twin(records.PersonaAssignmentStatus)
PersonaQueuedWork = twin(records.PersonaQueuedWork)
PersonaHandoffInboxItem = twin(records.PersonaHandoffInboxItem)
PersonaValueReceipt = twin(records.PersonaValueReceipt)
PersonaDiagnostic = twin(records.PersonaDiagnostic)
DeadLetter = twin(records.DeadLetter)
AuditNotice = twin(records.AuditNotice)
#: The status as published: value receipts are spliced in already encoded.
PersonaStatus = twin(records.PersonaStatus, value_receipts=list[msgspec.Raw])

encoder: msgspec.json.Encoder = msgspec.json.Encoder()
encode: Callable[[Any], bytes] = encoder.encode


def decoder(kind: TypeForm[_T]) -> msgspec.json.Decoder[_T]:
    return msgspec.json.Decoder(kind)


def from_model(model: BaseModel) -> msgspec.Struct:
    """A validated contract model as its twin."""
    return msgspec.convert(model.model_dump(), twin(type(model)))


def to_builtins(value: Any) -> Any:
    """Plain JSON-like data (dicts, lists) of a twin, e.g. for an outbox payload."""
    return msgspec.to_builtins(value)
