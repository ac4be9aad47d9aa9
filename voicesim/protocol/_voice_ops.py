"""Voice gateway v8 opcodes, and the limits the message classes check against."""

from __future__ import annotations

import enum

__all__ = [
    "SECRET_KEY_SIZE",
    "U16_MAX",
    "U32_MAX",
    "SpeakingFlags",
    "VoiceOp",
    "voice_where",
]


class VoiceOp(enum.IntEnum):
    """Voice gateway opcodes (reference section 2.3); 12-20 are known only from user docs."""

    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    VIDEO = 12
    CLIENT_DISCONNECT = 13
    SESSION_UPDATE = 14
    MEDIA_SINK_WANTS = 15
    VOICE_BACKEND_VERSION = 16
    CLIENT_FLAGS = 18
    CLIENT_PLATFORM = 20
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_PREPARE_EPOCH = 24
    DAVE_MLS_EXTERNAL_SENDER = 25
    DAVE_MLS_KEY_PACKAGE = 26
    DAVE_MLS_PROPOSALS = 27
    DAVE_MLS_COMMIT_WELCOME = 28
    DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    DAVE_MLS_WELCOME = 30
    DAVE_MLS_INVALID_COMMIT_WELCOME = 31


class SpeakingFlags(enum.IntFlag):
    """The bits of Speaking's ``speaking`` field."""

    NONE = 0
    MICROPHONE = 1
    SOUNDSHARE = 2
    PRIORITY = 4


def voice_where(op: int) -> str:
    """Name an op for error messages: ``voice op 0 (IDENTIFY)``."""
    try:
        return f"voice op {op} ({VoiceOp(op).name})"
    except ValueError:
        return f"voice op {op}"


U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
SECRET_KEY_SIZE = 32
