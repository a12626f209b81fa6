"""Standing guards on the source tree, read from the files (AST), never by importing or running them:
file and function sizes, `losses/` importing torch only, the library never importing the lab, and no
import cycle between the packages of `src/posttrain`."""
import ast
import os
import sys

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "posttrain")
LIBRARY = ("core", "data", "losses", "rewards", "rollout", "algorithms", "diagnostics", "config", "errors",
           "api", "serve", "names", "console", "judge_label")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _sources():
    for folder, _, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, SRC), path


def _module(rel: str) -> str:
    """`core/engine.py` -> `posttrain.core.engine`; a package's `__init__.py` -> the package."""
    parts = ["posttrain"] + rel[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(rel: str, path: str) -> list[str]:
    """Every module `rel` imports, at any depth (function-level imports included), relative ones made absolute."""
    package = _module(rel) if rel.endswith("__init__.py") else _module(rel).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), filename=path)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                # `from . import x`: x may be a module of the package
                out += [module] + ([f"{module}.{a.name}" for a in node.names] if not node.module else [])
            else:
                out.append(node.module)
    return out


def _room(module: str) -> str:
    """The package of `posttrain` a module belongs to (`posttrain.core.engine` -> `core`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "posttrain"


def test_no_source_file_over_the_limit():
    long = [f"{rel}: {n} lines" for rel, path in _sources()
            if (n := sum(1 for _ in open(path, encoding="utf-8"))) > MAX_FILE_LINES]
    assert not long, f"files over {MAX_FILE_LINES} lines (split them by concept): {long}"


def test_no_function_over_the_limit():
    long = []
    for rel, path in _sources():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_losses_import_torch_only():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    bad = [f"{rel}: {m}" for rel, path in _sources() if rel.startswith("losses" + os.sep)
           for m in imports(rel, path)
           if not m.startswith("posttrain.losses") and m.split(".")[0] not in allowed]
    assert not bad, f"losses/ is pure torch (stdlib, torch, posttrain.losses); found: {bad}"


def test_the_library_never_imports_the_lab():
    bad = [f"{rel}: {m}" for rel, path in _sources() if _room(_module(rel)) in LIBRARY
           for m in imports(rel, path) if m == "posttrain.lab" or m.startswith("posttrain.lab.")]
    assert not bad, f"the library must not import posttrain.lab (resolve builtin: names at the entry points): {bad}"


def test_no_import_cycle_between_packages():
    graph = {}
    for rel, path in _sources():
        here = _room(_module(rel))
        for m in imports(rel, path):
            if m.startswith("posttrain.") and _room(m) != here:
                graph.setdefault(here, {}).setdefault(_room(m), rel)
    state, cycle = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                cycle.append(" -> ".join(trail + [nxt]) + f" (via {graph[node][nxt]})")
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycle, f"import cycle between packages: {cycle}"


@pytest.mark.parametrize("rel,expected", [("core/engine.py", "posttrain.core.engine"),
                                          ("losses/__init__.py", "posttrain.losses")])
def test_module_names(rel, expected):
    assert _module(rel.replace("/", os.sep)) == expected
