"""Word timestamps: what they cost per model, and how near Whisper's words are to the truth.

Cost: the same transcription of en_long.wav (73 s, three 30 s windows) with and without
`word_timestamps`, one after the other in this run. Whisper base uses the real weights (a second
decoder pass over each window's tokens, DTW on the host; windows after the first seek to the end
of their last word, so the two runs need not decode the same windows). GigaAM and Parakeet run
tiny random-weight checkpoints (no real weights ship on PyPI): their word timing is host work on
the emitted tokens, so its share of a tiny model's time is an upper bound on its share of a real one's.

Accuracy: Whisper base on en_words.flac (English words spoken one by one with known gaps,
tests/fixtures/make_word_fixture.py): mean and 95th percentile of |start| and |end| errors over
the recognised words, also split into words after a short gap and words after a pause.

Run: `pytest bench/bench_word_timestamps.py --benchmark-only -s`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, note, record

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

AUDIO = "en_long"
ROUNDS = 2
PAUSE = 0.25  # seconds: a gap at least this long counts as a pause


def _group(model: str) -> str:
    return f"{model}, {AUDIO}.wav, {torch.get_num_threads()} threads"


@pytest.fixture(scope="module")
def audio():
    return load_audio(FIXTURES / f"{AUDIO}.wav")


@pytest.fixture(scope="module")
def engines(whisper_base_dir, tmp_path_factory):
    """Whisper base (real), GigaAM v3 CTC and Parakeet TDT (tiny, random weights)."""
    out = {"whisper-base": AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")}
    root = tmp_path_factory.mktemp("words-bench")
    try:
        from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

        torch.manual_seed(0)
        cfg = tiny_cfg()
        path = save_ckpt(root / "v3_ctc.ckpt", cfg, v3_state_dict(cfg))
        out["gigaam-v3-ctc (tiny)"] = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu")
    except ImportError:  # omegaconf writes the released layout
        pass
    try:
        from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_nemo

        config = tiny_config(48)
        model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)
        path = write_nemo(model, fe, sp, root / "tiny.nemo")
        out["parakeet-tdt-v3 (tiny)"] = AsrEngine.from_model("parakeet-tdt-v3", path, device="cpu")
    except ImportError:  # transformers builds the random reference
        pass
    return out


MODELS = ["whisper-base", "gigaam-v3-ctc (tiny)", "parakeet-tdt-v3 (tiny)"]


@pytest.mark.parametrize("words", [False, True], ids=["without", "with words"])
@pytest.mark.parametrize("model", MODELS)
def test_overhead(benchmark, engines, audio, model, words):
    if model not in engines:
        pytest.skip(f"{model}: its reference package is not installed")
    engine = engines[model]
    language = "en" if model.startswith("whisper") else None
    options = TranscribeOptions(language=language, temperatures=(0.0,), word_timestamps=words)
    result = benchmark.pedantic(lambda: engine.transcribe(audio, options), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert all(bool(s.words) == words for s in result.segments)
    name = "with word timestamps" if words else "without"
    record(_group(model), "without", name, benchmark)
    if words and "words" in result.timings:
        note(_group(model), f"alignment stage (second decoder pass + DTW): {result.timings['words']:.3f} s of one run")


def test_accuracy(benchmark, engines):
    """Whisper base word boundaries against the true times of en_words.flac (timed once, so that
    `--benchmark-only` runs it too)."""
    from test_whisper_words import word_errors

    truth = json.loads((FIXTURES / "en_words.json").read_text())["words"]
    audio, options = load_audio(FIXTURES / "en_words.flac"), TranscribeOptions(language="en", word_timestamps=True)
    result = benchmark.pedantic(lambda: engines["whisper-base"].transcribe(audio, options), rounds=1, iterations=1)
    words = [w for s in result.segments for w in s.words]
    starts, ends, matched = word_errors(words, truth, with_truth=True)
    gaps = np.array([t["start"] - p["end"] for p, t in zip([None, *truth], truth) if p is not None])
    after_pause = {t["start"] for t, g in zip(truth[1:], gaps) if g >= PAUSE}
    pause = np.array([t["start"] in after_pause for t in matched])
    group = "Whisper base word boundaries, en_words.flac (seconds)"
    lines = [f"{len(starts)} of {len(truth)} words matched"]
    for label, pick in (
        ("all", slice(None)),
        (f"after a gap < {PAUSE} s", ~pause),
        (f"after a pause >= {PAUSE} s", pause),
    ):
        s, e = starts[pick], ends[pick]
        if len(s):
            lines.append(
                f"{label:<24} start mean {s.mean():.3f} p95 {np.percentile(s, 95):.3f}   "
                f"end mean {e.mean():.3f} p95 {np.percentile(e, 95):.3f}   ({len(s)} words)"
            )
    print("\n" + group + "\n  " + "\n  ".join(lines))
