"""The layers of DESIGN.md import only what they may: a lower one never a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "voicesim"

# The shared private modules at the top of the package (errors, statistics, the
# capture format, ...) sit below every layer. The other top-level modules (cli.py,
# _swarm_command.py, _embedded.py, __main__.py) are edges that may join layers.
SHARED = frozenset(
    {
        "_capture_format",
        "_distributions",
        "_exceptions",
        "_histogram",
        "_stats",
        "_thresholds",
        "_version",
    }
)
EDGES = frozenset({"__init__", "__main__", "cli", "_embedded", "_swarm_command"})

#: What each layer may import besides itself and the shared modules.
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "media": frozenset({"protocol"}),
    "voice": frozenset({"protocol", "media"}),
    "engine": frozenset({"protocol", "media", "voice"}),
    "emulator": frozenset({"protocol", "media", "voice"}),
    "agent": frozenset({"protocol", "media", "voice"}),
    # A notebook imports analysis without trio or discord.py being started.
    "analysis": frozenset(),
}


def _imported_parts(path: Path) -> set[str]:
    """The first component under ``voicesim`` of every import in ``path``."""
    parts: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "voicesim" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    """Every module of ``layer`` imports only lower layers and the shared modules."""
    allowed = ALLOWED[layer] | SHARED | {layer}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        wrong = _imported_parts(path) - allowed
        assert not wrong, f"{path.relative_to(PACKAGE)} imports voicesim.{wrong}"


def test_every_top_level_module_is_shared_or_an_edge() -> None:
    """A new top-level module must say which it is, so the rules above cover it."""
    assert {path.stem for path in PACKAGE.glob("*.py")} == SHARED | EDGES


def test_shared_modules_import_no_layer() -> None:
    """The shared private modules stay below every layer."""
    for stem in sorted(SHARED):
        wrong = _imported_parts(PACKAGE / f"{stem}.py") & set(ALLOWED)
        assert not wrong, f"{stem}.py imports voicesim.{wrong}"
