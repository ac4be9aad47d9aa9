"""The reference voice agent: the embedded default target's other half.

A Discord bot like any other (discord.py control plane, trio voice connection) that
detects the end of each speaker's utterance from the audio, transcribes it with
pocketsphinx, posts the transcript in the voice channel's text chat, waits a think
time and speaks a reply, and writes one timeline record per turn.
"""

from __future__ import annotations

from voicesim.agent._agent import FROM_TARGET, ReferenceAgent
from voicesim.agent._channel import ChannelStats
from voicesim.agent._config import AgentConfig
from voicesim.agent._timeline import Timeline, TurnRecord, read_timeline

__all__ = [
    "FROM_TARGET",
    "AgentConfig",
    "ChannelStats",
    "ReferenceAgent",
    "Timeline",
    "TurnRecord",
    "read_timeline",
]
