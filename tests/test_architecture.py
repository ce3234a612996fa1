"""The package's import rules (docs/architecture.md): each stage imports only stages below it, and the import
graph, with every import anywhere in a module (function-level and ``TYPE_CHECKING`` ones too), has no circle.
The checker parses source with ``ast``; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import denseood

CORE = {"errors", "_version", "io", "outdir", "dist", "config", "viz", "progress"}
BELOW = ["core", "data", "models", "scores", "infer", "s2m"]
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "data": {"core", "data"},
    "models": {"core", "data", "models"},
    "scores": {"core", "data", "models", "scores"},
    "infer": {"core", "data", "models", "scores", "infer"},
    "s2m": set(BELOW),
    "eval": {"core", "eval"},  # metric objects: nothing above errors/dist/io
    "train": {*BELOW, "eval", "train"},
    "commands": {*BELOW, "eval", "train", "commands"},
    "top": {*BELOW, "eval", "train", "commands", "top"},
}

#: circles allowed for a while (issue 20 item 5); empty since the "options" branch split the eval map writers
#: from the map source. Nothing may be added here.
TEMPORARY_CIRCLES: set[frozenset[str]] = set()


def stage_of(module: str, package: str) -> str:
    """'pkg.s2m.prompts' -> 's2m'; core modules -> 'core'; the package itself, cli and __main__ -> 'top'."""
    parts = module.split(".")
    if parts[0] != package or len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "top"
    head = parts[1]
    return "core" if head in CORE else head


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owner(name: str, known: set[str]) -> str | None:
    """The module of ``known`` that ``name`` (a module, or an attribute of one) lives in; None outside them."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def _imports(tree: ast.Module, module: str, is_pkg: bool, known: set[str]):
    """Yield (imported module, lineno) for every import of the package anywhere in a parsed file: relative
    imports resolved, ``from pkg import sub`` resolved to the submodule ``pkg.sub`` when it is one."""
    package = module.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name.split(".")[0] == package:
                yield name, node.lineno


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], list[str], dict[str, Path]]:
    """(module -> the package modules it imports anywhere, layer violations, module -> file) for the package
    folder ``root``."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        src = stage_of(mod, package)
        allowed = ALLOWED.get(src)
        if allowed is None:
            problems.append(f"{path}: unknown stage {src!r}; add it to the layer table")
            continue
        for target, line in _imports(tree, mod, path.name == "__init__.py", known):
            dst = stage_of(target, package)
            if dst not in allowed:
                problems.append(f"{path}:{line}: {mod} ({src}) imports {target} ({dst}), which is not below it")
            owner = _owner(target, known)
            if owner is not None and owner != mod:
                graph[mod].add(owner)
    return graph, problems, files


def check_imports(root: Path, package: str, allow: set[frozenset[str]] = frozenset()) -> list[str]:
    """Layer violations and import circles (naming their files) under the package folder ``root``; circles whose
    module set is in ``allow`` are left out."""
    graph, problems, files = import_graph(root, package)
    for circle in _circles(graph):
        if frozenset(circle) not in allow:
            rel = [str(files[m].relative_to(root.parent)) for m in circle]
            problems.append(f"import circle: {' <-> '.join(rel)}")
    return problems


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_denseood_imports_only_downward_and_has_no_import_circle():
    root = Path(denseood.__file__).parent
    assert check_imports(root, "denseood", TEMPORARY_CIRCLES) == []


def test_the_temporary_allowance_names_a_circle_that_still_exists():
    """An allowance outlives its circle only by mistake: each entry must still be a circle of the package."""
    graph, _, _ = import_graph(Path(denseood.__file__).parent, "denseood")
    assert TEMPORARY_CIRCLES <= {frozenset(c) for c in _circles(graph)}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


def test_checker_accepts_a_clean_synthetic_tree(tmp_path):
    root = _tree(tmp_path, {"data/reader.py": "from ..errors import E\n", "errors.py": "class E(Exception): pass\n",
                            "train/loop.py": "from ..data.reader import x\nfrom pkg.eval import m\n",
                            "eval/m.py": "from .. import dist\n", "dist.py": "",
                            "s2m/a.py": "from . import b\n", "s2m/b.py": "def f():\n    from ..data import reader\n"})
    assert check_imports(root, "pkg") == []


@pytest.mark.parametrize("rel, text, expect", [
    ("data/reader.py", "from ..train.loop import fit\n", "(data) imports pkg.train.loop (train)"),
    ("data/reader.py", "def f():\n    from pkg.s2m import x\n", "(data) imports pkg.s2m (s2m)"),  # function level too
    ("eval/m.py", "import pkg.models.net\n", "(eval) imports pkg.models.net (models)"),
    ("models/net.py", "from ..commands import run\n", "(models) imports pkg.commands (commands)"),
])
def test_checker_rejects_a_deliberate_upward_import(tmp_path, rel, text, expect):
    root = _tree(tmp_path, {rel: text, "train/loop.py": "", "s2m/__init__.py": "", "models/net.py": "",
                            "commands/__init__.py": ""} | {rel: text})
    problems = check_imports(root, "pkg")
    assert len(problems) == 1 and expect in problems[0], problems


@pytest.mark.parametrize("b_text", [
    "from .a import x\ny = 2\n",                                  # module level
    "def f():\n    from .a import x\n    return x\ny = 2\n",      # inside a function
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.s2m.a import x\n",   # typing only
    "from . import a\n",                                          # from package import submodule
    "import pkg.s2m.a as a\n",                                    # absolute
])
def test_checker_rejects_a_circle_at_any_level_naming_its_files(tmp_path, b_text):
    root = _tree(tmp_path, {"s2m/a.py": "from .b import y\nx = 1\n", "s2m/b.py": b_text})
    assert check_imports(root, "pkg") == ["import circle: pkg/s2m/a.py <-> pkg/s2m/b.py"]


def test_checker_finds_a_three_module_circle_through_a_package_init(tmp_path):
    root = _tree(tmp_path, {"models/a.py": "from .sub import thing\n", "models/sub/__init__.py": "from .c import thing\n",
                            "models/sub/c.py": "def thing():\n    from ..b import f\n", "models/b.py": "from . import a\n"})
    assert check_imports(root, "pkg") == ["import circle: pkg/models/a.py <-> pkg/models/b.py <-> "
                                          "pkg/models/sub/__init__.py <-> pkg/models/sub/c.py"]


def test_an_allowance_hides_only_its_own_circle(tmp_path):
    root = _tree(tmp_path, {"s2m/a.py": "from . import b\n", "s2m/b.py": "from . import a\n",
                            "data/c.py": "from . import d\n", "data/d.py": "def f():\n    from . import c\n"})
    allow = {frozenset({"pkg.s2m.a", "pkg.s2m.b"})}
    assert check_imports(root, "pkg", allow) == ["import circle: pkg/data/c.py <-> pkg/data/d.py"]


def test_allowed_values_are_written_once():
    """Every allowed-value tuple and default that help text lists (protocols, map formats, dtypes, StreetHazards
    conventions, prompter backbones and inputs, train --amp / --head, submit objects and tracks, --objects, the
    default score, --max-pixels, --work-size) is assigned in exactly one torch-free module; no other module of the
    package assigns the same name."""
    import ast

    import denseood

    PKG = Path(denseood.__file__).parent
    names = {"PROTOCOLS": "eval/protocols.py", "SAVE_FORMATS": "data/names.py", "MAX_PIXELS": "infer/names.py",
             "WORK_SIZE": "s2m/names.py", "MAP_FORMATS": None, "DTYPE_NAMES": "infer/names.py",
             "STREETHAZARDS_UNLABELED": "data/names.py", "UNLABELED_CONVENTIONS": None,
             "PROMPTER_BACKBONES": "s2m/names.py", "PROMPTER_INPUTS": "s2m/names.py", "AMP_MODES": "train/names.py",
             "HEADS": "models/names.py", "OBJECTS": "commands/submit/names.py", "TRACKS": "commands/submit/names.py",
             "OBJECT_ROUTES": "commands/_common.py", "DEFAULT_SCORE": "scores/names.py"}
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id in names and path.relative_to(PKG).as_posix() != names[t.id]:
                    found.append(f"{path.relative_to(PKG.parent)}:{node.lineno} assigns {t.id}")
    # the instance-AP and object protocols are other tuples of other names; they are allowed here
    found = [f for f in found if not f.startswith(("denseood/eval/instance_ap.py", "denseood/eval/objects.py"))]
    assert found == []
