"""The layering of DESIGN §2, checked by walking every import (module level and inside functions):
`app.py -> webapp -> explain -> dat_core`, `train -> dat_core`; gradio only in webapp/ and app.py;
no import cycles; no torchvision (or what pulls it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dat_core", "explain", "webapp", "train", "dat_explainer")
FORBIDDEN = {  # layer -> layers it must never import
    "dat_core": {"explain", "webapp", "train", "app"},
    "explain": {"webapp", "train", "app"},
    "train": {"explain", "webapp", "app"},
    "webapp": {"train", "app"},
}
GRADIO = {"gradio", "gradio_client"}
NEVER = {"torchvision", "timm", "torch_fidelity"}  # they pull torchvision (DESIGN §6)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    files["app"] = ROOT / "app.py"
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved; `from pkg import sub`
    counts as importing pkg.sub when that is a module of ours)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out.update(subs if subs and len(subs) == len(node.names) else [target, *subs])
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = project_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def layer(module: str) -> str:
    return module.split(".")[0]


def test_the_walker_sees_relative_and_lazy_imports(graph):
    assert "dat_core.pgd" in graph["dat_core.sampling"]                 # from .pgd import ...
    assert "dat_core.hub" in graph["dat_core.loading"]                  # lazy, inside a function
    assert "dat_core.checkpoint" in graph["dat_core.training.loop"]     # from ..checkpoint import ...
    assert "dat_core.models.wrn" in graph["dat_core.models"]            # from . import wrn


def test_layers_import_only_downwards(graph):
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                 if layer(t) in FORBIDDEN.get(layer(m), set()))
    assert not bad, "\n".join(bad)


def test_gradio_only_in_the_web_app(graph):
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                 if layer(t) in GRADIO and layer(m) not in ("webapp", "app"))
    assert not bad, "\n".join(bad)


def test_no_torchvision_anywhere(graph):
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets if layer(t) in NEVER)
    assert not bad, "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among our modules (as a path a -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t not in graph:
                continue
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["dat_core", "explain", "webapp"])
def test_modules_stay_small(package):
    """DESIGN §2: a module past ~400 lines is probably two."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, long


def test_only_the_spaces_entry_sits_at_the_root():
    """The web app lives in webapp/; app.py at the root is only the Spaces entry."""
    stray = sorted(p.name for p in ROOT.glob("*.py") if p.name != "app.py")
    assert not stray, stray
