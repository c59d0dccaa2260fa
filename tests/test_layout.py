"""The package's shape (ARCHITECTURE.md): no function over 60 lines and no class over 150 in src/,
and the jobs in their subpackages."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "attention_unet"
MAX_FUNCTION, MAX_CLASS = 60, 150


def sizes() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{path.relative_to(SRC)}:{node.lineno} {node.name}"
                found.append((kind, where, node.end_lineno - node.lineno + 1))
    return found


def test_no_long_function_or_class() -> None:
    too_long = [
        f"{kind} {where}: {lines} lines"
        for kind, where, lines in sizes()
        if lines > (MAX_CLASS if kind == "class" else MAX_FUNCTION)
    ]
    assert not too_long, "\n".join(too_long)


def test_jobs_live_in_subpackages() -> None:
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert {"inference", "io", "model", "commands", "training", "napari_plugin"} <= packages
    assert not (SRC / "predict.py").exists() and not (SRC / "train.py").exists()


def test_segmenter_depends_on_no_command_module() -> None:
    tree = ast.parse((SRC / "segmenter.py").read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.startswith(("commands", "cli"))]
