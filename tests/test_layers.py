"""The package's shape: imports point down the layers, and functions and modules stay small.

Layers (a module may import its own layer's package and any layer below):

    core       _validation, color, io, masks, instances, boxes, rle, coco, metrics,
               detection_metrics, viz
    1          classical, nn
    2          engine
    3          localize, evaluate
    4          demo, serve
    5          cli

Every import counts, at module level or inside a function: a lazy import is for an optional
heavy dependency, not for hiding a cycle between our own packages.
"""

from __future__ import annotations

import ast
import io as _io
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "segloc"

CORE = {
    "_validation",
    "color",
    "io",
    "masks",
    "instances",
    "boxes",
    "rle",
    "coco",
    "metrics",
    "detection_metrics",
    "viz",
    "__init__",
}
RANK = {
    **dict.fromkeys(CORE, 0),
    "classical": 1,
    "nn": 1,
    "engine": 2,
    "localize": 3,
    "evaluate": 3,
    "demo": 4,
    "serve": 4,
    "cli": 5,
}
# the core modules' own order, lowest first: a core module imports only those before it
CORE_ORDER = [
    "__init__",
    "_validation",
    "color",
    "boxes",
    "io",
    "masks",
    "instances",
    "rle",
    "coco",
    "metrics",
    "detection_metrics",
    "viz",
]

MAX_FUNCTION_LINES = 120
MAX_MODULE_LINES = 1000


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: 'segloc.engine.train' -> 'engine'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported segloc module) for every import statement in ``path``."""
    tree = ast.parse(path.read_text())
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("segloc")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "segloc":
                found += [(node.lineno, f"segloc.{a.name}") for a in node.names]
            elif target.startswith("segloc"):
                found.append((node.lineno, target))
    return found


def upward_imports(root: Path = SRC) -> list[str]:
    """Every import that points up the layers (or sideways between two packages)."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        here = _module_name(path)
        unit = _unit(here)
        if unit not in RANK:
            problems.append(f"{path}: module {here} has no layer in tests/test_layers.py")
            continue
        for line, target in imports_of(path):
            other = _unit(target)
            if other not in RANK:
                # "from segloc import __version__" and the like
                if target.split(".")[1] in ("__version__",):
                    continue
                problems.append(f"{path}:{line}: imports {target}, which has no layer")
                continue
            if other == unit:
                continue
            if RANK[other] > RANK[unit] or (RANK[other] == RANK[unit] and RANK[unit] > 0):
                problems.append(
                    f"{path}:{line}: {here} (layer {RANK[unit]}) imports {target} "
                    f"(layer {RANK[other]})"
                )
            elif RANK[unit] == RANK[other] == 0 and CORE_ORDER.index(other) > CORE_ORDER.index(
                unit
            ):
                problems.append(f"{path}:{line}: core {here} imports {target}, which is above it")
    return problems


def test_layers_point_down():
    assert upward_imports() == []


def test_a_planted_upward_import_is_caught(tmp_path):
    """The walk fails on an upward edge: a copy of the package with engine importing cli."""
    import shutil

    copy = tmp_path / "segloc"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / "engine" / "run.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from segloc.cli import main\n")
    problems = _with_root(copy, upward_imports)
    assert any("engine.run" in p and "segloc.cli" in p for p in problems), problems
    # and a core module importing a package above it
    target = copy / "masks.py"
    target.write_text(target.read_text() + "\nfrom segloc.engine import run  # noqa\n")
    problems = _with_root(copy, upward_imports)
    assert any("segloc.masks" in p and "segloc.engine" in p for p in problems), problems


def _with_root(root: Path, func):
    global SRC
    saved = SRC
    SRC = root
    try:
        return func(root)
    finally:
        SRC = saved


# --------------------------------------------------------------------------- sizes


def _code_lines(source: str, start: int, end: int, docstring: tuple[int, int] | None) -> int:
    """Lines from ``start`` to ``end`` holding code: blank and comment-only lines and the
    docstring do not count."""
    lines = source.splitlines()[start - 1 : end]
    comment_only = set()
    for tok in tokenize.generate_tokens(_io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type == tokenize.COMMENT and not tok.line[: tok.start[1]].strip():
            comment_only.add(tok.start[0])
    count = 0
    for i, text in enumerate(lines, start=start):
        if not text.strip() or (i - start + 1) in comment_only:
            continue
        if docstring and docstring[0] <= i <= docstring[1]:
            continue
        count += 1
    return count


def long_functions(root: Path = SRC, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = None
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(
                getattr(first, "value", None), ast.Constant
            ):
                if isinstance(first.value.value, str):
                    doc = (first.lineno, first.end_lineno)
            n = _code_lines(source, node.lineno, node.end_lineno, doc)
            if n > limit:
                out.append(f"{path}:{node.lineno} {node.name}: {n} lines of code")
    return out


def test_no_function_over_120_lines():
    assert long_functions() == []


def test_no_module_over_1000_lines():
    big = [
        f"{p}: {n} lines"
        for p in sorted(SRC.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert big == []


@pytest.mark.parametrize("limit", [5])
def test_the_size_checks_can_fail(limit):
    """A limit that every real package exceeds is reported, so the checks above can fail."""
    assert long_functions(limit=limit)
