"""Pauses taken out of Whisper's words, found from the signal's level.

The DTW path of `alignment.py` (openai-whisper's method) is contiguous: a word starts where the one
before it ends, so the pause before a word is counted in it and its start comes early, often by the
whole pause. A word's own samples say where its speech is:

    level[f] = 10 log10(mean(x[f*160 : (f+1)*160]^2))     10 ms frames, dB
    silent   = level <= max(peak of the word's span - 40 dB, floor + 6 dB)
    floor    = 10th percentile of level over the audio (the noise, or digital silence)

Within each word's span, the first silent run that either begins the span or lasts at least
`MIN_PAUSE` (and does not reach the span's end) is a pause the word took in: the word starts where
it ends, and the speech before it, if any, is the previous word's tail (that word then ends where
the pause begins, when it ended where this word began). A silent run that ends the span is
trimmed from the word's end. Shorter silent runs inside a span are left alone: stop consonants
close the vocal tract for up to about 0.1 s inside a word. Times only ever move inside the span
the alignment gave, so where no pause is found (noise as loud as speech, no pause at all) the
words stay as openai-whisper's; the text never changes.

Like stable-ts's silence suppression and WhisperX's forced alignment, this is a correction
applied after openai-whisper's method; `TranscribeOptions(trim_word_pauses=False)` leaves it out.
"""

from __future__ import annotations

import numpy as np

FRAMES_PER_SECOND = 100
BELOW_PEAK_DB = 40.0  # quieter than this below the word's loudest frame is no speech
ABOVE_FLOOR_DB = 6.0  # a stationary noise floor fluctuates well within this over 10 ms frames
MIN_PAUSE = 0.1  # seconds: longer than the closure of a stop consonant
FLOOR_PERCENTILE = 10


def frame_levels(audio: np.ndarray, rate: int) -> np.ndarray:
    """audio (N,) -> level of each 10 ms frame in dB (digital silence at -100 dB)."""
    hop = rate // FRAMES_PER_SECOND
    n = len(audio) // hop
    power = np.mean(np.square(audio[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    return 10 * np.log10(power + 1e-10)


def _silent_runs(silent: np.ndarray) -> list[tuple[int, int]]:
    """Boolean frames -> [(first, past the last)] of each run of True."""
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def trim_pauses(segments, audio: np.ndarray, rate: int) -> None:
    """Move the words of `segments` (times in seconds of `audio`) off the pauses they span, in
    place; a segment bound that was its first or last word's stays so."""
    words = [w for s in segments for w in s.words]
    if not words:
        return
    follows = [(s.words and s.start == s.words[0].start, s.words and s.end == s.words[-1].end) for s in segments]
    levels = frame_levels(audio, rate)
    if not len(levels):
        return
    floor = float(np.percentile(levels, FLOOR_PERCENTILE)) + ABOVE_FLOOR_DB
    min_pause = round(MIN_PAUSE * FRAMES_PER_SECOND)
    for i, word in enumerate(words):
        a = round(word.start * FRAMES_PER_SECOND)
        span = levels[a : round(word.end * FRAMES_PER_SECOND)]
        if len(span) < 2:
            continue
        silent = span <= max(span.max() - BELOW_PEAK_DB, floor)
        runs = _silent_runs(silent)
        pause = next(((x, y) for x, y in runs if y < len(span) and (x == 0 or y - x >= min_pause)), None)
        if pause is not None:
            x, y = pause
            if x > 0 and i and words[i - 1].end == word.start:
                words[i - 1].end = round((a + x) / FRAMES_PER_SECOND, 2)
            word.start = round((a + y) / FRAMES_PER_SECOND, 2)
        x, y = runs[-1] if runs else (0, 0)
        if y == len(span) and (a + x) / FRAMES_PER_SECOND > word.start:
            word.end = round((a + x) / FRAMES_PER_SECOND, 2)
    for s, (start, end) in zip(segments, follows):
        s.start = s.words[0].start if start else s.start
        s.end = s.words[-1].end if end else s.end
