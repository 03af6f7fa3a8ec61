"""The transitions read no clock and draw no randomness: ids and times come from the input."""

from __future__ import annotations

import ast
from pathlib import Path

TABLES = Path(__file__).resolve().parents[2] / "tables"
#: Calls that would make a transition depend on when or where it runs.
IMPURE = {"uuid1", "uuid4", "time", "time_ns", "monotonic", "perf_counter", "now", "utcnow", "today", "urandom"}


def test_no_transition_reads_the_wall_clock_or_draws_a_random_id():
    found = []
    for path in sorted(TABLES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in IMPURE:
                    found.append(f"{path.name}:{node.lineno} calls {name}()")
    assert found == []
