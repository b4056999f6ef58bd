"""Imports point down: the layers of docs/design.md ("Packages and layers"), as code.

Every module of ``src/offpost`` belongs to one package of the table below. A
module may import its own package, and packages of a lower rank; packages of
one rank are peers and do not import each other. Imports inside functions count
too (the CLI imports lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: Package → rank; higher ranks may import lower ones.
RANKS: dict[str, int] = {
    # base
    "offpost": 0,
    "offpost.errors": 0,
    "offpost.redact": 0,
    "offpost.connections": 1,
    "offpost.addresses": 1,
    "offpost.settings": 1,
    "offpost.recurrence": 1,
    # records
    "offpost.models": 2,
    "offpost.graph": 2,
    "offpost.views": 3,
    "offpost.outbox": 4,
    # services: tokens under posts and workers (peers), the scheduler above them
    "offpost.tokens": 5,
    "offpost.media": 5,
    "offpost.posts": 6,
    "offpost.workers": 6,
    "offpost.scheduler": 7,
    # interfaces
    "offpost.api": 8,
    "offpost.cli": 9,
}


def package_of(module: str) -> str:
    """The entry of :data:`RANKS` that ``module`` belongs to (the longest that prefixes it)."""
    parts = module.split(".")
    # The root package's own module is an entry; anything else under it needs its own.
    for length in range(len(parts), 1, -1):
        candidate = ".".join(parts[:length])
        if candidate in RANKS:
            return candidate
    if module == "offpost":
        return module
    raise AssertionError(f"{module} belongs to no layer: add its package to RANKS")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import of offpost in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "offpost"]
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert MODULES
    for path in MODULES:
        package_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_point_down(path: Path) -> None:
    source = package_of(module_name(path))
    wrong = [
        f"{path.relative_to(SRC)}:{line} imports {target}"
        for line, target in imports(path)
        if (other := package_of(target)) != source and RANKS[other] >= RANKS[source]
    ]
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_table_places_new_modules_and_reads_lazy_imports(tmp_path: Path) -> None:
    """A module of a package not in the table is refused, not taken for the root's; an
    import inside a function is read like one at the top."""
    with pytest.raises(AssertionError, match="belongs to no layer"):
        package_of("offpost.newthing")
    assert package_of("offpost.api.dashboard.routes") == "offpost.api"
    assert RANKS["offpost.posts"] == RANKS["offpost.workers"]  # peers: neither imports the other
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from offpost.api.app import create_app\n")
    assert imports(lazy) == [(2, "offpost.api.app")]
