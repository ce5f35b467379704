"""The core imports numpy and scipy only: no torch, no Lightning, not even inside a function.

Every module under ``lightning_scaling.core`` is imported (and a fit run) in a fresh
interpreter where the heavy frameworks cannot be imported; any attempt is recorded and fails
the test. The source is also scanned, so an import inside a function that the run did not
reach still fails.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning_scaling

BLOCKED = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics",
           "tensorboard", "matplotlib", "optuna", "pandas")
CORE = Path(lightning_scaling.__file__).resolve().parent / "core"

_PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys

BLOCKED = set(json.loads(sys.argv[1]))
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is blocked in the core purity test")
        return None

sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    sys.modules.pop(name, None)

try:
    import torch  # the blocker must work, or this test could not fail
    blocker_works = False
except ImportError:
    blocker_works = True
attempts.clear()

import numpy as np
import lightning_scaling.core as core

names = [m.name for m in pkgutil.walk_packages(core.__path__, "lightning_scaling.core.")]
for name in names:
    importlib.import_module(name)

x = np.arange(1.0, 101.0)
fit = core.fit_curve(x, 2.0 + 8.0 * x**-0.5)
lr = np.r_[np.full(300, 1e-3), np.linspace(1e-3, 1e-4, 101)]
sfit = core.fit_curve(x, 2.0 + 8.0 * (x * 1e-3)**-0.5, lr=lr)
core.CurveFit.from_dict(sfit.to_dict()).predict(400.0)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"blocker_works": blocker_works, "attempts": attempts, "loaded": loaded,
                  "modules": names, "ok": [fit.ok, sfit.ok]}))
"""


def test_core_imports_without_torch_or_lightning(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(CORE.parent.parent))
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(BLOCKED)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["blocker_works"]
    assert report["attempts"] == [] and report["loaded"] == [], report
    assert "lightning_scaling.core.forecaster.fit" in report["modules"]
    assert len(report["modules"]) >= 20 and report["ok"] == [True, True]


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_no_core_module_imports_a_framework_anywhere_in_its_source():
    sources = sorted(CORE.rglob("*.py"))
    assert len(sources) >= 20
    offenders = {str(p.relative_to(CORE)): sorted(_imported_roots(ast.parse(p.read_text())) & set(BLOCKED))
                 for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}
    # the scan itself sees imports inside functions
    assert _imported_roots(ast.parse("def f():\n    import torch.nn\n")) == {"torch"}


def _module_name(path: Path) -> str:
    parts = ["lightning_scaling", "core", *path.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_imports(path: Path, modules: set[str]) -> set[str]:
    """The core modules ``path`` imports (relative imports resolved; ``from . import x`` of a
    submodule counts as importing that submodule)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        target = f"{base}.{node.module}" if node.module else base
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in modules else target)
    return out & modules


def test_core_modules_import_each_other_one_way_only():
    sources = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {m: _core_imports(p, set(sources)) for m, p in sources.items()}
    assert "lightning_scaling.core.agnostic" in graph["lightning_scaling.core.curve"]
    assert "lightning_scaling.core.forecaster" in graph["lightning_scaling.core.curve"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path + [m, n]
            if n not in state and (found := cycle_from(n, path + [m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert cycle_from(m, []) is None
