"""Imports point down: every spanet2 module imports only its own package and the layers docs/ARCHITECTURE.md
allows (parsed with ast, so lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spanet2"

# the package root (`__init__`: only `__version__`) and the ground floor
GROUND = {"__init__", "errors", "atomic", "provenance", "bundle", "uncertainty"}
# What each part of the package may import besides itself (docs/ARCHITECTURE.md, "Which may import which").
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "uncertainty": set(),
    "atomic": {"errors"},
    "provenance": {"__init__", "errors", "atomic"},
    "bundle": {"__init__", "errors", "atomic"},
    "events": GROUND,
    "physics": GROUND | {"events"},
    "generate": GROUND | {"events", "physics"},
    "training": GROUND | {"events", "physics"},
    "stats": GROUND | {"events", "physics"},
    "hpc": GROUND | {"events", "physics", "training", "stats"},
    "report": GROUND | {"events", "physics", "generate", "training", "stats", "hpc"},
    "cli": GROUND | {"events", "physics", "generate", "training", "stats", "hpc", "report"},
    # the entry points: `python -m spanet2[.train|.test|.predict]`
    "__init__": set(),
    "__main__": {"cli"},
    "train": {"cli"},
    "test": {"cli"},
    "predict": {"cli"},
}


def _part(module: Path) -> str:
    """The layer a file belongs to: its top-level package, or the module name on the ground floor."""
    rel = module.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(rel: Path, source: str) -> list[tuple[int, str]]:
    """(line, top-level spanet2 part) of every import in `source` (the file spanet2/`rel`), absolute or relative."""
    found = []
    for node in ast.walk(ast.parse(source, filename=str(rel))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = ["spanet2", *rel.parts[:-1]][: len(rel.parts) - node.level + 1]
                names = [".".join([*base, node.module or ""]).rstrip(".")]
            elif node.module:
                names = [node.module]
            if names == ["spanet2"]:  # `from spanet2 import x`: x is the part (`__version__`: the root)
                names = [f"spanet2.{'__init__' if a.name.startswith('__') else a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "spanet2" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_part_is_declared():
    parts = {_part(m) for m in _modules()}
    assert parts <= set(ALLOWED), (
        f"undeclared parts (add them to the layering): {sorted(parts - set(ALLOWED))}"
    )


def test_imports_point_down():
    wrong = []
    for module in _modules():
        part = _part(module)
        for line, target in _imported_parts(module.relative_to(PACKAGE), module.read_text()):
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{module.relative_to(PACKAGE.parent)}:{line}: {part} imports {target}")
    assert not wrong, "imports that break the layering (docs/ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_the_checker_sees_lazy_relative_and_package_imports():
    source = (
        "def f():\n    from spanet2.training import model\n"
        "from ..stats import scan\nfrom . import layout\nfrom spanet2 import report, __version__\nimport numpy\n"
    )
    found = _imported_parts(Path("events/probe.py"), source)
    assert sorted(found) == [(2, "training"), (3, "stats"), (4, "events"), (5, "__init__"), (5, "report")]


def _modules() -> list[Path]:
    return sorted(m for m in PACKAGE.rglob("*.py") if "_bundle" not in m.parts)
