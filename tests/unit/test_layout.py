"""The code's shape stays readable: no module of s3mpfs over 650 lines, no class over 450.
(The import layers are checked by lint-imports, from pyproject.toml, in scripts/test.sh.)"""

from __future__ import annotations

import ast
from pathlib import Path

import s3mpfs

PACKAGE = Path(s3mpfs.__file__).parent
MODULE_MAX, CLASS_MAX = 650, 450


def test_no_module_or_class_outgrows_its_wall() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if (lines := text.count("\n")) > MODULE_MAX:
            too_long.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef) or node.end_lineno is None:
                continue
            if (size := node.end_lineno - node.lineno + 1) > CLASS_MAX:
                too_long.append(f"{path.relative_to(PACKAGE)}: class {node.name}, {size}")
    assert not too_long, "split these (a class over ~400 lines wants a wall): " + str(too_long)
