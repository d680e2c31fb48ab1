"""A vendor lives in its adapter and its registry lines. Outside `providers/<type>.py` (and the
adapters built on it), `providers/registry.py` and `config/provider_types.py`, no module of
server/hapaxd names a vendor's provider type in its code: not in an identifier, an import, an
attribute or a string (comments and docstrings may, to explain). So adding a vendor is its
adapter module, its registry lines, its fake upstream and its docs, and a newcomer finds
everything a vendor does in its own file.

`openai` and `local` are left out: the OpenAI wire is the one the HTTP door speaks and several
types share, and "local" is an ordinary word.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from hapaxd.config.provider_types import TYPE_NAMES

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "server" / "hapaxd"
SHARED_NAMES = ("openai", "local")
VENDORS = tuple(t for t in TYPE_NAMES if t not in SHARED_NAMES)
REGISTRY = ("providers/registry.py", "config/provider_types.py")
# An adapter built on another vendor's wire names that vendor too (Vertex serves Gemini's).
BUILT_ON = {"vertex": ("gemini",)}
# A vendor whose adapter module is named otherwise (Azure OpenAI subclasses the OpenAI adapter).
MODULE = {"azure_openai": "openai"}


def _words(vendor: str) -> re.Pattern[str]:
    stem = vendor.split("_")[0]  # azure_openai: "azure"
    return re.compile(rf"(?<![a-z]){re.escape(stem)}", re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def code_words(source: str) -> list[tuple[int, str]]:
    """Every identifier, imported name, attribute and string constant of `source` with its
    line, less docstrings (comments are not in the tree)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    words: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            words += [(node.lineno, f"{module}.{a.name} {a.asname or ''}") for a in node.names]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            words.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            words.append((node.lineno, node.arg))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip:
                words.append((node.lineno, node.value))
    return words


def _allowed(relative: str, vendor: str) -> bool:
    if relative in REGISTRY:
        return True
    if relative.startswith("providers/"):
        adapter = relative.removeprefix("providers/").removesuffix(".py")
        return adapter == MODULE.get(vendor, vendor) or vendor in BUILT_ON.get(adapter, ())
    return False


def mentions(root: pathlib.Path = PACKAGE) -> list[str]:
    """`path:line: vendor in 'word'` for each vendor named where it should not be."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        words = code_words(path.read_text())
        for vendor in VENDORS:
            if _allowed(relative, vendor):
                continue
            pattern = _words(vendor)
            found += [
                f"{relative}:{line}: {vendor} in {word[:60]!r}"
                for line, word in words
                if pattern.search(word)
            ]
    return found


def test_no_module_outside_a_vendors_adapter_and_registry_lines_names_it() -> None:
    assert VENDORS, "the registry names no vendor"
    assert mentions() == []


@pytest.mark.parametrize(
    "source",
    [
        "from hapaxd.providers.bedrock import BedrockProvider\n",
        "import hapaxd.providers.gemini as g\n",
        "def f(kind):\n    return kind == 'vertex'\n",
        "x = settings.anthropic_version\n",
        "OLLAMA_HOST = 1\n",
        "def load(azure_deployment): pass\n",
    ],
)
def test_the_check_sees_each_kind_of_mention(tmp_path: pathlib.Path, source: str) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "m.py").write_text(source)
    assert len(mentions(tmp_path)) == 1, source


def test_comments_docstrings_and_other_words_are_not_mentions(tmp_path: pathlib.Path) -> None:
    (tmp_path / "providers").mkdir()
    (tmp_path / "providers" / "bedrock.py").write_text("KIND = 'bedrock'\n")  # its own adapter
    (tmp_path / "providers" / "vertex.py").write_text("from .gemini import G\n")  # built on it
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "m.py").write_text(
        '"""Bedrock and Gemini are named here, in a docstring."""\n'
        "# and vertex in a comment\n"
        "def f():\n"
        '    """Anthropic too."""\n'
        "    return 'localhost', 'openai', 'claude'\n"
    )
    assert mentions(tmp_path) == []
