"""Every third-party module the server and the Python client import is a declared dependency of
the package (`[project].dependencies`), so `pip install .` (the image, the Dockerfile, a user's
venv) has it. The dev extras install more, which is how an undeclared import once hid until the
image was built: `cryptography`, which every `hapaxd serve` needs."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "server" / "hapaxd", ROOT / "clients" / "python" / "hapax")
OURS = {"hapaxd", "hapax"}


def _imported_top_levels() -> dict[str, str]:
    """Top-level module -> one file importing it, for every absolute import."""
    found: dict[str, str] = {}
    for source in SOURCES:
        for path in source.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _needs(distribution: str) -> set[str]:
    """A distribution and everything it requires (without extras), by name."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    installed = set().union(*(_needs(name) for name in declared))
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_levels().items()):
        if module in OURS or module in sys.stdlib_module_names or module == "__future__":
            continue
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not distributions & installed:
            missing.append(f"{module} ({where}; from {sorted(distributions) or 'nowhere'})")
    assert not missing, "imported but not in [project].dependencies: " + ", ".join(missing)
