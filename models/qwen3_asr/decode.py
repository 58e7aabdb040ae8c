"""Greedy decoding of Qwen3-ASR on a preallocated KV cache, batched, with a repetition guard.

Prompts of different lengths are left-padded (model.KVCache: per-row positions and key masks),
so each row decodes exactly what it would decode alone. A row stops at one of the model's stop
tokens, at `max_new` tokens, or when the repetition guard fires; finished rows leave the batch
(their cache rows are dropped) so the rest run at their own batch size.

Repetition guard: LLM-based ASR can loop on noise and music, repeating one phrase until the token
limit. Qwen's own pipeline decodes on and cleans the text afterwards (prompt.fix_repetitions: a
pattern of up to 20 characters repeated 20 or more times in a row is written once), so real speech
that repeats ("no, no, no, no", a chorus, a list) comes out whole. The guard stops a row only once
the fix-up is bound to collapse what it has: its last tokens are one pattern of p <= MAX_PERIOD
tokens repeated COLLAPSE_REPEATS times in a row, and that pattern's text is at most
COLLAPSE_PATTERN_CHARS characters. The tokens before the loop and one copy of the pattern are kept
(what the fix-up would have written for the run), and the row is marked `stopped="repetition"`.
A shorter run, or a run of a longer phrase, is decoded on exactly as Qwen's pipeline decodes it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from polyasr.models.qwen3_asr import model as net

MAX_PERIOD = 40
COLLAPSE_REPEATS = 20  # prompt.fix_repetitions' threshold (Qwen's detect_and_fix_repetitions)
COLLAPSE_PATTERN_CHARS = 20  # the longest pattern it collapses
# The encoder gives 12.5 tokens per second of audio; a transcript needs fewer, plus the language tag.
TOKENS_PER_SEC = 12.5
TAG_TOKENS = 32


def max_new_tokens(seconds: float) -> int:
    """The generation bound for a piece of audio: no speech has more tokens than the encoder's frames."""
    return TAG_TOKENS + math.ceil(seconds * TOKENS_PER_SEC)


def loop_start(tokens: list[int], detokenize) -> int | None:
    """If `tokens` ends in a loop that Qwen's text fix-up would write once (see module docstring),
    the length to keep (before the loop plus one copy of the pattern); else None.
    detokenize: ids -> text (the tokenizer's decode)."""
    n = len(tokens)
    for p in range(1, min(MAX_PERIOD, n // COLLAPSE_REPEATS) + 1):
        tail, r = tokens[n - p :], 1
        while r < COLLAPSE_REPEATS and tokens[n - (r + 1) * p : n - r * p] == tail:
            r += 1
        if r < COLLAPSE_REPEATS:
            continue
        # Token periodicity is not text periodicity: decode to check the fix-up's own condition (and
        # that the pattern decodes on its own, which a run of partial UTF-8 bytes does not).
        text = detokenize(tail)
        if not 0 < len(text) <= COLLAPSE_PATTERN_CHARS or detokenize(tokens[n - r * p :]) != text * r:
            continue
        while (r + 1) * p <= n and tokens[n - (r + 1) * p : n - r * p] == tail:
            r += 1
        return n - r * p + p
    return None


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)  # generated ids, stop token excluded
    logprobs: list[float] = field(default_factory=list)
    stopped: str = "length"  # "stop" | "length" | "repetition"


@dataclass
class DecodeStats:
    prefill_secs: float = 0.0  # prompt through the decoder and the first token chosen
    step_secs: float = 0.0
    steps: int = 0
    first_token_at: float | None = None  # perf_counter() when the first row's first token was known


def _pick(params, B, hidden):
    """Last position's hidden (B, 1, h) -> greedy ids (B,) and their log-probabilities, on the host."""
    logp = B.log_softmax(net.logits(params, B, hidden[:, -1:])[:, -1])
    ids, best = B.argmax(logp), B.max(logp)
    B.evaluate(ids, best)  # MLX: the step's one graph evaluation (both reads below are then copies)
    return B.to_numpy(ids), B.to_numpy(best)


def greedy(
    params,
    cfg,
    B,
    prompts: list,
    pad: np.ndarray,
    max_new: list[int],
    stop_ids,
    guard=None,
    stats: DecodeStats | None = None,
) -> list[Generation]:
    """prompts: (B, L, hidden) left-padded prompt embeddings; pad: left padding per row; max_new: bound per row;
    guard: the tokenizer's ids -> text to run the repetition guard with, or None/False for none.

    Returns one Generation per row.
    """
    stats = stats if stats is not None else DecodeStats()
    n, length = prompts.shape[0], prompts.shape[1]
    out = [Generation() for _ in range(n)]
    rows = np.arange(n)  # batch row -> item
    t0 = time.perf_counter()
    cache = net.new_cache(cfg, B, pad, length + max(max_new))
    ids, lps = _pick(params, B, net.decode(params, cfg, B, prompts, cache))
    stats.prefill_secs += time.perf_counter() - t0
    stats.first_token_at = stats.first_token_at or time.perf_counter()
    while True:
        alive = [
            j
            for j, item in enumerate(rows)
            if _advance(out[item], int(ids[j]), float(lps[j]), max_new[item], stop_ids, guard)
        ]
        if not alive:
            return out
        if len(alive) < len(rows):
            rows, ids = rows[alive], ids[alive]
            net.keep_rows(cache, B, alive)
        t0 = time.perf_counter()
        x = net.embed(params, B, B.asarray(ids[:, None].astype(np.int64)))
        ids, lps = _pick(params, B, net.decode(params, cfg, B, x, cache))
        stats.step_secs += time.perf_counter() - t0
        stats.steps += 1


def _advance(g: Generation, token: int, logprob: float, max_new: int, stop_ids, guard) -> bool:
    """Take one chosen token into a row; False when the row is finished."""
    if token in stop_ids:
        g.stopped = "stop"
        return False
    g.tokens.append(token)
    g.logprobs.append(logprob)
    if guard:
        keep = loop_start(g.tokens, guard)
        if keep is not None:
            del g.tokens[keep:], g.logprobs[keep:]
            g.stopped = "repetition"
            return False
    return len(g.tokens) < max_new
