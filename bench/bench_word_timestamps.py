"""Word timestamps: what they cost per model, and how near Whisper's words are to the truth.

Cost: the same transcription of en_long.wav (73 s, three 30 s windows) with and without
`word_timestamps`, the two alternating round by round (`side_by_side`), so both see the same load.
Whisper base uses the real weights (greedy, language forced; a second decoder pass over each
window's tokens, DTW on the host, then the pauses trimmed from the signal's level; windows after
the first seek to the end of their last word, so the two runs need not decode the same windows).
GigaAM and Parakeet run tiny random-weight checkpoints (no real weights ship on PyPI) made to emit
a dense token stream (see `engines`): their word timing is host work on the emitted tokens, so its
share of a tiny model's time is an upper bound on its share of a real one's. Under load the
end-to-end ratio of one round is noise, so the word step is also timed inside the same runs
(Whisper's `timings["words"]`; the CTC/TDT models' `words` calls): its extra time over the run
without words is the overhead. Goals: < 15 % for Whisper, < 2 % for CTC/TDT.

Accuracy: Whisper base on en_words.flac and ru_words.flac (words spoken one by one by espeak-ng
with known gaps, tests/fixtures/make_word_fixture.py): mean and 95th percentile of |start| and
|end| errors over the recognised words, for all words and split into words after a short gap and
after a pause, with openai-whisper's times (`trim_word_pauses=False`) and with the pauses trimmed
(the default). Each file is transcribed once with the trimming off; the trimmed times are the same
words passed through the function the pipeline calls (`models/whisper/pauses.py`: times only, the
text never changes).

Run: `pytest bench/bench_word_timestamps.py --benchmark-only -s` (one round per Whisper case;
POLYASR_BENCH_FULL=1 for three).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, note, quick_or_full, side_by_side

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.models.whisper.pauses import trim_pauses

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

AUDIO = "en_long"
PAUSE = 0.25  # seconds: a gap at least this long counts as a pause
MODELS = ["whisper-base", "gigaam-v3-ctc (tiny)", "parakeet-tdt-v3 (tiny)"]


def _group(model: str) -> str:
    load = os.getloadavg()[0]
    return f"{model}, {AUDIO}.wav, {torch.get_num_threads()} threads (load average {load:.1f} at the start)"


@pytest.fixture(scope="module")
def audio():
    return load_audio(FIXTURES / f"{AUDIO}.wav")


@pytest.fixture(scope="module")
def engines(whisper_base_dir, tmp_path_factory):
    """Whisper base (real), GigaAM v3 CTC and Parakeet TDT (tiny, random weights). A random model
    emits mostly blanks, which would hide the cost of the words (it grows with the tokens), so the
    blank (and TDT's zero duration) is pushed out of the tiny models' outputs: they then emit
    hundreds of tokens over en_long, as many as its speech has (few of them start a word)."""
    out = {"whisper-base": AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")}
    root = tmp_path_factory.mktemp("words-bench")
    try:
        from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

        torch.manual_seed(0)
        cfg = tiny_cfg()
        path = save_ckpt(root / "v3_ctc.ckpt", cfg, v3_state_dict(cfg))
        engine = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu")
        params, bias = engine.model.params, "head.decoder_layers.0.bias"
        params[bias] = params[bias].clone()  # the loaded one maps the checkpoint file
        params[bias][engine.model.cfg.blank_id] = -1e4
        out["gigaam-v3-ctc (tiny)"] = engine
    except ImportError:  # omegaconf writes the released layout
        pass
    try:
        from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_nemo

        config = tiny_config(48)
        model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)
        path = write_nemo(model, fe, sp, root / "tiny.nemo")
        engine = AsrEngine.from_model("parakeet-tdt-v3", path, device="cpu")
        # no blank, no zero duration: one token every 1 to 4 frames (80 ms each)
        cfg = engine.model.cfg
        host = engine.model.transducer.host
        host["out_b"] = host["out_b"].copy()
        host["out_b"][[cfg.blank_id, cfg.vocab_size + 1 + cfg.durations.index(0)]] = -1e4
        out["parakeet-tdt-v3 (tiny)"] = engine
    except ImportError:  # transformers builds the random reference
        pass
    return out


@pytest.mark.parametrize("model", MODELS)
def test_overhead(benchmark, engines, audio, model):
    if model not in engines:
        pytest.skip(f"{model}: its reference package is not installed")
    engine = engines[model]
    whisper = model.startswith("whisper")
    options = lambda words: TranscribeOptions(
        language="en" if whisper else None, temperatures=(0.0,), beam_size=1, word_timestamps=words
    )
    engine.transcribe(audio[: 5 * 16000], options(True))  # first-call costs out of both timings
    results, step, spent = {}, {True: [], False: []}, [0.0]

    def run(words: bool):
        spent[0] = 0.0
        results[words] = engine.transcribe(audio, options(words))
        # the word step of this run: Whisper's own stage; the CTC/TDT models' `words` calls, timed
        step[words].append(results[words].timings.get("words", 0.0) if whisper else spent[0])

    if not whisper:  # the step that turns tokens into segments, with or without their words
        inner = engine.model.words

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out

        engine.model.words = timed
    rounds, warmup = (quick_or_full(1, 3), 0) if whisper else (10, 1)
    group = _group(model)
    try:
        with_words, without = side_by_side(
            benchmark, group, "without", lambda: run(True), lambda: run(False), rounds, warmup, "with word timestamps"
        )
    finally:
        if not whisper:
            del engine.model.words
    assert all(s.words for s in results[True].segments) and not any(s.words for s in results[False].segments)
    extra = min(step[True]) - min(step[False])
    words = sum(len(s.words) for s in results[True].segments)
    tokens = sum(len(s.tokens) for s in results[True].segments)
    note(group, f"end to end: {with_words / without - 1:+.1%} (load average {os.getloadavg()[0]:.1f} at the end)")
    note(
        group,
        f"the word step, measured inside the same runs: {min(step[True]):.3f} s with words, "
        f"{min(step[False]):.3f} s without -> {extra / without:+.2%} of the run without words "
        f"({words} words, {tokens} tokens)",
    )


def _errors(words, truth):
    from test_whisper_words import word_errors

    starts, ends, matched = word_errors(words, truth, with_truth=True)
    gaps = {t["start"]: t["start"] - p["end"] for p, t in zip(truth, truth[1:])}
    pause = np.array([gaps.get(t["start"], 0.0) >= PAUSE for t in matched])
    return starts, ends, pause


def _lines(label: str, starts, ends, pause) -> list[str]:
    lines = []
    for which, pick in (("all", slice(None)), (f"gap < {PAUSE} s", ~pause), (f"pause >= {PAUSE} s", pause)):
        s, e = starts[pick], ends[pick]
        if len(s):
            lines.append(
                f"{label:<22} {which:<15} start mean {s.mean():.3f} p95 {np.percentile(s, 95):.3f}   "
                f"end mean {e.mean():.3f} p95 {np.percentile(e, 95):.3f}   ({len(s)} words)"
            )
    return lines


@pytest.mark.parametrize("language", ["en", "ru"])
def test_accuracy(benchmark, engines, language):
    """Whisper base word boundaries against the true times of the word fixture (timed once, so
    that `--benchmark-only` runs it too)."""
    stem = f"{language}_words"
    truth = json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))["words"]
    audio = load_audio(FIXTURES / f"{stem}.flac")
    options = TranscribeOptions(language=language, word_timestamps=True, trim_word_pauses=False)
    result = benchmark.pedantic(lambda: engines["whisper-base"].transcribe(audio, options), rounds=1, iterations=1)
    trimmed = copy.deepcopy(result.segments)
    trim_pauses(trimmed, audio, 16000)
    off, on = ([w for s in segs for w in s.words] for segs in (result.segments, trimmed))
    assert [w.text for w in off] == [w.text for w in on]
    errors_off, errors_on = _errors(off, truth), _errors(on, truth)
    lines = [f"{len(errors_off[0])} of {len(truth)} words recognised; errors in seconds"]
    lines += _lines("openai-whisper's", *errors_off) + _lines("pauses trimmed", *errors_on)
    print(f"\nWhisper base word boundaries, {stem}.flac\n  " + "\n  ".join(lines))
