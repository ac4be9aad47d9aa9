"""voicesim: load and stress testing for Discord voice agents.

The protocol layer, the media layer and the errors are imported eagerly; they start
no threads and import neither trio nor discord.py. The swarm, the emulator and the
reference agent are loaded on first use, so ``import voicesim.analysis`` in a notebook
stays light.
"""

from __future__ import annotations

import importlib
from typing import Any as _Any

from voicesim import protocol as protocol
from voicesim._exceptions import (
    ConfigError,
    DecryptionError,
    FixtureError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TransportError,
    VoiceConnectionClosed,
    VoiceSimError,
    VoiceTimeout,
)
from voicesim._version import __version__
from voicesim.media import (
    Fixture,
    FixtureSet,
    OpusDecoder,
    encode_pcm,
    level_dbfs,
    load_fixtures,
)
from voicesim.protocol import *  # noqa: F403
from voicesim.protocol import __all__ as _protocol_all

# Names that pull in trio or discord.py, resolved on first access.
_LAZY = {
    "Swarm": "voicesim.engine",
    "SwarmConfig": "voicesim.engine",
    "SwarmResult": "voicesim.engine",
    "TargetSpec": "voicesim.engine",
    "Emulator": "voicesim.emulator",
    "ReferenceAgent": "voicesim.agent",
}

__all__ = [
    "ConfigError",
    "DecryptionError",
    "Fixture",
    "FixtureError",
    "FixtureSet",
    "LocalProtocolError",
    "OpusDecoder",
    "ProtocolError",
    "RemoteProtocolError",
    "TransportError",
    "VoiceConnectionClosed",
    "VoiceSimError",
    "VoiceTimeout",
    "__version__",
    "encode_pcm",
    "level_dbfs",
    "load_fixtures",
    "protocol",
    *_protocol_all,
    *_LAZY,
]


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voicesim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
