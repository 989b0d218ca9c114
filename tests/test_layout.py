"""The layout holds: imports only flow down the layers, no import cycle anywhere in `distill/`
(imports inside functions included), no module but rundir.py spells a path inside a run directory,
and the code is lint-clean. (No line cap: a file is one idea, split when a reader would want to.)"""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import ROOT

PACKAGE = ROOT / "distill"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name) if (Path(sys.executable).parent / name).exists() else shutil.which(name)


def test_import_linter_contracts_hold():
    """Breaks when a lower layer imports a higher one (say, the teacher importing a stage)."""
    r = subprocess.run([_bin("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
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
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_between_any_two_modules():
    """Breaks on any cycle, however deep (grimp reads imports inside functions too)."""
    graph = grimp.build_graph("distill")
    assert len(graph.modules) > 30
    assert _cycles(graph) == []
    # the check itself finds a planted cycle
    graph.add_import(importer="distill.io", imported="distill.stages.generate")
    assert _cycles(graph)


def _run_dir_names() -> set[str]:
    """Every file or folder name RunDir puts in a run directory, read off rundir.py's own literals."""
    tree = ast.parse((PACKAGE / "rundir.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.right,):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    names.add(side.value)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".jsonl") \
                and not node.value.startswith("."):  # requests.jsonl; not the ".jsonl" of f"requests.{w}.jsonl"
            names.add(node.value)
    return names - {"README.md"}


def _path_literals(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """String constants used as run-directory paths: the right side of a `/` join, or a whole literal
    that is an artefact's name or a path into one (prose that mentions a file is not a path)."""
    def is_path(text: str) -> bool:
        return text in names or text.split("/")[0] in names and "/" in text and " " not in text

    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and isinstance(node.right.value, str) and node.right.value.split("/")[0] in names:
            hits.append((node.lineno, node.right.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and is_path(node.value) \
                and "." in node.value.split("/")[-1]:
            hits.append((node.lineno, node.value))
    return sorted(set(hits))


def test_no_module_but_rundir_spells_a_run_directory_path():
    """Breaks when a stage writes `run_dir / "data" / "train.jsonl"` instead of asking RunDir."""
    names = _run_dir_names()
    assert {"data", "stats", "student", "students", "eval", "train.jsonl", "config.yaml", "report.md"} <= names
    offenders = []
    for f in sorted(PACKAGE.rglob("*.py")):
        if f.name == "rundir.py":
            continue
        for line, text in _path_literals(ast.parse(f.read_text()), names):
            offenders.append(f"{f.relative_to(ROOT)}:{line}: {text!r}")
    assert offenders == []
    planted = ast.parse('p = run_dir / "data" / "train.jsonl"\nq = "stats/generate.json"')
    assert {line for line, _ in _path_literals(planted, names)} == {1, 2}


def test_ruff_is_clean():
    r = subprocess.run([_bin("ruff"), "check", "distill", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_no_module_keeps_open_run_contexts_and_the_cli_hands_no_secret_through_the_environment():
    """Breaks when a module-level dict of open RunContexts comes back (the run context has one owner,
    who opens and closes it) or a command puts a key into os.environ for a flow to find."""
    registries, env_writes = [], []
    for f in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and "RunContext]" in ast.unparse(node):
                registries.append(f"{f.relative_to(ROOT)}:{node.lineno}")
        if "cli" in f.parts:
            for node in ast.walk(tree):
                text = ast.unparse(node) if isinstance(node, (ast.Assign, ast.Call)) else ""
                if ("os.environ[" in text and isinstance(node, ast.Assign)) or text.startswith("os.environ.update("):
                    env_writes.append(f"{f.relative_to(ROOT)}:{node.lineno}: {text[:80]}")
    assert registries == []
    assert [w for w in env_writes if "key" in w.lower() or "secret" in w.lower()] == []
