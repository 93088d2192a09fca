#!/usr/bin/env python3
"""The code's shape in numbers: modules and lines, the largest modules and functions.

    python3 scripts/code_shape.py [REPO]      # default: this repository

Reads the source of agent/, probes/ and failsight/core/ (ast, nothing imported), so it also
measures an old checkout: `git worktree add /tmp/old REV && python3 scripts/code_shape.py /tmp/old`.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

LAYERS = ("agent", "probes", "failsight/core")


def main(root: Path) -> None:
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for layer in LAYERS:
        for folder, _, files in os.walk(root / layer):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = Path(folder) / name
                source = path.read_text()
                where = path.relative_to(root).as_posix()
                modules.append((source.count("\n"), where))
                for node in ast.walk(ast.parse(source)):
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                        size = (node.end_lineno or node.lineno) - node.lineno + 1
                        functions.append((size, f"{where}:{node.name}"))
    modules.sort(reverse=True)
    functions.sort(reverse=True)
    print(f"{len(modules)} modules, {sum(n for n, _ in modules)} lines")
    print("largest modules:   " + ", ".join(f"{w} {n}" for n, w in modules[:5]))
    print("largest functions: " + ", ".join(f"{w} {n}" for n, w in functions[:5]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
