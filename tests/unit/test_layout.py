"""The package layout keeps its promises: dependencies point one way, rooms stay small.

Parts (folders under ``chromasnap/``) and what each may import besides itself
and the shared top-level modules (settings, logs, resource identity):

- ``engine`` — nothing else: records only.
- ``storage`` — ``engine`` (the record types deltas carry).
- ``api`` — ``engine`` (errors, filters, distances).
- ``writer``, ``compactor``, ``reader`` — ``engine``, ``storage``, ``api``; never each other.
- ``pool`` — the roles it runs for each of its collections, and what they use.
- ``operator`` — nothing of the data plane: it meets it through settings and
  the status report (``chromasnap.resource``).
- ``cli`` — anything: it wires the parts together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "operator" / "chromasnap"
SHARED = {"config", "logs", "resource", "__init__", "__version__"}
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "storage": {"engine"},
    "api": {"engine"},
    "writer": {"engine", "storage", "api"},
    "compactor": {"engine", "storage", "api"},
    "reader": {"engine", "storage", "api"},
    "pool": {"engine", "storage", "api", "writer", "compactor", "reader"},
    "operator": set(),
    "cli": {"engine", "storage", "api", "writer", "compactor", "reader", "pool", "operator"},
    "__main__": {"cli"},
}
#: A module longer than this says why in its docstring (a line starting "Size:").
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    """Top-level chromasnap parts imported by ``path`` (at any depth, lazily or not)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "chromasnap":
                names = [f"chromasnap.{a.name}" for a in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "chromasnap" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_part_is_a_known_folder() -> None:
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ALLOWED) - {"__main__"}
    loose = {p.stem for p in PKG.glob("*.py")}
    assert loose <= SHARED | {"__main__"}, f"modules outside any part: {loose - SHARED}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_dependencies_point_one_way(path: Path) -> None:
    part = _part(path)
    if part in SHARED:
        # Shared modules are below every part.
        assert _imported_parts(path) <= SHARED, path
        return
    bad = _imported_parts(path) - SHARED - ALLOWED[part] - {part}
    assert not bad, f"{path.relative_to(PKG)} ({part}) imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_modules_are_small_or_say_why(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert any(line.startswith("Size:") for line in doc.splitlines()), (
        f"{path.relative_to(PKG)} has {lines} lines; split it or say why in a 'Size:' line"
    )


def test_tests_mirror_the_parts() -> None:
    tests = Path(__file__).resolve().parent
    unit_parts = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert unit_parts <= set(ALLOWED) - {"__main__"}, unit_parts - set(ALLOWED)
