"""The package's shape (issue 16): imports run one way, scripts stay thin, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlx_clip"
SCRIPTS = [ROOT / f"{name}.py" for name in ("fetch", "finetune", "convert", "curve", "compare", "index", "search")]
MAX_LINES = 350
MAX_RUN_LINES = 50


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules `path` imports (at any depth: a function-level import is still an import)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}  # imports for type hints only run nothing
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in modules and candidate != name:
                found.add(candidate)
    return found


def test_no_import_cycle_in_the_package():
    modules = package_modules()
    graph = {name: imported_modules(path, modules) for name, path in modules.items()}
    # a package's __init__ re-exporting its children is not a cycle of logic
    for name in graph:
        graph[name] = {t for t in graph[name] if not (modules[t].name == "__init__.py" and name.startswith(t + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_scripts_are_thin_and_import_no_script():
    script_names = {p.stem for p in SCRIPTS}
    for script in SCRIPTS:
        tree = ast.parse(script.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & script_names, f"{script.name} imports a script"
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert node.module not in script_names, f"{script.name} imports the script {node.module}"
        code_lines = [line for line in script.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(code_lines) <= 12, f"{script.name} is {len(code_lines)} lines: the command belongs in mlx_clip/"
    for path in package_modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not (set(names) & script_names and not getattr(node, "level", 0)), \
                    f"{path} imports a top-level script"


def test_no_private_name_is_used_outside_its_module():
    modules = package_modules()
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{name} imports private names {private} from {node.module}"


def test_modules_are_small_and_run_is_short():
    sizes = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
    runs = []
    for path in (PACKAGE / "run").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "run":
                runs.append((path, node.end_lineno - node.lineno + 1))
    assert runs, "run() not found under mlx_clip/run/"
    for path, length in runs:
        assert length <= MAX_RUN_LINES, f"{path.name}: run() is {length} lines"


def test_no_private_attribute_of_another_object_is_read():
    """`model._tokenizer` from outside the class couples two modules through a detail
    (`os._exit` is the standard library's public name for an immediate exit)."""
    found = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "os"))):
                found.append(f"{name}:{node.lineno} .{node.attr}")
    assert not found, "private attributes read across objects: " + ", ".join(found)


LOWER_LAYERS = ("outputs", "train", "data", "models")


def test_lower_layers_never_import_run():
    """data/, models/, train/ and outputs/ are what run/ builds on: an import back up is a knot."""
    modules = package_modules()
    upward = {name: sorted(t for t in imported_modules(path, modules) if t.startswith("mlx_clip.run"))
              for name, path in modules.items() if name.split(".")[1:2] and name.split(".")[1] in LOWER_LAYERS}
    assert {k: v for k, v in upward.items() if v} == {}
