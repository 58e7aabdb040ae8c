"""VAD-guided transcription: decode only the speech Silero VAD finds, report times in the file's time base.

With `TranscribeOptions(vad=True)` the speech regions (`polyasr.vad`, run on the model's own
backend) decide what is decoded, in one of two ways, as the model declares
(`Capabilities.speech_chunks`):

- A chunked family (CTC, TDT, Qwen3-ASR) plans its chunks with `chunk_plans`: the regions, cut by
  the VAD at the chunk length (`max_speech_duration_s` capped at it), are joined end to end into
  chunks of at most the chunk length (`chunking.plan_speech_chunks`); the family maps each
  emission's position back with `Chunk.to_file`.
- Any other model (Whisper) gets all the speech regions of a file joined into one signal, as
  faster-whisper's `vad_filter` does (`transcribe_joined`); every segment time is then mapped back
  to the file, sample for sample (`Chunk.to_file`, the same map: a start on a join belongs to the
  later region, an end to the earlier one).

Either way audio outside the regions is never decoded, and a file without speech gives no
segments and no error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from polyasr.errors import InvalidOptionError
from polyasr.models.base import ModelOutput
from polyasr.models.chunking import Chunk, plan_chunks, plan_speech_chunks
from polyasr.result import Segment


def speech_regions(model, audios: list[np.ndarray], vad_options) -> list[list[tuple[int, int]]]:
    """Each 16 kHz signal's speech regions, the signals run as one batch on the model's backend."""
    from polyasr.vad import batch_speech_timestamps, load_vad

    B = model.B
    vad = load_vad("mlx" if B.name == "mlx" else str(B.device))
    with _one_cpu_thread(B):
        return batch_speech_timestamps(list(audios), model.sample_rate, vad_options, vad=vad)


@contextlib.contextmanager
def _one_cpu_thread(B):
    """On torch's CPU the VAD runs on one thread, as silero runs its own model: its LSTM steps
    through thousands of tiny ops, and a thread pool only adds a synchronisation to each (on a
    busy machine many times the work; bench/bench_vad_transcribe.py prints the VAD's share)."""
    if B.name != "torch" or str(B.device) != "cpu":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def chunk_plans(
    model, audios: list[np.ndarray], opts, max_secs: float, overlap_secs: float, timings: dict
) -> list[list[Chunk]]:
    """A chunked family's plan for each signal: speech chunks with `opts.vad` (timed as
    timings["vad"]), else chunks cut at low-energy points with `overlap_secs` of overlap."""
    sr = model.sample_rate
    if not opts.vad:
        return [plan_chunks(a, sr, max_secs, overlap_secs=overlap_secs) for a in audios]
    t0 = time.perf_counter()
    cap = min(opts.vad_options.max_speech_duration_s, max_secs)
    try:
        vad_options = dataclasses.replace(opts.vad_options, max_speech_duration_s=cap)
    except InvalidOptionError as e:
        raise InvalidOptionError(
            f"{model.name} cuts speech into chunks of at most {max_secs:g} s (chunk_secs), too short for "
            f"the VAD's padding: {e}"
        ) from None
    regions = speech_regions(model, audios, vad_options)
    timings["vad"] = timings.get("vad", 0.0) + time.perf_counter() - t0
    return [plan_speech_chunks(r, len(a), sr, max_secs) for a, r in zip(audios, regions, strict=True)]


def transcribe_joined(model, audios: list[np.ndarray], opts, progress) -> list[ModelOutput]:
    """Each signal's speech regions joined into one signal, decoded by the model's own pipeline
    (`_transcribe_many`), segment times mapped back to the signal's; no speech: an empty output."""
    t0 = time.perf_counter()
    found = speech_regions(model, audios, opts.vad_options)
    vad_secs = time.perf_counter() - t0
    maps = [Chunk(r[0][0], r[-1][1], r[0][0], r[-1][1], tuple(r)) if r else None for r in found]
    speech = [i for i, m in enumerate(maps) if m is not None]
    decoded = model._transcribe_many([maps[i].samples(audios[i]) for i in speech], opts, progress) if speech else []
    outputs = [_no_speech(model, opts) for _ in audios]
    for i, out in zip(speech, decoded, strict=True):
        out.segments = [_to_file(s, maps[i], model.sample_rate) for s in out.segments]
        outputs[i] = out
    for out in outputs:
        out.timings = {"vad": vad_secs, **out.timings}
    return outputs


def _to_file(segment: Segment, speech: Chunk, sample_rate: int) -> Segment:
    """A segment of the joined speech (and its words) -> the same in the file's time."""
    start, end = _span_to_file(segment.start, segment.end, speech, sample_rate)
    words = [
        dataclasses.replace(w, start=round(s, 2), end=round(e, 2))
        for w in segment.words
        for s, e in [_span_to_file(w.start, w.end, speech, sample_rate)]
    ]
    return dataclasses.replace(segment, start=round(start, 3), end=round(end, 3), words=words)


def _span_to_file(start: float, end: float, speech: Chunk, sample_rate: int) -> tuple[float, float]:
    """[start, end) seconds of the joined speech -> seconds of the file (end never before start)."""
    first = int(speech.to_file([round(start * sample_rate)])[0])
    last = int(speech.to_file([round(end * sample_rate)], end=True)[0])
    return first / sample_rate, max(last, first) / sample_rate


def _no_speech(model, opts) -> ModelOutput:
    """What a file without speech transcribes to: nothing, in the forced (or only) language."""
    return ModelOutput([], model.reported_language(opts), checkpoint_format=model.format, chunks=0)
