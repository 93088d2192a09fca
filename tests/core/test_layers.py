"""The layers DESIGN.md draws, held by walking the import graph of the installed package.

Every import counts, lazy and TYPE_CHECKING ones too: they couple modules all the same. The
graph is read from the source (ast), so a module that is never imported at run time is held
to the same rules.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import failsight
from failsight.probes.registry import KINDS

ROOT = Path(failsight.__file__).resolve().parent
PREFIX = "failsight."


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    # failsight/agent and failsight/probes are links to the repository's agent/ and probes/:
    # followed (Path.rglob does not follow links before Python 3.13).
    paths = [
        Path(folder) / file
        for folder, _, files in os.walk(ROOT, followlinks=True)
        for file in files
        if file.endswith(".py") and "__pycache__" not in folder
    ]
    for path in sorted(paths):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("failsight", *parts)).removesuffix(".__init__")
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The names of our modules that `name` imports (resolved to modules we have)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                source = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in ("agent", "probes"):
                found.add(target)  # a bare top-level name: reported by its own test
                continue
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") >= 1 else "root"


def test_the_walk_sees_every_layer() -> None:
    layers = {_layer(name) for name in MODULES}
    assert {"core", "probes", "agent"} <= layers
    assert len(MODULES) > 40, sorted(MODULES)


def test_no_module_imports_the_bare_agent_or_probes_names() -> None:
    bare = {
        name: sorted(t for t in targets if t.split(".")[0] in ("agent", "probes"))
        for name, targets in GRAPH.items()
    }
    assert {name: t for name, t in bare.items() if t} == {}


def test_core_imports_nothing_of_ours_but_core() -> None:
    wrong = {
        name: sorted(t for t in targets if _layer(t) != "core")
        for name, targets in GRAPH.items()
        if _layer(name) == "core"
    }
    assert {name: t for name, t in wrong.items() if t} == {}


def test_probes_import_core_and_probes_never_the_agent() -> None:
    wrong = {
        name: sorted(t for t in targets if _layer(t) not in ("core", "probes"))
        for name, targets in GRAPH.items()
        if _layer(name) == "probes"
    }
    assert {name: t for name, t in wrong.items() if t} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_there_are_no_import_loops() -> None:
    assert _cycles(GRAPH) == []


def test_the_loop_finder_finds_a_loop() -> None:
    # The test above could pass by finding nothing at all: show that it finds a real one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_a_bare_import_of_agent_is_refused() -> None:
    # The repository root is on sys.path under pytest: `import agent` must not give a second
    # copy of the agent's modules beside failsight.agent.
    for bare in ("agent", "probes"):
        try:
            importlib.import_module(bare)
        except ImportError as exc:
            assert f"import failsight.{bare}" in str(exc)
        else:
            raise AssertionError(f"`import {bare}` worked")


def test_every_kind_is_one_probes_module_with_a_unique_name_and_key() -> None:
    names = [kind.name for kind in KINDS]
    keys = [kind.key for kind in KINDS]
    assert len(set(names)) == len(names)
    assert len(set(keys)) == len(keys)
    for kind in KINDS:
        assert kind.plan.__module__.startswith("failsight.probes."), kind.name
        assert kind.summary, kind.name
