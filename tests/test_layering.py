"""The package layering (ARCHITECTURE.md, issue 13) checked over the source with ``ast``.

Every ``import`` counts, wherever it sits (module top, inside a function, under
``TYPE_CHECKING``), and relative imports are resolved to the module they name, so a rule
cannot be dodged by moving an import into a function. The rules:

- ``core`` imports no other first-party package; ``connectors`` imports only ``core``;
- ``nlu`` and ``vision`` do not import ``training``; ``vision`` does not import ``nlu``;
- ``bot_gateway`` does not import ``parley`` (``parley serve`` mounts the demo service);
- no router module under ``bot_gateway/api/`` imports another module of ``bot_gateway.api``,
  and outside that package only ``bot_gateway/app.py`` imports routers.

A failure lists every offending ``file:line -> module``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = (
    "core",
    "connectors",
    "training",
    "nlu",
    "vision",
    "bot_gateway",
    "parley",
    "console",
)


@dataclass(frozen=True)
class Import:
    """One imported module: the file (relative to the root) and line that import it."""

    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} -> {self.module}"


def module_name(path: Path, root: Path) -> str:
    """The dotted module a source file defines (``pkg/__init__.py`` is ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, *, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module ``source`` imports, as ``(line, dotted name)``, relative ones resolved.

    ``from a import b`` yields ``a.b`` as well as ``a``: ``b`` may be a module, and the rules
    are about modules (``from bot_gateway.api import chat`` imports the chat router).
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def imports_under(package: str) -> list[Import]:
    """The imports of every module in a first-party package directory."""
    found: list[Import] = []
    paths = sorted((ROOT / package).rglob("*.py"))
    assert paths, f"no modules under {package}/: a rule over a missing package checks nothing"
    for path in paths:
        name = module_name(path, ROOT)
        relative = path.relative_to(ROOT).as_posix()
        for line, target in imports_of(
            path.read_text(encoding="utf-8"), module=name, is_package=path.name == "__init__.py"
        ):
            found.append(Import(relative, line, target))
    return found


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def report(imports: list[Import]) -> list[str]:
    """One line per offending import statement (``from a import b`` yields ``a`` and ``a.b``)."""
    longest: dict[tuple[str, int], Import] = {}
    for i in imports:
        key = (i.path, i.line)
        if key not in longest or len(i.module) > len(longest[key].module):
            longest[key] = i
    return [str(longest[key]) for key in sorted(longest)]


def offenders(imports: list[Import], forbidden: tuple[str, ...]) -> list[str]:
    return report([i for i in imports if any(is_under(i.module, name) for name in forbidden)])


def test_the_import_reader_resolves_relative_and_nested_imports() -> None:
    """The checks below are only as good as this reader: it must see every kind of import."""
    source = (
        "import os\n"
        "from . import sibling\n"
        "from ..api import chat as c\n"
        "def later():\n"
        "    import training.jobs\n"
        "if TYPE_CHECKING:\n"
        "    from nlu.schemas import Parse\n"
    )
    found = imports_of(source, module="bot_gateway.api.bots", is_package=False)
    names = {name for _, name in found}
    assert {"os", "bot_gateway.api.sibling", "bot_gateway.api.chat", "training.jobs"} <= names
    assert "nlu.schemas.Parse" in names
    assert (5, "training.jobs") in found
    in_package = imports_of("from .x import y\n", module="core.backends", is_package=True)
    assert {name for _, name in in_package} == {"core.backends.x", "core.backends.x.y"}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        pytest.param("core", tuple(p for p in FIRST_PARTY if p != "core"), id="core-imports-none"),
        pytest.param(
            "connectors",
            tuple(p for p in FIRST_PARTY if p not in ("core", "connectors")),
            id="connectors-import-only-core",
        ),
        pytest.param("nlu", ("training",), id="nlu-not-training"),
        pytest.param("vision", ("training", "nlu"), id="vision-not-training-or-nlu"),
        pytest.param("bot_gateway", ("parley",), id="gateway-not-parley"),
    ],
)
def test_package_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    bad = offenders(imports_under(package), forbidden)
    assert not bad, f"{package} must not import {', '.join(forbidden)}:\n" + "\n".join(bad)


def test_no_router_imports_another_router() -> None:
    """Routers share code through bot_gateway/services, never through each other."""
    bad = report(
        [
            i
            for i in imports_under("bot_gateway/api")
            if is_under(i.module, "bot_gateway.api") and i.module != "bot_gateway.api"
        ]
    )
    assert not bad, "a router imports another module of bot_gateway.api:\n" + "\n".join(bad)


def test_only_the_app_imports_routers() -> None:
    """Outside bot_gateway/api/, only bot_gateway/app.py (which mounts them) imports routers."""
    bad = report(
        [
            i
            for package in FIRST_PARTY
            for i in imports_under(package)
            if is_under(i.module, "bot_gateway.api")
            and i.module != "bot_gateway.api"
            and not i.path.startswith("bot_gateway/api/")
            and i.path != "bot_gateway/app.py"
        ]
    )
    assert not bad, "only bot_gateway/app.py may import routers:\n" + "\n".join(bad)
