"""Writes ``streams/wire.pyi``, the type stub of :mod:`streams.wire`.

The fast twins are built at run time (``msgspec.defstruct``), so a type checker cannot
see their fields; the stub declares them as the ``msgspec.Struct`` classes they are,
field by field, from the twins themselves (so from the contract models): same names,
types and defaults, with nested records as their twins and closed sets of values as the
contract's ``Literal`` aliases. The module's other names come from its source: functions
with their signatures (``twin`` and ``from_model`` also get one overload per record, its
twin as the result) and annotated variables.

    python -m streams.wirestub            # print the stub
    python -m streams.wirestub --write    # write streams/wire.pyi (make wire-stub)

``tests/streams/test_wirestub.py`` fails when the committed stub is not what this writes
now: a contract model that gains a field needs the stub written again.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import subprocess
import sys
import tokenize
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
import msgspec.structs
from pydantic import BaseModel

from . import records, wire

SOURCE = Path(wire.__file__)
STUB = SOURCE.with_suffix(".pyi")

#: Functions that map a contract model (class or instance) to its twin (class or
#: instance): the stub gives them one overload per record.
_MODEL_TO_TWIN = {"twin": True, "from_model": False}  # name -> takes the model class

_HEADER = '''"""Type stub of :mod:`streams.wire`, written by ``python -m streams.wirestub --write``
(``make wire-stub``) from the contract models: do not edit it by hand."""
'''


class StubError(Exception):
    """Something in :mod:`streams.wire` that the generator cannot declare."""


def render() -> str:
    """The stub, formatted as the project's formatter would."""
    tree = ast.parse(SOURCE.read_text())
    body = "\n".join(_body(tree))
    return _format(_HEADER + "\n" + _imports_for(tree, body) + "\n\n" + body)


def _body(tree: ast.Module) -> Iterator[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_typevar(node.value):
            yield ast.unparse(node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    yield _twin_class(target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if not node.target.id.startswith("_"):
                yield f"{node.target.id}: {ast.unparse(node.annotation)}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield from _function(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            raise StubError(f"class {node.name}: only generated twins can be declared; move it out of streams.wire")


def _is_typevar(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "TypeVar"


def _twin_class(name: str) -> str:
    kind = getattr(wire, name)
    if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct) and kind.__name__ == name):
        raise StubError(f"{name}: a public variable of streams.wire needs an annotation (or to be a twin)")
    keywords = ""
    parameters = inspect.signature(kind).parameters.values()
    if parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters):
        keywords += ", kw_only=True"
    config = kind.__struct_config__
    if config.frozen:
        keywords += ", frozen=True"
    if not config.gc:
        keywords += ", gc=False"
    lines = [f"class {name}(msgspec.Struct{keywords}):"]
    model = getattr(records, name, None)
    if isinstance(model, type) and issubclass(model, BaseModel) and model.__doc__:
        lines.append(_docstring(model.__doc__, "    "))
    for field in msgspec.structs.fields(kind):
        declaration = f"    {field.name}: {_type(field.type)}"
        default = _default(field)
        lines.append(declaration if default is None else f"{declaration} = {default}")
    if len(lines) == 1:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


#: The contract's named ``Literal`` types, by identity (the twins keep the very objects).
_LITERALS = {id(value): name for name, value in vars(records).items() if get_origin(value) is Literal}


_CONTAINERS = {kind: kind.__name__ for kind in (list, dict, set, frozenset, tuple)}


def _type(annotation: Any) -> str:
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    alias = _LITERALS.get(id(annotation))
    if alias is not None:
        return f"records.{alias}"
    origin = get_origin(annotation)
    if origin is Literal:
        return "Literal[" + ", ".join(_value(item) for item in get_args(annotation)) + "]"
    if origin in (Union, types.UnionType):
        return " | ".join(_type(item) for item in get_args(annotation))
    container = _CONTAINERS.get(origin)
    if container is not None:
        return f"{container}[" + ", ".join("..." if a is ... else _type(a) for a in get_args(annotation)) + "]"
    if isinstance(annotation, type):
        if annotation in (str, int, float, bool, bytes):
            return annotation.__name__
        if annotation is msgspec.Raw:
            return "msgspec.Raw"
        name = annotation.__name__
        if getattr(wire, name, None) is annotation:  # a twin, by its name in streams.wire
            return name
    raise StubError(f"cannot declare the type {annotation!r} (a twin that streams.wire does not export?)")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise StubError(f"cannot write the value {value!r}")


def _default(field: msgspec.structs.FieldInfo) -> str | None:
    """The default as the stub writes it (``...``: one it cannot spell out), None if required."""
    if field.required:
        return None
    if field.default is not msgspec.NODEFAULT:
        try:
            return _value(field.default)
        except StubError:
            return "..."
    made = field.default_factory()
    if isinstance(made, (list, dict)) and not made:
        return repr(made)
    if isinstance(made, msgspec.Struct) and made == type(made)():
        return f"msgspec.field(default_factory={_type(type(made))})"
    return "..."


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[str]:
    signature = f"({ast.unparse(node.args)})"
    if node.returns is not None:
        signature += f" -> {ast.unparse(node.returns)}"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    decorators = [f"@{ast.unparse(d)}" for d in node.decorator_list]
    takes_class = _MODEL_TO_TWIN.get(node.name)
    if takes_class is not None:
        parameter = node.args.posonlyargs[0] if node.args.posonlyargs else node.args.args[0]
        for model, kind in _model_twins():
            given, made = (f"type[records.{model}]", f"type[{kind}]") if takes_class else (f"records.{model}", kind)
            yield f"@overload\n{prefix} {node.name}({parameter.arg}: {given}) -> {made}: ..."
        decorators.append("@overload")
    doc = ast.get_docstring(node, clean=True)
    body = f"\n{_docstring(doc, '    ')}" if doc else " ..."
    yield "\n".join([*decorators, f"{prefix} {node.name}{signature}:{body}"]) + "\n"


def _model_twins() -> Iterator[tuple[str, str]]:
    """(model, twin) names of the records whose exported twin is the one ``twin(model)`` and
    ``from_model`` give (not ``PersonaStatus``: it is exported with other types for a field)."""
    for name, kind in vars(wire).items():
        model = getattr(records, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel) and wire.twin(model) is kind:
            yield name, name


def _docstring(text: str, indent: str) -> str:
    lines = inspect.cleandoc(text).splitlines()
    return indent + '"""' + ("\n" + indent).join(lines).replace("\n" + indent + "\n", "\n\n") + '"""'


def _imports_for(tree: ast.Module, body: str) -> str:
    """The imports of ``streams.wire`` (those under ``if TYPE_CHECKING:`` too) that ``body``
    uses, one a line (the formatter sorts and merges them)."""
    imports = {"overload": "from typing import overload"}
    nodes = [
        *tree.body,
        *(
            inner
            for node in tree.body
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in node.body
        ),
    ]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name.partition(".")[0]] = ast.unparse(ast.Import(names=[alias]))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                imports[alias.asname or alias.name] = ast.unparse(
                    ast.ImportFrom(module=node.module, names=[alias], level=node.level)
                )
    tokens = tokenize.generate_tokens(io.StringIO(body).readline)
    used = {token.string for token in tokens if token.type == tokenize.NAME}  # (not in docstrings)
    return "\n".join(line for name, line in imports.items() if name in used)


def _format(text: str) -> str:
    """``text`` as the project's import sorter and formatter (ruff, its settings) write the stub."""
    text = _ruff(text, "check", "--select", "I", "--fix", "--quiet")
    return _ruff(text, "format")


def _ruff(text: str, *command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(STUB), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=SOURCE.parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise StubError(f"ruff {command[0]} failed on the stub: {(done.stdout + done.stderr).strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--write"]):
        print("usage: python -m streams.wirestub [--write]", file=sys.stderr)
        return 2
    try:
        stub = render()
    except StubError as exc:
        print(f"streams.wirestub: {exc}", file=sys.stderr)
        return 1
    if args:
        STUB.write_text(stub)
        print(f"wrote {STUB}", file=sys.stderr)
    else:
        sys.stdout.write(stub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
