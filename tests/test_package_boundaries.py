"""What ships and what does not: the product imports no test or dev-only code, scripts no tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PRODUCT = ("agent", "memory", "graphs", "persona_agent")


def imported_roots(path: Path) -> set[str]:
    """Return the top-level package of every module `path` imports (absolute imports only)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize(
    ("folders", "forbidden"),
    [
        ((*PRODUCT, "server.py"), {"tests", "devtools"}),
        (("scripts", "devtools"), {"tests"}),
    ],
    ids=["product", "scripts-and-devtools"],
)
def test_no_import_reaches_into_a_folder_below(folders: tuple[str, ...], forbidden: set[str]) -> None:
    paths = [REPO_ROOT / f for f in folders if f.endswith(".py")] + sources(
        *(f for f in folders if not f.endswith(".py"))
    )
    assert len(paths) > len(folders)
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_roots(path) & forbidden)
        for path in paths
        if imported_roots(path) & forbidden
    }
    assert offenders == {}


def test_the_boundary_check_sees_an_import_from_tests(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("import os\nfrom tests.fakes import CountingChatModel\nfrom . import sibling\n")
    assert imported_roots(module) == {"os", "tests"}
