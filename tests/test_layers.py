"""The layers of DESIGN.md hold: the import-linter contracts, and no import of edgefault inside a function.

The contracts (``[tool.importlinter]`` in pyproject.toml, also run by ``make test`` as
``lint-imports``) see every import statement; this test adds the rule that none of
edgefault's own imports hides inside a function, where it could dodge a cycle unnoticed
at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter.cli import lint_imports

PACKAGE = Path(__file__).resolve().parent.parent / "edgefault"


def function_level_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every ``edgefault`` import inside a function or method of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    module = "." * inner.level + (inner.module or "")
                    if inner.level or module.split(".")[0] == "edgefault":
                        found.append((inner.lineno, module))
                elif isinstance(inner, ast.Import):
                    found += [(inner.lineno, a.name) for a in inner.names if a.name.split(".")[0] == "edgefault"]
    return found


def test_the_checker_sees_a_lazy_import():
    source = "import os\n\ndef f():\n    from edgefault.runtime import load_model\n    import numpy\n"
    assert function_level_imports(source) == [(4, "edgefault.runtime")]


def test_no_edgefault_import_inside_a_function():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for line, module in function_level_imports(path.read_text())]
    assert offenders == []


def test_import_linter_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(PACKAGE.parent)
    assert lint_imports(no_cache=True) == 0
