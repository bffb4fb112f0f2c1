"""The house's import direction, read from the AST of every module (nothing is imported to check):
launch -> trainer -> parallel; planner is pure numpy/scipy and imports nothing of trainer, launch or
parallel but the plain `parallel.layout` dataclass and `parallel.stage_cut` (no torch in either); planner.scaling and planner.layout do not import
each other; trainer/ never reads os.environ or sys.argv (launch/ hands it everything); fault injection
(trainer.faults) is imported only by its callback (and tests, which are not checked here)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("launch", "trainer", "parallel", "planner")

# (modules under this prefix, imports they must not make); the longest matching prefix adds its
# rules to those of shorter ones.
FORBIDDEN = {
    "planner": ("torch", "deepspeed", "trainer", "launch", "parallel"),
    "planner.scaling": ("planner.layout",),
    "planner.layout": ("planner.scaling",),
    "parallel": ("trainer", "launch"),
    "trainer": ("launch",),
}
ALLOWED = {"planner": ("parallel.layout", "parallel.stage_cut")}   # exceptions to the prefix's rules
NO_ENVIRONMENT = ("trainer", "parallel", "planner")
# modules that only these may import: drills stay out of the loop, the step and the engines
ONLY_IMPORTED_BY = {"trainer.faults": ("trainer.callbacks.fault_injection",)}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted module) for every import, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if node.module is None else base) for alias in node.names]
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """os.environ / os.getenv / sys.argv, however they are reached."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if dotted in ("os.environ", "os.getenv", "sys.argv"):
                found.append((node.lineno, dotted))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                      if a.name in ("environ", "getenv", "argv")]
    return found


def from_imported(tree: ast.AST) -> list[tuple[int, str]]:
    """`from a import b` as a.b, for the names that may be modules (absolute imports)."""
    return [(node.lineno, f"{node.module}.{alias.name}") for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level for alias in node.names]


def violations(root: Path) -> list[str]:
    """Every forbidden import under `root`'s packages, as 'path:line: module imports name'."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            tree = ast.parse(path.read_text(), filename=str(path))
            where = path.relative_to(root)
            rules = [(p, bad) for p, bads in FORBIDDEN.items() if _matches(module, p) for bad in bads]
            allowed = [ok for p, oks in ALLOWED.items() if _matches(module, p) for ok in oks]
            for line, name in imported_names(tree, module, path.name == "__init__.py"):
                if any(_matches(name, ok) for ok in allowed):
                    continue
                for prefix, bad in rules:
                    if _matches(name, bad):
                        problems.append(f"{where}:{line}: {module} imports {name} ({prefix} must not import {bad})")
            for line, name in imported_names(tree, module, path.name == "__init__.py") + from_imported(tree):
                for guarded, importers in ONLY_IMPORTED_BY.items():
                    if _matches(name, guarded) and module != guarded and module not in importers:
                        problems.append(f"{where}:{line}: {module} imports {guarded} (only "
                                        f"{', '.join(importers)} may)")
            if any(_matches(module, p) for p in NO_ENVIRONMENT):
                problems += [f"{where}:{line}: {module} reads {what} (only launch/ may)"
                             for line, what in environment_reads(tree)]
    return problems


def test_import_direction():
    assert violations(REPO) == []


def test_a_forbidden_import_is_caught(tmp_path):
    """The checker is not vacuous: a temporary tree with one violation of each rule."""
    bad = {
        "planner/__init__.py": "",
        "planner/uses_torch.py": "import torch.nn as nn\n",
        "planner/scaling/__init__.py": "",
        "planner/scaling/peeks.py": "from planner.layout.memory import stage_memory\n",
        "planner/layout/__init__.py": "from ..scaling import law\n",
        "planner/fine.py": "from parallel.layout import Layout\nimport numpy\n",
        "parallel/__init__.py": "",
        "parallel/reaches_up.py": "from trainer.config import Config\n",
        "trainer/__init__.py": "",
        "trainer/calls_cli.py": "import launch.cli\n",
        "trainer/reads_env.py": "import os\nrank = os.environ['RANK']\n",
        "trainer/faults.py": "",
        "trainer/drills_in_the_loop.py": "from trainer import faults\n",
        "launch/__init__.py": "import trainer, parallel, planner\nimport os\nos.environ.get('RANK')\n",
    }
    for name, text in bad.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    expected = ["planner/uses_torch.py:1: planner.uses_torch imports torch.nn",
                "planner/scaling/peeks.py:1: planner.scaling.peeks imports planner.layout.memory",
                "planner/layout/__init__.py:1: planner.layout imports planner.scaling ",
                "parallel/reaches_up.py:1: parallel.reaches_up imports trainer.config",
                "trainer/calls_cli.py:1: trainer.calls_cli imports launch.cli",
                "trainer/reads_env.py:2: trainer.reads_env reads os.environ",
                "trainer/drills_in_the_loop.py:1: trainer.drills_in_the_loop imports trainer.faults"]
    for line in expected:
        assert any(problem.startswith(line) for problem in found), (line, found)
    assert len(found) == len(expected), found
