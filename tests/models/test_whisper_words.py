"""Whisper word timestamps (models/whisper/alignment.py): the numerics against openai-whisper's
own functions, the words of real base and tiny.en weights against openai-whisper's
`transcribe(..., word_timestamps=True)`, and the accuracy on words with known times."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from polyasr import TranscribeOptions
from polyasr.audio import audio_duration, load_audio
from polyasr.models.whisper.alignment import DEFAULT_ALIGNMENT_HEADS, alignment_heads, dtw, median_filter
from polyasr.models.whisper.config import WhisperConfig


@pytest.mark.parametrize("shape", [(7, 40), (1, 5), (30, 3), (12, 12)])
def test_dtw_path_is_openai_whispers(shape):
    from whisper.timing import dtw_cpu

    cost = np.random.default_rng(sum(shape)).standard_normal(shape)
    cost[:, ::5] = 0.0  # ties, broken the same way
    rows, cols = dtw(cost)
    ref_rows, ref_cols = dtw_cpu(cost)
    assert rows.tolist() == ref_rows.tolist() and cols.tolist() == ref_cols.tolist()


@pytest.mark.parametrize("length", [2, 3, 4, 50])
def test_median_filter_is_openai_whispers(length):
    from whisper.timing import median_filter as ref

    x = np.random.default_rng(length).standard_normal((3, 5, length)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(x, 7), ref(torch.from_numpy(x), 7).numpy())


def test_alignment_heads_from_checkpoint_then_table_then_upper_half():
    cfg = WhisperConfig.tiny(alignment_heads=((1, 2),))
    assert alignment_heads(cfg, "whisper-base") == ((1, 2),)
    assert alignment_heads(WhisperConfig.tiny(), "whisper-base") == DEFAULT_ALIGNMENT_HEADS["whisper-base"]
    assert alignment_heads(WhisperConfig.tiny(decoder_layers=4), "whisper") == tuple(
        (i, h) for i in (2, 3) for h in range(4)
    )


# ---- real weights ---------------------------------------------------------------------------------

ENGINES = {"base": "whisper_base_engine", "tiny.en": "whisper_tiny_en_engine"}
DIRS = {"base": "whisper_base_dir", "tiny.en": "whisper_tiny_en_dir"}


def _openai_words(request, size, audio):
    import whisper
    from whisper_refs import openai_whisper_model

    from polyasr.models.whisper.checkpoint import load_checkpoint

    ckpt = load_checkpoint(request.getfixturevalue(DIRS[size]))
    model = openai_whisper_model(ckpt.params, ckpt.cfg)
    heads = torch.zeros(ckpt.cfg.decoder_layers, ckpt.cfg.decoder_attention_heads, dtype=torch.bool)
    for layer, head in ckpt.cfg.alignment_heads:
        heads[layer, head] = True
    model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
    with torch.inference_mode():
        return whisper.transcribe(model, audio, temperature=(0.0,), fp16=False, word_timestamps=True)


@pytest.mark.slow
@pytest.mark.parametrize("size, name", [("base", "en_medium"), ("tiny.en", "en_long")])
def test_words_match_openai_whisper(request, fixtures_dir, size, name):
    """Same tokens (greedy, temperature 0), so the same words; times within one 20 ms frame
    (openai-whisper's own times: `trim_word_pauses=False`). en_long spans several windows, each
    after the first seeking to the end of its last word."""
    audio = load_audio(fixtures_dir / f"{name}.wav")
    ref = _openai_words(request, size, audio)
    options = TranscribeOptions(temperatures=(0.0,), beam_size=1, word_timestamps=True, trim_word_pauses=False)
    ours = request.getfixturevalue(ENGINES[size]).transcribe(audio, options)
    assert [s["tokens"] for s in ref["segments"]] == [s.tokens for s in ours.segments]
    ref_words = [w for s in ref["segments"] for w in s["words"]]
    our_words = [w for s in ours.segments for w in s.words]
    assert [w["word"] for w in ref_words] == [w.text for w in our_words]
    ends = np.array([[r["end"], w.end] for r, w in zip(ref_words, our_words)])
    starts = np.array([[r["start"], w.start] for r, w in zip(ref_words, our_words)])
    assert np.abs(starts[:, 0] - starts[:, 1]).max() <= 0.02 + 1e-6
    assert np.abs(ends[:, 0] - ends[:, 1]).max() <= 0.02 + 1e-6
    # Segment bounds follow the words; openai-whisper's may run past the audio, ours stop at its end.
    bounded = lambda t: min(t, audio_duration(audio))
    ref_bounds = [(bounded(s["start"]), bounded(s["end"])) for s in ref["segments"]]
    np.testing.assert_allclose(ref_bounds, [(s.start, s.end) for s in ours.segments], atol=0.02 + 1e-6)
    assert all("".join(w.text for w in s.words) == s.text for s in ours.segments)


def word_errors(words, truth, with_truth: bool = False):
    """|start| and |end| errors (s) of the recognised words that match the true words (in order,
    compared without case and punctuation) -> (starts, ends[, the matched true words])."""
    from difflib import SequenceMatcher

    norm = lambda t: "".join(c for c in t.lower() if c.isalnum())
    said = [norm(w.text) for w in words]
    true = [norm(w["word"]) for w in truth]
    pairs = [
        (words[m.a + k], truth[m.b + k])
        for m in SequenceMatcher(a=said, b=true, autojunk=False).get_matching_blocks()
        for k in range(m.size)
    ]
    starts = np.array([abs(w.start - t["start"]) for w, t in pairs])
    ends = np.array([abs(w.end - t["end"]) for w, t in pairs])
    return (starts, ends, [t for _, t in pairs]) if with_truth else (starts, ends)


@pytest.mark.slow
@pytest.mark.parametrize("language, recognised", [("en", 0.8), ("ru", 0.3)])
def test_word_boundaries_are_near_the_truth(whisper_base_engine, fixtures_dir, language, recognised):
    """en_words / ru_words: words spoken one by one with known gaps between them
    (make_word_fixture.py), with the default `trim_word_pauses`.

    openai-whisper's method alone makes words contiguous: a word starts where the one before it
    ends, so the pause before a word is counted in it (mean start error 0.21 s on en_words,
    bench/bench_word_timestamps.py). With the pauses taken out the starts follow the speech.
    Whisper base hears espeak-ng's Russian poorly: a third of its words are recognised, and the
    bounds speak for those. The bound is the issue's (0.15 s); misalignment by a word is ~0.4 s."""
    stem = f"{language}_words"
    truth = json.loads((fixtures_dir / f"{stem}.json").read_text(encoding="utf-8"))["words"]
    result = whisper_base_engine.transcribe(
        load_audio(fixtures_dir / f"{stem}.flac"), TranscribeOptions(language=language, word_timestamps=True)
    )
    words = [w for s in result.segments for w in s.words]
    starts, ends = word_errors(words, truth)
    assert len(starts) >= recognised * len(truth)
    assert starts.mean() < 0.15
    assert ends.mean() < 0.15
