"""The voice client: discord.py control plane, trio data plane, and the media clock."""

from __future__ import annotations

from voicesim.voice._clock import MediaClock, OutboundStream, Playback
from voicesim.voice._connection import (
    ConnectionStats,
    ReceivedFrame,
    Speech,
    VoiceConnection,
)
from voicesim.voice._control import (
    Bot,
    ChatMessage,
    ControlPlane,
    Target,
    VoiceCredentials,
)

__all__ = [
    "Bot",
    "ChatMessage",
    "ConnectionStats",
    "ControlPlane",
    "MediaClock",
    "OutboundStream",
    "Playback",
    "ReceivedFrame",
    "Speech",
    "Target",
    "VoiceConnection",
    "VoiceCredentials",
]
