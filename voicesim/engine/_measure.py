"""Measurements on what the agent sends back: stream statistics, answer timing, WER.

Everything here is pure arithmetic on numbers the caller hands in (sequence numbers,
RTP timestamps, arrival times from ``time.perf_counter_ns()``, audibility decided by
the caller, transcripts). Nothing reads a clock, a socket or a file, so the code runs
the same in a receive loop, in a test and in a notebook, and it is cheap enough to
run once per received packet or, for the histogram, once per sent frame.
"""

from __future__ import annotations

import re
import unicodedata

import attrs
import jiwer

from voicesim._histogram import LATENESS_EDGES_NS, LatenessHistogram

__all__ = [
    "LATENESS_EDGES_NS",
    "NORMALISER_VERSION",
    "LatenessHistogram",
    "ResponseTracker",
    "StreamSnapshot",
    "StreamStats",
    "normalise",
    "word_errors",
]

# RTP audio on Discord is Opus at 48 kHz: one timestamp tick is 1/48000 s.
_NS_PER_TICK = 1_000_000_000 / 48_000
_SEQ_MOD = 1 << 16
# As in RFC 3550 appendix A.1: a jump forward of up to MAX_DROPOUT is a run of lost
# packets; a step back of up to MAX_MISORDER is a late or repeated packet; anything
# else is a stray or a restarted sender.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
# Bit i set: the packet (highest seq - i) was received. 128 bits cover MAX_MISORDER.
_WINDOW_MASK = (1 << 128) - 1


@attrs.frozen(kw_only=True)
class StreamSnapshot:
    """The statistics of one stream over one interval, usually one turn."""

    packets_received: int
    packets_lost: int
    packets_reordered: int
    packets_duplicated: int
    jitter_ms: float


# Why the stream statistics look like this.
#
# Jitter is the RFC 3550 interarrival jitter, so it compares with what any RTP tool
# reports: for consecutive arrivals i-1 and i, D = (R_i - R_{i-1}) - (S_i - S_{i-1}),
# arrival time difference minus RTP timestamp difference, both in the same unit, and
# J += (|D| - J) / 16. We keep J in nanoseconds as a float (the RFC's integer
# arithmetic exists for C without floating point) and convert to ms on report.
# Timestamp differences are taken modulo 2**32 as signed numbers, because
# @discordjs/voice starts its timestamp at a random value and will wrap within a day.
#
# Discord senders do not advance the RTP timestamp while they are silent: discord.py
# and @discordjs/voice add 960 per frame *sent*. The first packet after a pause of
# seconds would therefore give a D of seconds and poison J for the next hundred
# packets, though the network did nothing. So J restarts at every ``reset()`` (each
# turn) and the caller can mark the first packet of a talk spurt with ``new_spurt``,
# for which no D is taken. The price is that J starts from zero each turn and needs
# about 16 packets (320 ms) to settle; answers last seconds, so this is small.
# Duplicates give no D: they are not new media samples.
#
# Loss counts follow RFC 3550 A.1 and A.3: sequence numbers are extended past their
# 16-bit wrap with a cycle count, expected = highest extended seq - base + 1, and an
# interval (a turn) is the difference of expected and of received since the mark.
# Duplicates are counted on their own and do not hide losses, and the loss is never
# negative. A jump larger than MAX_DROPOUT is believed only when the next packet
# follows it (the sender restarted); otherwise it was a stray and is ignored for loss.
# "Reordered" means arrived with a seq below the highest seen, which is what a jitter
# buffer has to repair. Repeats are found in a bit window over the last packets, so
# memory stays constant however long the session; a packet more than MAX_MISORDER
# behind is counted as reordered, repeat or not, and as neither lost nor received.
class StreamStats:
    """RTP statistics of one received stream, resettable per turn.

    Feed every packet of the agent's stream to :meth:`add` in arrival order; call
    :meth:`reset` at the start of each turn and :meth:`snapshot` at its end.
    """

    __slots__ = (
        "_bad_behind",
        "_bad_seq",
        "_base_ext",
        "_cycles",
        "_duplicated",
        "_expected_mark",
        "_jitter_ns",
        "_last_arrival_ns",
        "_last_rtp",
        "_max_seq",
        "_received",
        "_reordered",
        "_valid",
        "_valid_mark",
        "_window",
    )

    def __init__(self) -> None:
        self._max_seq = -1  # no packet yet
        self._cycles = 0
        self._base_ext = 0
        self._bad_seq = -1
        self._bad_behind = False
        self._window = 0
        self._expected_mark = 0
        self._valid = 0
        self._valid_mark = 0
        self._last_arrival_ns = -1
        self._last_rtp = 0
        self._jitter_ns = 0.0
        self._received = 0
        self._reordered = 0
        self._duplicated = 0

    def add(
        self, seq: int, rtp_timestamp: int, arrival_ns: int, *, new_spurt: bool = False
    ) -> None:
        """Account for one packet that arrived at ``arrival_ns``.

        ``new_spurt`` says the packet starts a talk spurt (after silence frames or a
        pause), so its timestamp gap is not taken as network jitter.
        """
        self._received += 1
        if self._max_seq < 0:
            self._start(seq)
            self._jitter(rtp_timestamp, arrival_ns, True)
            return

        max_seq = self._max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if 0 < udelta < _MAX_DROPOUT:
            # In order, perhaps after a gap: the usual case, so _jitter is inlined.
            if seq < max_seq:
                self._cycles += _SEQ_MOD
            self._max_seq = seq
            self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
            self._valid += 1
            self._bad_seq = -1
            last_arrival_ns = self._last_arrival_ns
            if not new_spurt and last_arrival_ns >= 0:
                ticks = (rtp_timestamp - self._last_rtp) & 0xFFFFFFFF
                if ticks >= 0x80000000:
                    ticks -= 0x100000000
                d = (arrival_ns - last_arrival_ns) - ticks * _NS_PER_TICK
                self._jitter_ns += ((d if d >= 0 else -d) - self._jitter_ns) / 16
            self._last_arrival_ns = arrival_ns
            self._last_rtp = rtp_timestamp
        elif udelta == 0 or udelta > _SEQ_MOD - _MAX_MISORDER:
            # Behind the highest seen: a repeat, or a late packet that fills a gap.
            bit = 1 << (_SEQ_MOD - udelta if udelta else 0)
            if self._window & bit:
                self._duplicated += 1
                return
            self._window |= bit
            self._reordered += 1
            self._valid += 1
            self._jitter(rtp_timestamp, arrival_ns, new_spurt)
        elif seq == self._bad_seq:
            # Two packets in a row after a big jump: the sender restarted. Continue
            # the count from here, crediting both packets as expected and received.
            old_ext_max = self._cycles + self._max_seq
            self._max_seq = seq
            self._base_ext += (self._cycles + seq) - old_ext_max - 2
            self._window = 0b11
            self._valid += 2
            if self._bad_behind:
                # The first packet of the restart was counted as late; it was not.
                self._reordered -= 1
            self._bad_seq = -1
            self._jitter(rtp_timestamp, arrival_ns, True)
        else:
            # A stray far from the stream, or the first packet of a restart.
            self._bad_behind = udelta >= _SEQ_MOD // 2
            if self._bad_behind:
                self._reordered += 1
            self._bad_seq = (seq + 1) & 0xFFFF

    def _start(self, seq: int) -> None:
        self._max_seq = seq
        self._base_ext = seq
        self._window = 1
        self._valid = 1

    def _jitter(self, rtp_timestamp: int, arrival_ns: int, new_spurt: bool) -> None:
        if not new_spurt and self._last_arrival_ns >= 0:
            ticks = (rtp_timestamp - self._last_rtp) & 0xFFFFFFFF
            if ticks >= 0x80000000:
                ticks -= 0x100000000
            d = (arrival_ns - self._last_arrival_ns) - ticks * _NS_PER_TICK
            if d < 0:
                d = -d
            self._jitter_ns += (d - self._jitter_ns) / 16
        self._last_arrival_ns = arrival_ns
        self._last_rtp = rtp_timestamp

    def reset(self) -> None:
        """Start a new interval: counters and jitter restart, sequence state stays.

        Keeping the sequence state means a packet lost between the mark and the
        first packet of the new turn is still counted.
        """
        self._expected_mark = self._expected()
        self._valid_mark = self._valid
        self._received = self._reordered = self._duplicated = 0
        self._jitter_ns = 0.0
        self._last_arrival_ns = -1

    def _expected(self) -> int:
        if self._max_seq < 0:
            return 0
        return self._cycles + self._max_seq - self._base_ext + 1

    @property
    def extended_max_seq(self) -> int:
        """The highest sequence number seen, counting 65536 per wrap; -1 if none."""
        return -1 if self._max_seq < 0 else self._cycles + self._max_seq

    @property
    def jitter_ms(self) -> float:
        return self._jitter_ns / 1e6

    @property
    def received(self) -> int:
        """Every packet added since the last reset, repeats included."""
        return self._received

    @property
    def lost(self) -> int:
        expected = self._expected() - self._expected_mark
        return max(0, expected - (self._valid - self._valid_mark))

    @property
    def reordered(self) -> int:
        return self._reordered

    @property
    def duplicated(self) -> int:
        return self._duplicated

    def snapshot(self) -> StreamSnapshot:
        return StreamSnapshot(
            packets_received=self._received,
            packets_lost=self.lost,
            packets_reordered=self._reordered,
            packets_duplicated=self._duplicated,
            jitter_ms=self.jitter_ms,
        )


# The answer of a turn is found from the agent's frames alone, as a listener would
# find it: its start is the first *audible* frame (the caller decodes and compares
# the level with a threshold, so comfort noise or Opus silence frames never start an
# answer) that arrives after the user's speech end. Its end is the last audible frame
# before the agent has been quiet for ``quiet_ms``, whether quiet means no packets at
# all or packets that carry silence: a TTS pause between sentences shorter than
# ``quiet_ms`` stays inside the answer. Once an answer has ended, later sound belongs
# to no turn and is ignored, so the end time never moves after it has been reported.
@attrs.define
class ResponseTracker:
    """Finds the start and end of the agent's spoken answer to one utterance."""

    speech_end_ns: int
    quiet_ms: float = 600.0
    response_start_ns: int | None = attrs.field(default=None, init=False)
    #: The last audible frame so far; final once :meth:`answer_done` is true.
    response_end_ns: int | None = attrs.field(default=None, init=False)
    barge_in_ns: int | None = attrs.field(default=None, init=False)
    _done: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.quiet_ms <= 0:
            raise ValueError(f"quiet_ms must be positive, got {self.quiet_ms!r}")

    def add(self, arrival_ns: int, audible: bool) -> None:
        """Account for one frame of the agent's stream."""
        if self._done or not audible or arrival_ns <= self.speech_end_ns:
            return
        if self.response_end_ns is not None and self._quiet_since_end(arrival_ns):
            self._done = True
            return
        if self.response_start_ns is None:
            self.response_start_ns = arrival_ns
        self.response_end_ns = arrival_ns

    def _quiet_since_end(self, now_ns: int) -> bool:
        assert self.response_end_ns is not None
        return now_ns - self.response_end_ns >= self.quiet_ms * 1e6

    def answer_done(self, now_ns: int) -> bool:
        """Whether the answer started and has been quiet for ``quiet_ms`` at ``now_ns``."""
        if not self._done and self.response_end_ns is not None:
            self._done = self._quiet_since_end(now_ns)
        return self._done

    def barge_in(self, onset_ns: int) -> bool:
        """Note that the user started speaking at ``onset_ns``.

        Returns whether that was a barge-in: the agent's answer had started and had
        not yet ended. Only the first barge-in of a turn counts.
        """
        if self.barge_in_ns is not None or self.response_start_ns is None:
            return False
        if onset_ns < self.response_start_ns or self.answer_done(onset_ns):
            return False
        self.barge_in_ns = onset_ns
        return True

    @property
    def response_latency_ms(self) -> float | None:
        if self.response_start_ns is None:
            return None
        return (self.response_start_ns - self.speech_end_ns) / 1e6

    @property
    def barge_in_stop_ms(self) -> float | None:
        """User onset to the agent's last audible frame, once the answer has ended."""
        if self.barge_in_ns is None or not self._done:
            return None
        assert self.response_end_ns is not None
        return max(0.0, (self.response_end_ns - self.barge_in_ns) / 1e6)


#: Bumped whenever :func:`normalise` changes what it returns for any input, since
#: WER figures computed under different normalisers must not be compared.
NORMALISER_VERSION = "1"

_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
# Anything that is neither a letter, a digit nor whitespace separates words.
_NON_WORD = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> list[str]:
    """Split ``text`` into comparable words under normaliser version 1.

    1. Unicode NFKC, so full-width and composed forms compare equal, then casefold.
    2. Apostrophes are deleted, so "don't" and "dont" are one word.
    3. Every other character that is not a letter or digit (punctuation, symbols,
       hyphens, underscores) becomes a space: "well-known" is two words.
    4. Split on whitespace.

    Numbers are left as they are written: "42" stays "42" and does not match "forty
    two". Recognisers differ in how they write numbers, so fixtures should spell them
    out as words; that keeps the normaliser free of language rules.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).split()


_JOINED = jiwer.Compose([jiwer.ReduceToListOfListOfWords()])


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Return (substitutions + deletions + insertions, words in the reference).

    Both texts are normalised first. A run's WER is the sum of the first numbers over
    the sum of the second, never a mean of per-utterance rates, which would weigh a
    two-word utterance as much as a twenty-word one.
    """
    ref = normalise(reference)
    hyp = normalise(hypothesis)
    if not ref:
        # Every recognised word is an insertion against an empty reference.
        return len(hyp), 0
    out = jiwer.process_words(
        " ".join(ref),
        " ".join(hyp),
        reference_transform=_JOINED,
        hypothesis_transform=_JOINED,
    )
    errors = int(out.substitutions) + int(out.deletions) + int(out.insertions)
    return errors, len(ref)
