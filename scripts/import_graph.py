"""The import graph of the tree, checked against its layering.

    .venv/bin/python scripts/import_graph.py          # the folder graph and any violation; exit 1 on one

Each top-level folder is one stage of the flow, listed from the bottom up in LAYERS. A module may import its
own folder and any folder below it, never one above: so there is no cycle between folders, and the lower
stages (core, student, memory, evaluation, teacher) never reach the agent, the server, the API or the CLI.
A name starting with one underscore is private to its module: no other module imports it or reads it
off an imported module. Lazy imports inside functions count like top-level ones (standard library `ast`).
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bottom -> top; one reading of this list is the flow: types and config, the student, what is remembered,
# how a student is measured, the teacher (and its RL), ARC tasks, serving, orchestration, HTTP, command line
LAYERS = ["core", "student", "memory", "evaluation", "teacher", "tasks", "serving", "agent", "api", "cli"]


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> project modules it imports
    private: list[str] = field(default_factory=list)  # "where: what" for every private name used across modules

    def folder_edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {f: set() for f in LAYERS}
        for m, targets in self.edges.items():
            for t in targets:
                a, b = m.split(".")[0], t.split(".")[0]
                if a != b:
                    out[a].add(b)
        return out

    def upward(self) -> list[str]:
        rank = {f: i for i, f in enumerate(LAYERS)}
        return sorted(f"{m} imports {t} ({m.split('.')[0]} is below {t.split('.')[0]})"
                      for m, ts in self.edges.items() for t in ts
                      if rank[t.split(".")[0]] > rank[m.split(".")[0]])

    def cycles(self) -> list[list[str]]:
        """Folder-level cycles (depth-first search over the folder graph)."""
        g, found, state = self.folder_edges(), [], {}

        def visit(n: str, path: list[str]) -> None:
            state[n] = 1
            for m in sorted(g[n]):
                if state.get(m) == 1:
                    found.append(path[path.index(m):] + [m])
                elif m not in state:
                    visit(m, path + [m])
            state[n] = 2

        for n in LAYERS:
            if n not in state:
                visit(n, [n])
        return found


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` refers to (a module, or a package's attribute -> the package)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def build(root: Path = ROOT) -> Graph:
    g = Graph()
    for folder in LAYERS:
        for p in sorted((root / folder).rglob("*.py")):
            g.modules[module_name(p, root)] = p
    for mod, path in g.modules.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> project module, for `module._private` reads
        targets = g.edges.setdefault(mod, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = resolve(node.module, g.modules)
                if base is None:
                    continue
                for a in node.names:
                    sub = resolve(f"{node.module}.{a.name}", g.modules)
                    if sub is not None and sub != base:  # `from pkg import module`
                        targets.add(sub)
                        aliases[a.asname or a.name] = sub
                    else:
                        targets.add(base)
                        if a.name.startswith("_") and not a.name.startswith("__") and base != mod:
                            g.private.append(f"{mod}: from {node.module} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    t = resolve(a.name, g.modules)
                    if t is not None:
                        targets.add(t)
                        top = a.name.split(".")[0]  # `import a.b` binds `a`
                        aliases[a.asname or top] = t if a.asname else (resolve(top, g.modules) or t)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = dotted(node.value)
                if owner is None or owner.split(".")[0] not in aliases:
                    continue
                root_name, _, rest = owner.partition(".")
                target = ".".join(filter(None, [aliases[root_name], rest]))
                if target in g.modules and target != mod:
                    g.private.append(f"{mod}: {owner}.{node.attr}")
        targets.discard(mod)
    return g


def main() -> int:
    g = build()
    for a, bs in g.folder_edges().items():
        print(f"{a:11s} -> {', '.join(sorted(bs, key=LAYERS.index)) or '-'}")
    problems = [f"upward: {x}" for x in g.upward()] + [f"cycle: {' -> '.join(c)}" for c in g.cycles()] \
        + [f"private: {x}" for x in g.private]
    for p in problems:
        print(p)
    print(f"{len(g.modules)} modules, {sum(map(len, g.edges.values()))} imports, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
