"""The schema revision this version of the code needs, read from the migration scripts without
importing Alembic or SQLAlchemy: every command that opens the status table checks it."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

#: The migration scripts, one revision each.
VERSIONS = Path(__file__).parent / "migrations" / "versions"


@functools.cache
def head_revision() -> str:
    """The newest revision: the one no migration names as its ``down_revision``."""
    revisions: set[str] = set()
    named_down: set[str] = set()
    for script in VERSIONS.glob("*.py"):
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                name = target.id if isinstance(target, ast.Name) else None
                if name == "revision":
                    revisions.add(ast.literal_eval(node.value))
                elif name == "down_revision":
                    down = ast.literal_eval(node.value)
                    named_down.update(down if isinstance(down, tuple | list) else [down])
    heads = revisions - named_down
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()
