"""The engine: sessions, the closed profile, measurement, captures and progress.

It knows sessions and records, not Discord's internals: a voice session drives
:mod:`voicesim.voice`, and the target (a real service, a running emulator, or the
embedded one in a child process) is reached only through its URLs and tokens.
"""

from __future__ import annotations

from voicesim.engine._capture import CaptureWriter
from voicesim.engine._config import SwarmConfig, load_config
from voicesim.engine._swarm import Swarm, SwarmResult
from voicesim.engine._target import TargetSpec, read_emulator_state

__all__ = [
    "CaptureWriter",
    "Swarm",
    "SwarmConfig",
    "SwarmResult",
    "TargetSpec",
    "load_config",
    "read_emulator_state",
]
