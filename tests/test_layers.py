"""The package's layers, read from the source: no import circles, and imports point down only.

    cli/ -> tensorboard/ -> trainer/ (the Lightning layer) -> monitor/ -> core/ ; io/ beside
    core (run summaries, tables, event files); errors.py at the bottom.

Every import statement counts, including one inside a function, so a late import cannot hide
a circle or an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_scaling

PACKAGE = Path(lightning_scaling.__file__).resolve().parent

# what each part may import from the package (besides itself and errors)
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "monitor": {"core", "io"},
    "trainer": {"core", "io", "monitor", "tensorboard"},
    "tensorboard": {"core", "io", "monitor"},
    "cli": {"core", "io", "tensorboard"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imported_modules(path: Path) -> set[str]:
    """The package modules ``path`` imports (absolute names), at any depth of the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lightning_scaling")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("lightning_scaling"):
                continue
            # "from . import mod" depends on mod; "from .mod import name" on mod itself
            submodules = {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
            found |= submodules if len(submodules) == len(node.names) else submodules | {target}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 2 or (len(bits) == 2 and bits[1] in ALLOWED) else None


def test_no_import_circles_between_modules():
    assert cycles(graph()) == []


def test_imports_point_down_only():
    wrong = []
    for module, targets in graph().items():
        src = part(module)
        if src not in ALLOWED:
            continue
        for target in targets:
            dst = part(target)
            if dst is not None and dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "lightning_scaling.core.curve" in graph()["lightning_scaling.core"]
