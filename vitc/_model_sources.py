"""The model sources read as text, without importing them (no torch): the names `@register_model`
registers, which `vitc train --model`, `vitc models` and the folders `vitc.downloads` reads are checked
against before anything heavy is imported; `vitc._zoo` digests the same files."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS_DIR = Path(__file__).with_name("models")


def registered_names() -> list[str]:
    """The names `@register_model` registers, read from the model sources' syntax trees (milliseconds,
    no torch): `vitc train` checks --model before importing anything heavy."""
    names = []
    for path in sorted(MODELS_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(_is_register(d) for d in node.decorator_list):
                names.append(node.name)
    return names


def _is_register(decorator: ast.expr) -> bool:
    func = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(func, ast.Name) and func.id == "register_model"
