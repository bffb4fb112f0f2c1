"""The house's shape, held by tests: file sizes per folder, a loop that reads in half a screen and
never asks which backend it has, and a README whose map reaches every page in one click."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMITS = {"launch/commands": 150, "planner": 250, "trainer": 250}   # lines per file, each file under its folder


@pytest.mark.parametrize("folder", list(LIMITS))
def test_files_stay_small(folder):
    limit = LIMITS[folder]
    too_long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob("*.py")
                if (n := len(p.read_text().splitlines())) >= limit}
    assert too_long == {}, f"over {limit} lines: {too_long}"


def _train_function() -> ast.FunctionDef:
    tree = ast.parse((REPO / "trainer" / "loop.py").read_text())
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")


def test_train_reads_in_half_a_screen():
    train = _train_function()
    assert train.end_lineno - train.lineno + 1 <= 40


def test_the_loop_never_asks_which_backend_it_has():
    """No getattr/hasattr/isinstance in the loop module, and no comparison with a backend's name."""
    tree = ast.parse((REPO / "trainer" / "loop.py").read_text())
    calls = [node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    assert not {"getattr", "hasattr", "isinstance"} & set(calls)
    names = {"ddp", "fsdp", "deepspeed", "pipeline"}
    compared = [c.value for node in ast.walk(tree) if isinstance(node, ast.Compare)
                for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
    assert not names & set(compared)


def _links(page: Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text())
            if not re.match(r"[a-z]+://", target) and not target.startswith("mailto:")]


def test_readme_is_short_and_its_map_reaches_every_page():
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) < 150
    linked = {(REPO / target.split("#")[0]).resolve() for target in _links(readme) if not target.startswith("#")}
    pages = {page.resolve() for page in (REPO / "docs").glob("*.md")} | {(REPO / "ARCHITECTURE.md").resolve()}
    assert pages - linked == set(), f"not linked from the README: {sorted(map(str, pages - linked))}"


@pytest.mark.parametrize("page", ["README.md", "ARCHITECTURE.md", *sorted(p.name for p in (REPO / "docs").glob("*.md"))])
def test_relative_links_resolve(page):
    path = REPO / page if (REPO / page).is_file() else REPO / "docs" / page
    broken = [target for target in _links(path)
              if not target.startswith("#") and not (path.parent / target.split("#")[0]).exists()]
    assert broken == [], broken
