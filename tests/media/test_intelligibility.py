"""The fixture speech is clear enough for a speech recogniser to transcribe."""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor

import av
import jiwer
import numpy as np
import numpy.typing as npt
import pytest

from voicesim.media import OpusDecoder, load_fixtures

pytestmark = pytest.mark.slow

# The reference agent transcribes with this same recogniser; fixtures it cannot
# understand would make a swarm's WER measure the fixtures instead of the agent.
MAX_POOLED_WER = 0.15
STT_RATE = 16000


def _normalise(text: str) -> str:
    """Lowercase and drop punctuation, as the WER of a turn is computed."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("'", "")).split())


def _pcm_for_stt(frames: tuple[bytes, ...]) -> bytes:
    """Decode frames as a receiver would, then downmix and resample to 16 kHz."""
    decoder = OpusDecoder()
    stereo = np.concatenate([decoder.decode(frame) for frame in frames])
    mono: npt.NDArray[np.int16] = (stereo.astype(np.int32).sum(axis=1) // 2).astype(
        np.int16
    )

    frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 48000
    resampler = av.AudioResampler(format="s16", layout="mono", rate=STT_RATE)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16).tobytes()


def _transcribe(pcms: list[bytes]) -> list[str]:
    """Transcribe 16 kHz mono int16 PCM with pocketsphinx's stock English model."""
    from pocketsphinx import Decoder

    # Tighter pruning than pocketsphinx's defaults (at most 2000 HMMs and 5 word exits
    # a frame, top 2 Gaussians) takes about 40 % of the CPU time and, on these
    # fixtures, misses no more words than the defaults.
    decoder = Decoder(
        samprate=STT_RATE, loglevel="FATAL", maxhmmpf=2000, maxwpf=5, topn=2
    )
    texts = []
    for pcm in pcms:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        texts.append(hypothesis.hypstr if hypothesis is not None else "")
    return texts


def test_fixtures_pooled_wer_within_bound() -> None:
    """Pocketsphinx transcribes the utterances with a pooled WER of at most 15 %."""
    utterances = load_fixtures().utterances
    pcms = [_pcm_for_stt(f.frames) for f in utterances]

    # Two processes (the machine's cores) keep the test well under a minute. Spawn,
    # not fork: the parent may hold threads.
    halves = [pcms[0::2], pcms[1::2]]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        even, odd = pool.map(_transcribe, halves)
    hypotheses = [""] * len(pcms)
    hypotheses[0::2], hypotheses[1::2] = even, odd

    references = [_normalise(f.transcript) for f in utterances]
    result = jiwer.process_words(references, [_normalise(h) for h in hypotheses])
    errors = result.substitutions + result.deletions + result.insertions
    words = result.substitutions + result.deletions + result.hits
    wer = errors / words
    misheard = [
        f"{f.id}: {ref!r} -> {hyp!r}"
        for f, ref, hyp in zip(utterances, references, hypotheses, strict=True)
        if ref != _normalise(hyp)
    ]
    print(f"pooled WER {wer:.3f} ({errors}/{words} words)", *misheard, sep="\n")
    assert wer <= MAX_POOLED_WER, misheard
