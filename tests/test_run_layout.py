"""The run package's shape (issue 16): outputs/ and the layers under it never import run/, each
run/ module stays small, and run() reads as a short list of steps."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlx_clip"
LOWER = ("outputs", "train", "data", "models")


def _imported(path: Path) -> set[str]:
    """Absolute names of what a module imports (relative imports resolved), type-only ones too."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # a package's __init__ too
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_lower_layers_never_import_run():
    upward = {str(path.relative_to(PACKAGE)): sorted(n for n in _imported(path) if n.startswith("mlx_clip.run"))
              for layer in LOWER for path in (PACKAGE / layer).rglob("*.py")}
    assert {k: v for k, v in upward.items() if v} == {}


def test_run_modules_are_small_and_run_is_a_short_list_of_steps():
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (PACKAGE / "run").glob("*.py")}
    assert max(sizes.values()) <= 300, sizes
    tree = ast.parse((PACKAGE / "run" / "loop.py").read_text(encoding="utf-8"))
    (run,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert run.end_lineno - run.lineno < 50
