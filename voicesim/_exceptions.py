"""The errors voicesim raises.

Every error the library raises on purpose derives from :class:`VoiceSimError`, so one
``except VoiceSimError`` catches them all. Each error also derives from the builtin
that matches its meaning, so code that already catches ``ValueError`` or
``TimeoutError`` keeps working::

    VoiceSimError
    ├── ProtocolError
    │   ├── LocalProtocolError      (ValueError)  we were asked to send something invalid
    │   └── RemoteProtocolError     (ValueError)  the peer sent something invalid
    │       └── DecryptionError                   an AEAD tag or DAVE frame did not verify
    ├── ConfigError                 (ValueError)  bad configuration; names the key
    ├── FixtureError                (ValueError)  an audio fixture cannot be used
    ├── TransportError              (OSError)     a socket or TLS connection failed
    │   └── VoiceConnectionClosed                 the voice gateway closed with a code
    └── VoiceTimeout                (TimeoutError) a join, answer or handshake took too long
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecryptionError",
    "FixtureError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "TransportError",
    "VoiceConnectionClosed",
    "VoiceSimError",
    "VoiceTimeout",
]


class VoiceSimError(Exception):
    """The root of every error voicesim raises on purpose."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


class ProtocolError(VoiceSimError):
    """Bytes or messages that break the Discord voice protocol.

    Never raised directly: the subclass says whose fault it was.
    """


class LocalProtocolError(ProtocolError, ValueError):
    """Raised when the caller asks voicesim to build or send something invalid.

    For example an RTP header with a sequence number above 65535, or a gateway message
    missing a required field.
    """


class RemoteProtocolError(ProtocolError, ValueError):
    """Raised when a peer sends bytes that cannot be parsed or do not follow the protocol.

    Truncated packets, unknown encryption modes, JSON that is not an object, a binary
    gateway frame too short for its header: all of these end here and never as
    ``IndexError``, ``struct.error`` or a crypto library's own exception.
    """


class DecryptionError(RemoteProtocolError):
    """Raised when an authenticated ciphertext does not verify.

    The packet was forged, corrupted, or encrypted with another key or counter.
    """


class ConfigError(VoiceSimError, ValueError):
    """Raised for a configuration value that cannot be used.

    ``key`` names the setting, so the command line can print one line that says which
    key was wrong and what was wanted.
    """

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(f"{key}: {msg}")
        self.key = key


class FixtureError(VoiceSimError, ValueError):
    """Raised when an audio fixture is missing, is not audio, or has the wrong format.

    The message names the file.
    """


class TransportError(VoiceSimError, OSError):
    """Raised when a socket, TLS handshake or WebSocket connection fails."""


class VoiceConnectionClosed(TransportError):
    """Raised when the voice gateway closes the WebSocket.

    ``code`` is the close code (4014, 4006, ...) and ``reason`` the text that came
    with it, if any.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"voice gateway closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class VoiceTimeout(VoiceSimError, TimeoutError):
    """Raised when a join, handshake or expected answer does not arrive in time."""
