"""Word timestamps for Whisper: the cross-attention of the alignment heads, aligned to the audio by DTW.

After a window is decoded, its text tokens are fed once more, as one sequence
`sot_seq <|notimestamps|> text <|endoftext|>`, and the cross-attention weights of the checkpoint's
alignment heads (a few (layer, head) pairs whose attention follows the audio) are formed:

    w[h] = softmax(q_h k_h^T / sqrt(D))[:, :frames]          (heads, tokens, frames)
    w    = median_filter_7((w - mean_t w) / std_t w)         normalised over tokens, smoothed over time
    path = DTW(-mean_h w[<|notimestamps|> ... last text token])

Each word starts at the frame where the path first reaches its first token's row and ends where it
reaches the next word's (20 ms frames, the encoder's positions). Punctuation joins its neighbour
and over-long words at sentence and segment edges are cut, as openai-whisper's timing.py does;
segment bounds then follow their words. Only the alignment heads' weights are formed (on the host,
from the decoder's queries and the cached keys), so the main pass keeps its fused attention.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from polyasr.models.whisper import model as net
from polyasr.result import Word

POSITIONS_PER_SECOND = 50  # encoder positions: the DTW's time axis
MEL_FRAMES_PER_SECOND = 100  # what `seek` counts
MEDIAN_WIDTH = 7
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"
# Languages written without spaces: words are split wherever the tokens decode to whole characters.
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}

# (decoder layer, head) pairs per published size, for checkpoints that do not list their own
# (openai-whisper's table; HF generation_config.json and CTranslate2 config.json carry the same).
DEFAULT_ALIGNMENT_HEADS = {
    "whisper-tiny.en": ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)),
    "whisper-tiny": ((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)),
    "whisper-base.en": ((3, 3), (4, 7), (5, 1), (5, 5), (5, 7)),
    "whisper-base": ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)),
    "whisper-small.en": (
        (6, 6),
        (7, 0),
        (7, 3),
        (7, 8),
        (8, 2),
        (8, 5),
        (8, 7),
        (9, 0),
        (9, 4),
        (9, 8),
        (9, 10),
        (10, 0),
        (10, 1),
        (10, 2),
        (10, 3),
        (10, 6),
        (10, 11),
        (11, 2),
        (11, 4),
    ),  # fmt: skip
    "whisper-small": ((5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5)),
    "whisper-medium.en": (
        (11, 4),
        (14, 1),
        (14, 12),
        (14, 14),
        (15, 4),
        (16, 0),
        (16, 4),
        (16, 9),
        (17, 12),
        (17, 14),
        (18, 7),
        (18, 10),
        (18, 15),
        (20, 0),
        (20, 3),
        (20, 9),
        (20, 14),
        (21, 12),
    ),  # fmt: skip
    "whisper-medium": ((13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)),
    "whisper-large-v2": (
        (10, 12),
        (13, 17),
        (16, 11),
        (16, 12),
        (16, 13),
        (17, 15),
        (17, 16),
        (18, 4),
        (18, 11),
        (18, 19),
        (19, 11),
        (21, 2),
        (21, 3),
        (22, 3),
        (22, 9),
        (22, 12),
        (23, 5),
        (23, 7),
        (23, 13),
        (25, 5),
        (26, 1),
        (26, 12),
        (27, 15),
    ),  # fmt: skip
    "whisper-large-v3": ((7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6)),
    "whisper-large-v3-turbo": ((2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)),
}


def alignment_heads(cfg, model_id: str) -> tuple[tuple[int, int], ...]:
    """The checkpoint's own heads, else the published ones for the id, else every head of the
    upper half of the decoder (openai-whisper's default for an unknown checkpoint)."""
    if cfg.alignment_heads:
        return tuple(cfg.alignment_heads)
    if model_id in DEFAULT_ALIGNMENT_HEADS:
        return DEFAULT_ALIGNMENT_HEADS[model_id]
    layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    return tuple((i, h) for i in range(layers // 2, layers) for h in range(heads))


@dataclass
class WordTiming:
    text: str
    tokens: list[int]
    start: float  # seconds from the window's start
    end: float
    probability: float


# ---- the numerics ------------------------------------------------------------------------------


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of odd `width` along the last axis, edges reflected."""
    pad = width // 2
    if x.shape[-1] <= pad:  # too short to reflect: left as it is
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.sort(windows, axis=-1)[..., pad]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through cost (N, M) from (0, 0) to (N-1, M-1) -> (rows, cols).

    Steps are diagonal, down (next row, same column) or right (same row, next column). Ties go
    to right, then down, as the reference breaks them; accumulated costs are float32 as there.
    Cells on one anti-diagonal depend only on the two before it, so each diagonal is one
    vectorised step."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    acc[0, 0] = 0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        best = np.where(step == 0, c0, np.where(step == 1, c1, c2))
        acc[i, j] = cost[i - 1, j - 1] + best.astype(np.float64)
        trace[i, j] = step
    trace[0, :], trace[:, 0] = 2, 1
    path, i, j = [], n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    rows, cols = np.array(path[::-1]).T
    return rows, cols


def split_words(tok, tokens: list[int], language: str | None) -> tuple[list[str], list[list[int]]]:
    """Text tokens -> words with their tokens: a word begins at a token that starts with a space
    or is punctuation; languages without spaces split at each whole character."""
    pieces, piece_tokens, current, full, at = [], [], [], tok.decode(tokens), 0
    for t in tokens:  # pieces that decode to whole characters (a character may span tokens)
        current.append(t)
        text = tok.decode(current)
        if "\ufffd" not in text or full[at + text.index("\ufffd")] == "\ufffd":
            pieces.append(text)
            piece_tokens.append(current)
            current, at = [], at + len(text)
    if language in NO_SPACE_LANGUAGES:
        return pieces, piece_tokens
    words, word_tokens = [], []
    for text, ts in zip(pieces, piece_tokens):
        if not words or text.startswith(" ") or text.strip() in string.punctuation:
            words.append(text)
            word_tokens.append(list(ts))
        else:
            words[-1] += text
            word_tokens[-1] += ts
    return words, word_tokens


def merge_punctuation(words: list[WordTiming]) -> None:
    """Opening punctuation joins the word after it, closing punctuation the word before it; the
    emptied entries stay (with no text and no tokens) so token counts still line up."""
    following = len(words) - 1
    for i in range(len(words) - 2, -1, -1):
        w = words[i]
        if w.text.startswith(" ") and w.text.strip() in PREPEND_PUNCTUATION:
            nxt = words[following]
            nxt.text, nxt.tokens = w.text + nxt.text, w.tokens + nxt.tokens
            w.text, w.tokens = "", []
        else:
            following = i
    previous = 0
    for i in range(1, len(words)):
        prev, w = words[previous], words[i]
        if not prev.text.endswith(" ") and w.text in APPEND_PUNCTUATION:
            prev.text, prev.tokens = prev.text + w.text, prev.tokens + w.tokens
            w.text, w.tokens = "", []
        else:
            previous = i


# ---- one window ----------------------------------------------------------------------------------


def head_weights(m, audio_features, tokens: list[int], heads):
    """Feed `tokens` once over `audio_features` (1, T, d) -> (pre-softmax cross-attention scores of
    `heads` (n_heads, len(tokens), T) float32 on the host, decoder hidden states (1, len(tokens), d)).

    The scores are formed on the host from the layer's queries and cached keys: a few heads of a
    few hundred tokens, and what follows (median filter, DTW) runs on the host anyway."""
    B, cfg = m.B, m.cfg
    cache = net.new_cache(m.params, cfg, B, audio_features, len(tokens))
    queries = {}
    hidden = net.decode(m.params, cfg, B, B.asarray(np.array([tokens], dtype=np.int64)), cache, queries)
    scale = (cfg.d_model // cfg.decoder_attention_heads) ** -0.5
    layers = {i: (B.to_numpy(queries[i])[0], B.to_numpy(cache.cross_k[i])[0]) for i, _ in heads}
    scores = np.stack([layers[i][0][h].astype(np.float32) @ layers[i][1][h].astype(np.float32).T for i, h in heads])
    return scores * np.float32(scale), hidden


def token_probabilities(m, hidden, tokens: list[int]) -> np.ndarray:
    """hidden (1, n, d) at the positions before `tokens` (n,) -> each token's probability, the
    softmax taken over the text tokens (below <|endoftext|>), as the reference does."""
    logits = m.B.to_numpy(net.logits(m.params, m.B, hidden))[0, :, : m.tok.eot].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits[np.arange(len(tokens)), tokens]) / np.exp(logits).sum(axis=-1)
    return p


def find_alignment(m, audio_features, text_tokens, sot_seq, frames: int, heads, language) -> list[WordTiming]:
    """Words of `text_tokens` with start/end (seconds from the window's start) and probability.

    frames: mel frames of audio in the window; the attention beyond them (padding) is not looked at."""
    tok = m.tok
    if not text_tokens:
        return []
    tokens = [*sot_seq, tok.no_timestamps, *text_tokens, tok.eot]
    scores, hidden = head_weights(m, audio_features, tokens, heads)
    n0 = len(sot_seq)
    probs = token_probabilities(m, hidden[:, n0 : n0 + len(text_tokens)], text_tokens)
    w = scores[:, :, : frames // 2]
    w = np.exp(w - w.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    w = (w - w.mean(axis=-2, keepdims=True)) / w.std(axis=-2, keepdims=True)
    matrix = median_filter(w, MEDIAN_WIDTH).mean(axis=0)[n0:-1]  # <|notimestamps|> and the text rows
    rows, cols = dtw(-matrix.astype(np.float64))
    words, word_tokens = split_words(tok, text_tokens, language)
    # The path's first step into each row: row k is entered when token k-1 has been heard.
    entered = cols[np.diff(rows, prepend=-1).astype(bool)] / POSITIONS_PER_SECOND
    bounds = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens])])
    return [
        WordTiming(text, ts, float(entered[a]), float(entered[b]), float(np.mean(probs[a:b])))
        for text, ts, a, b in zip(words, word_tokens, bounds[:-1], bounds[1:])
    ]


class WordAligner:
    """Adds words to each window's segments, carrying what the next window needs: where speech
    last ended (a long first word after a pause is cut against it)."""

    def __init__(self, m, sot_seq: list[int], language: str | None):
        self.m, self.sot_seq, self.language = m, sot_seq, language
        self.heads = alignment_heads(m.cfg, m.name)
        self.last_speech = 0.0

    def add_words(self, segments, audio_features, window_tokens, seek: int, frames: int, advance: int) -> int:
        """Give `segments` (one window's, times absolute) their words and the bounds the words
        imply -> the mel frames to advance: to the end of the last word, unless the window
        closed with a single timestamp (then it is done, as decided before)."""
        if not segments:
            return advance
        tok, offset = self.m.tok, seek / MEL_FRAMES_PER_SECOND
        per_segment = [[t for t in s.tokens if t < tok.eot] for s in segments]
        text_tokens = [t for ts in per_segment for t in ts]
        timings = find_alignment(self.m, audio_features, text_tokens, self.sot_seq, frames, self.heads, self.language)
        median = _trim_sentence_edges(timings)
        merge_punctuation(timings)
        _assign(segments, per_segment, timings, offset, median, self.last_speech)
        ends = [w.end for s in segments for w in s.words]
        last_end = ends[-1] if ends else segments[-1].end
        self.last_speech = last_end
        single_end = [t >= tok.timestamp_begin for t in window_tokens[-2:]] == [False, True]
        if not single_end and last_end > offset:
            return round(last_end * MEL_FRAMES_PER_SECOND) - seek
        return advance


def _trim_sentence_edges(timings: list[WordTiming]) -> float:
    """Cut a word longer than twice the median word (at most 0.7 s) that is, or follows, a
    sentence end: such a word has soaked up a pause. -> the median duration (0 if none)."""
    durations = np.array([w.end - w.start for w in timings])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = 2 * median
    if len(durations):
        for prev, w in zip(timings, timings[1:]):
            if w.end - w.start > longest:
                if w.text in SENTENCE_END:
                    w.end = w.start + longest
                elif prev.text in SENTENCE_END:
                    w.start = w.end - longest
    return median


def _assign(segments, per_segment, timings, offset: float, median: float, last_speech: float) -> None:
    """Hand the window's words out to its segments by token count (times made absolute, to 10 ms),
    then reconcile each segment's bounds with its first and last word."""
    longest, k = 2 * median, 0
    for seg, tokens in zip(segments, per_segment):
        taken, words = 0, []
        while k < len(timings) and taken < len(tokens):
            t = timings[k]
            if t.text:
                words.append(Word(round(offset + t.start, 2), round(offset + t.end, 2), t.text, t.probability))
            taken += len(t.tokens)
            k += 1
        if words:
            _fit_segment(seg, words, median, longest, last_speech)
            last_speech = seg.end
        seg.words = words


def _fit_segment(seg, words: list[Word], median: float, longest: float, last_speech: float) -> None:
    first, last = words[0], words[-1]
    # After a pause, the first (and second) word may have stretched back into it.
    if first.end - last_speech > 4 * median and (
        first.end - first.start > longest or (len(words) > 1 and words[1].end - first.start > 2 * longest)
    ):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            first.end = words[1].start = max(words[1].end / 2, words[1].end - longest)
        first.start = max(0, first.end - longest)
    # A first word much earlier than the segment's own start is less credible than the segment.
    if seg.start < first.end and seg.start - 0.5 > first.start:
        first.start = max(0, min(first.end - median, seg.start))
    else:
        seg.start = first.start
    if seg.end > last.start and seg.end + 0.5 < last.end:
        last.end = max(last.start + median, seg.end)
    else:
        seg.end = last.end
