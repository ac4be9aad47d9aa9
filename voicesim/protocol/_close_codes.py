"""Voice gateway close codes, and what a client should do after each.

The codes and their meanings are Discord's (reference section 2.6), plus 4013 from the
unofficial user docs. What to do next is a blend of the two client libraries:
discord.js resumes on anything below 4000 and on 4015, both libraries stop for good on
4014, 4021 and 4022, and everything else costs a fresh session. voicesim also stops on
4004 (the token is wrong; retrying cannot fix it) and on 4017 (the server demands DAVE,
which a retry without DAVE will not provide); discord.js has no case for 4017 and so
loops until its timeout.
"""

from __future__ import annotations

import enum

__all__ = [
    "DAVE_REQUIRED_REASON",
    "NORMAL_CLOSURE",
    "CloseAction",
    "VoiceCloseCode",
    "close_action",
    "close_code_description",
]

# The reason text a real server sends with 4017.
DAVE_REQUIRED_REASON = "E2EE/DAVE protocol required"

# RFC 6455's code for a deliberate, orderly close.
NORMAL_CLOSURE = 1000


class CloseAction(enum.Enum):
    """What a voice client does after the gateway closes."""

    RESUME = "resume"
    """Reconnect the websocket and send Resume (op 7) with the last seq seen."""

    RECONNECT = "reconnect"
    """Start over: a new websocket and Identify (op 0), with fresh credentials if needed."""

    GIVE_UP = "give_up"
    """Stop: the session ended on purpose, or retrying cannot succeed."""


class VoiceCloseCode(enum.IntEnum):
    """Close codes the voice gateway sends (reference section 2.6, plus 4013)."""

    UNKNOWN_OPCODE = 4001
    FAILED_TO_DECODE = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    SESSION_NO_LONGER_VALID = 4006
    SESSION_TIMEOUT = 4009
    SERVER_NOT_FOUND = 4011
    UNKNOWN_PROTOCOL = 4012
    WEBRTC_CRASHED = 4013
    DISCONNECTED = 4014
    VOICE_SERVER_CRASHED = 4015
    UNKNOWN_ENCRYPTION_MODE = 4016
    DAVE_REQUIRED = 4017
    BAD_REQUEST = 4020
    RATE_LIMITED = 4021
    CALL_TERMINATED = 4022

    @property
    def description(self) -> str:
        """What the code means, in Discord's words where it has any."""
        return _DESCRIPTIONS[self]

    @property
    def action(self) -> CloseAction:
        """What a client should do next; see :func:`close_action`."""
        return close_action(self)


_DESCRIPTIONS: dict[VoiceCloseCode, str] = {
    VoiceCloseCode.UNKNOWN_OPCODE: "unknown opcode: the client sent an invalid opcode",
    VoiceCloseCode.FAILED_TO_DECODE: "failed to decode payload: the client sent an invalid payload",
    VoiceCloseCode.NOT_AUTHENTICATED: "not authenticated: a payload was sent before Identify",
    VoiceCloseCode.AUTHENTICATION_FAILED: "authentication failed: the Identify token was wrong",
    VoiceCloseCode.ALREADY_AUTHENTICATED: "already authenticated: Identify was sent twice",
    VoiceCloseCode.SESSION_NO_LONGER_VALID: "session no longer valid",
    VoiceCloseCode.SESSION_TIMEOUT: "session timeout: reconnect and start a new session",
    VoiceCloseCode.SERVER_NOT_FOUND: "server not found: no voice server for this guild",
    VoiceCloseCode.UNKNOWN_PROTOCOL: "unknown protocol: Select Protocol named a protocol the server does not know",
    VoiceCloseCode.WEBRTC_CRASHED: "WebRTC crashed (known only from the unofficial user docs)",
    VoiceCloseCode.DISCONNECTED: "disconnected: kicked, moved, or the main gateway session ended; do not reconnect",
    VoiceCloseCode.VOICE_SERVER_CRASHED: "voice server crashed: resume",
    VoiceCloseCode.UNKNOWN_ENCRYPTION_MODE: "unknown encryption mode: Select Protocol named a mode the server does not offer",
    VoiceCloseCode.DAVE_REQUIRED: "E2EE/DAVE protocol required: the channel only allows end-to-end encrypted clients",
    VoiceCloseCode.BAD_REQUEST: "bad request: a malformed request was sent",
    VoiceCloseCode.RATE_LIMITED: "disconnected for rate limiting; do not reconnect",
    VoiceCloseCode.CALL_TERMINATED: "call terminated: the channel was deleted or the voice server changed; do not reconnect",
}

_GIVE_UP_CODES = frozenset(
    {
        VoiceCloseCode.AUTHENTICATION_FAILED,
        VoiceCloseCode.DISCONNECTED,
        VoiceCloseCode.DAVE_REQUIRED,
        VoiceCloseCode.RATE_LIMITED,
        VoiceCloseCode.CALL_TERMINATED,
    }
)


def close_action(code: int) -> CloseAction:
    """What a voice client should do after the gateway closed with ``code``.

    Any integer is accepted, including codes Discord has not defined yet:

    - 1000 (a normal close) gives up: someone ended the session on purpose;
    - other codes below 4000 (the connection dropped) and 4015 resume;
    - 4004, 4014, 4017, 4021 and 4022 give up;
    - 4006, 4009 and every other code start a new session.
    """
    if code == NORMAL_CLOSURE:
        return CloseAction.GIVE_UP
    if code < 4000 or code == VoiceCloseCode.VOICE_SERVER_CRASHED:
        return CloseAction.RESUME
    if code in _GIVE_UP_CODES:
        return CloseAction.GIVE_UP
    return CloseAction.RECONNECT


def close_code_description(code: int) -> str:
    """A short human meaning for any close code, for logs and reports."""
    if code == NORMAL_CLOSURE:
        return "normal closure"
    try:
        return VoiceCloseCode(code).description
    except ValueError:
        return f"close code {code} has no voice gateway meaning"
