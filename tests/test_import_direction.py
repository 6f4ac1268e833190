"""The import direction of DESIGN.md: control_plane <- workloads <- {sim, live} <- sagellm.

An AST scan of every module, so a forbidden import fails the suite the day it is written.
control_plane may import only the standard library, numpy and itself.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"control_plane", "workloads", "sim", "live", "sagellm"}
ALLOWED_PROJECT = {
    "control_plane": {"control_plane"},
    "workloads": {"control_plane", "workloads"},
    "sim": {"control_plane", "workloads", "sim"},
    "live": {"control_plane", "workloads", "live"},
    "sagellm": PROJECT,
}
CORE_THIRD_PARTY = {"numpy"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_import_direction(package):
    violations = []
    for path in _modules(package):
        for line, top in _imports(path):
            rel = path.relative_to(ROOT)
            if top in PROJECT and top not in ALLOWED_PROJECT[package]:
                violations.append(f"{rel}:{line} imports {top}")
            if package == "control_plane" and top not in PROJECT and not (
                    top in sys.stdlib_module_names or top in CORE_THIRD_PARTY
                    or top == "__future__"):
                violations.append(f"{rel}:{line} imports third-party {top}")
    assert not violations, "forbidden imports:\n" + "\n".join(violations)


def test_scan_sees_the_packages():
    assert _modules("control_plane"), "no control_plane modules found: the scan is blind"
    assert ("control_plane" in {t for _, t in _imports(ROOT / "control_plane" / "manager.py")})
