"""Each package's ``__all__`` lists exactly its public names, and every one exists."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = (
    "voicesim",
    "voicesim.protocol",
    "voicesim.media",
    "voicesim.voice",
    "voicesim.engine",
    "voicesim.emulator",
    "voicesim.agent",
    "voicesim.analysis",
)


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees on the module: not private, not a submodule, not
    ``annotations`` (from ``from __future__ import annotations``)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_lists_every_public_name_once(name: str) -> None:
    """``__all__`` has no duplicates, resolves in full, and hides nothing public."""
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    for attribute in exported:
        assert getattr(module, attribute) is not None, attribute
    assert _public_names(module) <= set(exported)


def test_top_level_exposes_the_protocol_and_media_layers() -> None:
    """``import voicesim`` offers the layers' public names directly."""
    import voicesim
    import voicesim.media
    import voicesim.protocol

    assert set(voicesim.protocol.__all__) <= set(voicesim.__all__)
    for name in ("Fixture", "FixtureSet", "load_fixtures", "OpusDecoder", "level_dbfs"):
        assert name in voicesim.__all__
    for name in ("Swarm", "SwarmConfig", "Emulator", "ReferenceAgent"):
        assert name in voicesim.__all__
        assert name in dir(voicesim)


def test_plain_import_starts_neither_trio_nor_discord() -> None:
    """``import voicesim`` alone loads neither trio nor discord.py."""
    code = (
        "import sys, voicesim; "
        "print(sorted(m for m in ('trio', 'discord') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
