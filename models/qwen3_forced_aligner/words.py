"""Text -> the units Qwen3-ForcedAligner times, and its timestamp repair; the rules of Qwen's
`Qwen3ForceAlignProcessor` (qwen_asr/inference/qwen3_forced_aligner.py).

Units: the text is cut at whitespace; each piece keeps only letters, digits (Unicode categories
L*, N*) and apostrophes; CJK ideographs become units of their own, the rest of a piece one unit.
Japanese and Korean need a word segmenter (Qwen uses nagisa / soynlp), which polyasr does not ship.

Each unit also keeps where it lies in the text, so the words handed back follow openai-whisper's
convention: a word carries the space before it and the punctuation around it, and the words of
a text joined give the text back exactly.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
)


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK)


def is_kept(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in "LN"


@dataclass(frozen=True)
class Unit:
    """One aligned unit: its kept characters and the span [start, end) of text they come from."""

    text: str
    start: int
    end: int


def split_units(text: str) -> list[Unit]:
    """text -> the units the aligner gets, in order (see the module docstring)."""
    units: list[Unit] = []
    for piece in re.finditer(r"\S+", text):
        run: list[tuple[int, str]] = []
        for i, ch in enumerate(piece.group(), piece.start()):
            if not is_kept(ch):
                continue
            if is_cjk(ch):
                _flush(run, units)
                units.append(Unit(ch, i, i + 1))
            else:
                run.append((i, ch))
        _flush(run, units)
    return units


def _flush(run: list[tuple[int, str]], units: list[Unit]) -> None:
    if run:
        units.append(Unit("".join(ch for _, ch in run), run[0][0], run[-1][0] + 1))
        run.clear()


def word_texts(text: str, units: list[Unit]) -> list[str]:
    """Each unit's word as openai-whisper writes words: cut at the first whitespace between two
    units (punctuation before it stays with the earlier word, after it goes to the later one), or
    where the later unit starts when nothing separates them; text before the first unit and after
    the last belongs to the first and the last word."""
    cuts = [0]
    for prev, unit in zip(units, units[1:]):
        gap = text[prev.end : unit.start]
        space = re.search(r"\s", gap)
        cuts.append(prev.end + space.start() if space else unit.start)
    cuts.append(len(text))
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


def fix_timestamps(values) -> list[int]:
    """Predicted times (2 per unit) -> non-decreasing ones, as Qwen repairs them: the longest
    non-decreasing subsequence (the first one found) is kept; a run of at most two values outside
    it takes its nearer kept neighbour's value (the left one on a tie), a longer run is spaced
    evenly between its neighbours (or copies the one it has). Values end as ints (truncated)."""
    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return []
    arr = np.asarray(data)
    best, parent = np.ones(n, np.int64), np.full(n, -1, np.int64)
    for i in range(1, n):
        ok = np.flatnonzero(arr[:i] <= arr[i])
        if ok.size:
            j = ok[np.argmax(best[ok])]  # the first j with the longest chain
            best[i], parent[i] = best[j] + 1, j
    normal = np.zeros(n, bool)
    i = int(np.argmax(best))
    while i != -1:
        normal[i], i = True, int(parent[i])
    out = list(data)
    i = 0
    while i < n:
        if normal[i]:
            i += 1
            continue
        j = i
        while j < n and not normal[j]:
            j += 1
        left = out[i - 1] if i > 0 else None  # kept values never change, and i - 1 is kept
        right = out[j] if j < n else None
        _fill(out, i, j, left, right)
        i = j
    return [int(v) for v in out]


def _fill(out: list[float], i: int, j: int, left, right) -> None:
    """Values i..j-1 (outside the kept chain) from the kept neighbours `left` (at i-1), `right` (at j)."""
    for k in range(i, j):
        if left is None or right is None:
            out[k] = right if left is None else left
        elif j - i <= 2:
            out[k] = left if k - (i - 1) <= j - k else right
        else:
            out[k] = left + (right - left) / (j - i + 1) * (k - i + 1)
