"""Silero VAD: polyasr (torch CPU) vs silero-vad's own model on the same audio, one thread each.

The audio is the test fixtures (speech, pauses, noise, tones, silence) tiled to 10 minutes, or to
POLYASR_BENCH_VAD_MINUTES (e.g. 60 for the hour the issue asks about). silero-vad's
`get_speech_timestamps` runs its TorchScript model window by window (the baseline) and, when
onnxruntime is installed, its ONNX model; faster-whisper's VAD (its own ONNX export, windows in
batches) is timed too when installed. polyasr runs `speech_timestamps` on the whole audio, and the
same audio as 4 files one after another and as one batch of 4. Regions are checked equal to
silero's. MLX (slow on Linux's CPU build) runs with POLYASR_BENCH_VAD_MLX=1.
Run: `pytest bench/bench_vad.py --benchmark-only -s`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import FIXTURES, note, record

from polyasr.audio import load_audio
from polyasr.vad import batch_speech_timestamps, load_vad, speech_timestamps

MINUTES = float(os.environ.get("POLYASR_BENCH_VAD_MINUTES", "10"))
FILES = 4
GROUP = f"Silero VAD, {MINUTES:g} min of audio, CPU, 1 thread"
BASELINE = "silero-vad (TorchScript)"
SILERO_REGIONS: list = []  # what silero found, for the polyasr runs to check against


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    parts = ["en_long.wav", "speech_pauses.flac", "noise.flac", "tones.flac", "silence.wav"]
    piece = np.concatenate([load_audio(FIXTURES / p) for p in parts])
    n = int(MINUTES * 60 * 16000)
    return np.resize(piece, n).astype(np.float32)  # the pieces repeated to n samples


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rtf(name: str, benchmark, audio):
    note(GROUP, f"{name}: RTF {benchmark.stats.stats.min / (len(audio) / 16000):.5f}")


def test_silero_torchscript(benchmark, audio):
    silero_vad = pytest.importorskip("silero_vad")
    model = silero_vad.load_silero_vad()
    found = benchmark.pedantic(
        lambda: silero_vad.get_speech_timestamps(torch.from_numpy(audio), model), rounds=1, iterations=1
    )
    SILERO_REGIONS[:] = [(r["start"], r["end"]) for r in found]
    record(GROUP, BASELINE, BASELINE, benchmark)
    _rtf(BASELINE, benchmark, audio)


def test_silero_onnx(benchmark, audio):
    silero_vad = pytest.importorskip("silero_vad")
    pytest.importorskip("onnxruntime")
    model = silero_vad.load_silero_vad(onnx=True)  # its session runs one intra-op thread
    benchmark.pedantic(lambda: silero_vad.get_speech_timestamps(torch.from_numpy(audio), model), rounds=1)
    record(GROUP, BASELINE, "silero-vad (ONNX Runtime)", benchmark)


def test_faster_whisper_vad(benchmark, audio):
    fw_vad = pytest.importorskip("faster_whisper.vad")
    fw_vad.get_vad_model()  # loaded once, outside the timing (its session: one thread)
    benchmark.pedantic(lambda: fw_vad.get_speech_timestamps(audio, fw_vad.VadOptions()), rounds=1)
    record(GROUP, BASELINE, "faster-whisper VAD (ONNX)", benchmark)


def test_polyasr(benchmark, audio):
    vad = load_vad("cpu")
    regions = benchmark.pedantic(lambda: speech_timestamps(audio, vad=vad), rounds=3, warmup_rounds=1)
    if SILERO_REGIONS:
        assert regions == SILERO_REGIONS
    record(GROUP, BASELINE, "polyasr (torch cpu)", benchmark)
    _rtf("polyasr (torch cpu)", benchmark, audio)


def _files(audio):
    return np.array_split(audio, FILES)


def test_polyasr_files_one_by_one(benchmark, audio):
    vad = load_vad("cpu")
    files = _files(audio)
    benchmark.pedantic(lambda: [speech_timestamps(f, vad=vad) for f in files], rounds=3, warmup_rounds=1)
    record(GROUP, BASELINE, f"polyasr, {FILES} files one by one", benchmark)


def test_polyasr_files_batched(benchmark, audio):
    vad = load_vad("cpu")
    files = _files(audio)
    found = benchmark.pedantic(lambda: batch_speech_timestamps(files, vad=vad), rounds=3, warmup_rounds=1)
    assert found == [speech_timestamps(f, vad=vad) for f in files]
    record(GROUP, BASELINE, f"polyasr, {FILES} files batched", benchmark)
    _rtf(f"polyasr, {FILES} files batched", benchmark, audio)


@pytest.mark.skipif(not os.environ.get("POLYASR_BENCH_VAD_MLX"), reason="set POLYASR_BENCH_VAD_MLX=1")
def test_polyasr_mlx(benchmark, audio):
    pytest.importorskip("mlx.core")
    vad = load_vad("mlx")
    regions = benchmark.pedantic(lambda: speech_timestamps(audio, vad=vad), rounds=1, warmup_rounds=1)
    if SILERO_REGIONS:
        assert regions == SILERO_REGIONS
    record(GROUP, BASELINE, "polyasr (mlx)", benchmark)
