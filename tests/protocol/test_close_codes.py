from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicesim.protocol._voice_gateway import (
    DAVE_REQUIRED_REASON,
    CloseAction,
    VoiceCloseCode,
    close_action,
    close_code_description,
)

RESUME = CloseAction.RESUME
RECONNECT = CloseAction.RECONNECT
GIVE_UP = CloseAction.GIVE_UP


def test_voice_close_code_values_match_reference_table() -> None:
    """The codes are those of reference section 2.6, plus 4013 from the user docs."""
    assert {code.name: code.value for code in VoiceCloseCode} == {
        "UNKNOWN_OPCODE": 4001,
        "FAILED_TO_DECODE": 4002,
        "NOT_AUTHENTICATED": 4003,
        "AUTHENTICATION_FAILED": 4004,
        "ALREADY_AUTHENTICATED": 4005,
        "SESSION_NO_LONGER_VALID": 4006,
        "SESSION_TIMEOUT": 4009,
        "SERVER_NOT_FOUND": 4011,
        "UNKNOWN_PROTOCOL": 4012,
        "WEBRTC_CRASHED": 4013,
        "DISCONNECTED": 4014,
        "VOICE_SERVER_CRASHED": 4015,
        "UNKNOWN_ENCRYPTION_MODE": 4016,
        "DAVE_REQUIRED": 4017,
        "BAD_REQUEST": 4020,
        "RATE_LIMITED": 4021,
        "CALL_TERMINATED": 4022,
    }


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (1000, GIVE_UP),
        (1001, RESUME),
        (1006, RESUME),
        (1011, RESUME),
        (3999, RESUME),
        (4000, RECONNECT),
        (4001, RECONNECT),
        (4002, RECONNECT),
        (4003, RECONNECT),
        (4004, GIVE_UP),
        (4005, RECONNECT),
        (4006, RECONNECT),
        (4009, RECONNECT),
        (4011, RECONNECT),
        (4012, RECONNECT),
        (4013, RECONNECT),
        (4014, GIVE_UP),
        (4015, RESUME),
        (4016, RECONNECT),
        (4017, GIVE_UP),
        (4020, RECONNECT),
        (4021, GIVE_UP),
        (4022, GIVE_UP),
        (4023, RECONNECT),
        (4999, RECONNECT),
        (5000, RECONNECT),
    ],
)
def test_close_action_table(code: int, action: CloseAction) -> None:
    """Each close code maps to the action the API contract gives it."""
    assert close_action(code) is action


@pytest.mark.parametrize("code", list(VoiceCloseCode))
def test_voice_close_code_action_property_agrees(code: VoiceCloseCode) -> None:
    """The enum's action property is close_action of its value."""
    assert code.action is close_action(int(code))


def test_voice_close_code_descriptions_are_distinct() -> None:
    """Every code has its own non-empty meaning text."""
    descriptions = [code.description for code in VoiceCloseCode]
    assert all(descriptions)
    assert len(set(descriptions)) == len(descriptions)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        (VoiceCloseCode.UNKNOWN_OPCODE, "unknown opcode"),
        (VoiceCloseCode.FAILED_TO_DECODE, "failed to decode payload"),
        (VoiceCloseCode.AUTHENTICATION_FAILED, "authentication failed"),
        (VoiceCloseCode.SESSION_NO_LONGER_VALID, "session no longer valid"),
        (VoiceCloseCode.DISCONNECTED, "do not reconnect"),
        (VoiceCloseCode.VOICE_SERVER_CRASHED, "voice server crashed"),
        (VoiceCloseCode.DAVE_REQUIRED, DAVE_REQUIRED_REASON),
        (VoiceCloseCode.CALL_TERMINATED, "call terminated"),
    ],
)
def test_voice_close_code_description_says_meaning(
    code: VoiceCloseCode, fragment: str
) -> None:
    """The meaning text uses Discord's wording for the code."""
    assert fragment in code.description


def test_dave_required_reason_is_the_real_server_text() -> None:
    """The 4017 reason matches what Discord sends."""
    assert DAVE_REQUIRED_REASON == "E2EE/DAVE protocol required"


def test_close_code_description_covers_any_code() -> None:
    """Known, normal and unknown codes all get a description."""
    assert close_code_description(1000) == "normal closure"
    assert close_code_description(4014) == VoiceCloseCode.DISCONNECTED.description
    assert "4999" in close_code_description(4999)


@given(st.integers())
def test_close_action_is_total(code: int) -> None:
    """close_action answers for every integer, and only 1000 among codes below 4000 gives up."""
    action = close_action(code)
    assert isinstance(action, CloseAction)
    if code < 4000:
        assert action is (GIVE_UP if code == 1000 else RESUME)
