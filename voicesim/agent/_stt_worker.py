"""The body of a transcription worker process: pocketsphinx decoders fed over a pipe.

Kept apart from the trio side so a worker imports only the standard library and
pocketsphinx. The pool in ``_stt.py`` is the only caller.

Requests arrive in batches (lists) of tuples, results leave one tuple at a time::

    ("open", stream_id)                 ("ready", pid)
    ("feed", stream_id, pcm16k_bytes)   ("text", stream_id, transcript)
    ("end", stream_id)                  ("error", stream_id, message)
    ("abort", stream_id)
    ("stop",)
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["run_worker"]


def _new_decoder() -> Any:
    # Imported here so the parent, which never decodes, need not load pocketsphinx.
    import pocketsphinx

    # The bundled US English acoustic model, dictionary and language model; about
    # 95 MB and 0.4 s of CPU per decoder.
    return pocketsphinx.Decoder(loglevel="FATAL")


def run_worker(requests: Connection, results: Connection) -> None:
    """Serve transcription requests until ``("stop",)`` or the parent goes away."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when
    # workers stop, so they must not die with a traceback on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # One decoder is made before reporting ready, so the first utterance does not
    # pay for loading the model; more are made when streams overlap, and kept.
    idle: list[Any] = [_new_decoder()]
    active: dict[int, Any] = {}
    results.send(("ready", os.getpid()))

    while True:
        try:
            batch = requests.recv()
        except (EOFError, OSError):
            return
        for request in batch:
            if request[0] == "stop":
                return
            _handle(request, idle, active, results)


def _handle(
    request: tuple[Any, ...],
    idle: list[Any],
    active: dict[int, Any],
    results: Connection,
) -> None:
    kind, stream_id = request[0], request[1]
    if kind == "open":
        decoder = idle.pop() if idle else _new_decoder()
        decoder.start_utt()
        active[stream_id] = decoder
        return

    decoder = active.get(stream_id)
    if decoder is None:
        # A stream aborted or failed earlier; its late requests mean nothing.
        return
    try:
        if kind == "feed":
            decoder.process_raw(request[2], False, False)
        elif kind == "end":
            del active[stream_id]
            decoder.end_utt()
            hypothesis = decoder.hyp()
            idle.append(decoder)
            text = hypothesis.hypstr if hypothesis is not None else ""
            results.send(("text", stream_id, text))
        elif kind == "abort":
            del active[stream_id]
            decoder.end_utt()
            idle.append(decoder)
    except RuntimeError as exc:
        # pocketsphinx reports failures as RuntimeError. The decoder's state is
        # unknown afterwards, so it is dropped rather than reused.
        active.pop(stream_id, None)
        results.send(("error", stream_id, f"pocketsphinx failed: {exc}"))
