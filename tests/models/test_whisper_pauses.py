"""Pauses taken out of Whisper's words (models/whisper/pauses.py), on constructed signals whose
speech and silence are known to the sample, and the word fixtures' ground truth itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from polyasr.models.whisper.pauses import MIN_PAUSE, frame_levels, trim_pauses
from polyasr.result import Segment, Word

RATE = 16000


def _signal(spans, seconds: float, noise_db: float | None = None) -> np.ndarray:
    """A 200 Hz tone at 0.3 over each (start, end) span (s), silence or white noise elsewhere."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for a, b in spans:
        on = (t >= a) & (t < b)
        x[on] = 0.3 * np.sin(2 * np.pi * 200 * t[on])
    if noise_db is not None:
        x += 10 ** (noise_db / 20) * np.random.default_rng(0).standard_normal(len(t))
    return x.astype(np.float32)


def _segment(words) -> Segment:
    ws = [Word(a, b, text, 0.9) for a, b, text in words]
    return Segment(ws[0].start, ws[-1].end, "".join(w.text for w in ws), 0.9, words=ws)


def _times(seg):
    return [(w.start, w.end) for w in seg.words]


@pytest.mark.parametrize("noise_db", [None, -50.0])
def test_a_pause_before_a_word_leaves_it(noise_db):
    """Speech 0.5-1.0 and 1.4-2.0; the alignment ran the second word from 0.9 (the first word's
    tail, then the 0.4 s pause): it starts at the speech again and the tail goes back to the first."""
    seg = _segment([(0.3, 0.9, " one"), (0.9, 2.0, " two")])
    trim_pauses([seg], _signal([(0.5, 1.0), (1.4, 2.0)], 3.0, noise_db), RATE)
    assert _times(seg) == [(0.5, 1.0), (1.4, 2.0)]
    assert (seg.start, seg.end) == (0.5, 2.0)
    assert seg.text == " one two"


def test_a_short_silence_inside_a_word_stays():
    """A stop closure: 60 ms of silence inside the word's span is no pause."""
    seg = _segment([(0.5, 1.0, " one"), (1.0, 1.6, " stop")])
    trim_pauses([seg], _signal([(0.5, 1.05), (1.11, 1.6)], 2.0), RATE)
    assert _times(seg) == [(0.5, 1.0), (1.0, 1.6)]
    assert MIN_PAUSE > 0.06


def test_silence_at_a_word_edge_is_trimmed():
    """A start inside silence (even a short one) moves to the speech; so does an end."""
    seg = _segment([(0.44, 1.3, " one")])
    trim_pauses([seg], _signal([(0.5, 1.0)], 2.0), RATE)
    assert _times(seg) == [(0.5, 1.0)] and (seg.start, seg.end) == (0.5, 1.0)


def test_nothing_moves_without_a_pause():
    """Noise nearly as loud as the speech (2.5 dB below it), or a span that is all silence: the
    alignment's times stay."""
    loud = _signal([(0.5, 1.0), (1.4, 2.0)], 3.0, noise_db=-16.0)
    seg = _segment([(0.3, 0.9, " one"), (0.9, 2.0, " two")])
    trim_pauses([seg], loud, RATE)
    assert _times(seg) == [(0.3, 0.9), (0.9, 2.0)]
    seg = _segment([(2.2, 2.8, " ghost")])
    trim_pauses([seg], _signal([(0.5, 1.0)], 3.0), RATE)
    assert _times(seg) == [(2.2, 2.8)]


def test_a_segment_bound_not_on_its_words_is_kept():
    seg = _segment([(0.3, 0.9, " one")])
    seg.start = 0.4
    trim_pauses([seg], _signal([(0.5, 0.9)], 2.0), RATE)
    assert seg.words[0].start == 0.5 and seg.start == 0.4


def test_frame_levels():
    x = np.full(RATE, 0.1, np.float32)
    np.testing.assert_allclose(frame_levels(x, RATE), 20 * np.log10(0.1), atol=1e-4)
    assert frame_levels(np.zeros(RATE // 2, np.float32), RATE).max() <= -99


@pytest.mark.parametrize("stem", ["en_words", "ru_words"])
def test_word_fixture_truth_is_where_the_sound_is(fixtures_dir, stem):
    """make_word_fixture.py: everything outside the true word intervals is digital silence, and
    each word's first and last millisecond is sound (above -40 dB of the word's peak), so the
    JSON's times are the words' own sound, not where espeak-ng's padded wav was placed."""
    audio, rate = sf.read(fixtures_dir / f"{stem}.flac", dtype="float32")
    truth = json.loads((fixtures_dir / f"{stem}.json").read_text(encoding="utf-8"))
    assert [w["word"] for w in truth["words"]] == truth["text"].split()
    inside = np.zeros(len(audio), bool)
    ms = rate // 1000
    for w in truth["words"]:
        a, b = round(w["start"] * rate), round(w["end"] * rate)
        inside[a:b] = True
        word = audio[a:b]
        rms = np.sqrt(np.mean(np.square(word[: len(word) // ms * ms].reshape(-1, ms)), axis=1))
        # 16-bit samples: a 1 ms RMS is off the generator's float one by at most a quantisation step
        assert min(rms[0], rms[-1]) > rms.max() * 10 ** (-40 / 20) - 2**-15, w
    assert not audio[~inside].any()
