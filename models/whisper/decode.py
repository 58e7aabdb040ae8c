"""Decoding one 30 s window: logit rules, greedy / sampled loop on the KV cache, temperature fallback.

The rules are Whisper's: suppress blank at the start, suppress non-speech tokens, and the
timestamp grammar (timestamps come in pairs, never decrease, the first token is a timestamp no
later than `max_initial_timestamp`, and a timestamp is forced when the timestamps together are
more likely than any text token). They run on host numpy over one row of logits per candidate:
the rules are sequential per row, and the row is the only thing that crosses to the host.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from polyasr import _decode
from polyasr.models.whisper import model as net

TIME_PRECISION = 0.02  # seconds per timestamp token (30 s / 1500 encoder positions)


@dataclass
class DecodeResult:
    tokens: list[int]  # sampled tokens, <|endoftext|> excluded
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    token_logprobs: list[float] = field(default_factory=list)
    finish: str = "eot"  # "eot", or "length" when the sample limit cut the window


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class LogitRules:
    """Whisper's logit filters for one window's settings, applied in place to (n, vocab) float32 rows."""

    def __init__(self, tok, cfg, sample_begin: int, opts):
        self.tok, self.sample_begin = tok, sample_begin
        self.timestamps = not opts.without_timestamps
        suppress = set(cfg.suppress_tokens) if cfg.suppress_tokens is not None else set(tok.non_speech_tokens)
        suppress |= {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech}
        self.suppress = np.array(sorted(i for i in suppress if 0 <= i < cfg.vocab_size), dtype=np.int64)
        begin = cfg.begin_suppress_tokens if cfg.begin_suppress_tokens is not None else tok.encode(" ") + [tok.eot]
        self.begin_suppress = np.array(list(begin), dtype=np.int64) if opts.suppress_blank else None
        self.max_initial = round(opts.max_initial_timestamp / TIME_PRECISION) if opts.max_initial_timestamp else None

    def __call__(self, logits: np.ndarray, sampled: list[list[int]]):
        first = len(sampled[0]) == 0
        if first and self.begin_suppress is not None:
            logits[:, self.begin_suppress] = -np.inf
        logits[:, self.suppress] = -np.inf
        if self.timestamps:
            self._timestamp_rules(logits, sampled, first)

    def _timestamp_rules(self, logits, sampled, first):
        tb, eot = self.tok.timestamp_begin, self.tok.eot
        logits[:, self.tok.no_timestamps] = -np.inf
        for k, seq in enumerate(sampled):
            last_ts = len(seq) >= 1 and seq[-1] >= tb
            penult_ts = len(seq) < 2 or seq[-2] >= tb
            if last_ts:
                if penult_ts:  # a pair just closed: text (or eot) must follow
                    logits[k, tb:] = -np.inf
                else:  # an opening timestamp: the next is a timestamp or eot, not text
                    logits[k, :eot] = -np.inf
            stamps = [t for t in seq if t >= tb]
            if stamps:  # never go back in time; a closed segment must have non-zero length
                floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, tb:floor] = -np.inf
        if first:
            logits[:, :tb] = -np.inf
            if self.max_initial is not None:
                logits[:, tb + self.max_initial + 1 :] = -np.inf
        # If the timestamps together outweigh the best text token, a timestamp must come.
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = logits[:, tb:]
            ts_max = ts.max(axis=1, keepdims=True)
            ts_lse = np.log(np.exp(ts - ts_max).sum(axis=1)) + ts_max[:, 0]
            text_max = logits[:, :tb].max(axis=1)
        logits[ts_lse > text_max, :tb] = -np.inf


def _log_softmax_at(logits: np.ndarray, index: np.ndarray) -> np.ndarray:
    """log_softmax(logits)[k, index[k]] for each row, without materialising the whole softmax."""
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return logits[np.arange(len(index)), index] - lse


def _top_tokens(logits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most likely tokens of each row of logits (rows, vocab) float32, best first (equal
    values: lower token first), and their log-probabilities, (rows, n) each: the values a float32
    log-softmax of the whole row gives (the reference ranks beams by those), computed at the n
    tokens only. The log-softmax is monotonic in the logits, so their top n are the same tokens.
    The selection is one pass per row in C++: a partial sort degenerates when most of a row is
    -inf, as the timestamp rules leave it."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    top, picked = _decode.top_k(logits, n)
    m = picked[:, :1]  # the best of a row is its maximum
    with np.errstate(divide="ignore"):
        log_sum = np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    values = picked - m - log_sum
    order = np.lexsort((top, -values), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


def _choose(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    if temperature == 0:
        return logits.argmax(axis=1)
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in p])


def initial_tokens(tok, cfg, prompt: list[int], sot_seq: list[int], without_timestamps: bool) -> list[int]:
    """[<|startofprev|> prompt...] sot_seq [<|notimestamps|>]; the prompt keeps its last n_ctx/2 - 1 tokens."""
    tokens = []
    if prompt:
        tokens = [tok.sot_prev] + prompt[-(cfg.max_target_positions // 2 - 1) :]
    tokens += sot_seq
    if without_timestamps:
        tokens.append(tok.no_timestamps)
    return tokens


def sample_limit(cfg, n_initial: int) -> int:
    """Most tokens a window may sample after `n_initial` given ones: half the text context, and no
    more than fit in it (the reference stops once the sequence is one past the context; that last
    token is never fed back, so it needs no position)."""
    return min(cfg.max_target_positions // 2, cfg.max_target_positions + 1 - n_initial)


def _ranking_score(sum_logprob: float, length: int, length_penalty: float | None) -> float:
    """The reference's ranking of finished candidates: the log-probability over the length, or over
    Google NMT's ((5 + length) / 6) ** alpha when a length penalty alpha is given."""
    penalty = max(length, 1) if length_penalty is None else ((5 + length) / 6) ** length_penalty
    return sum_logprob / penalty


def _result(tok, seq, lps, sum_logprob, no_speech_prob, temperature) -> DecodeResult:
    """One window's chosen candidate: `seq` its sampled tokens, ending with <|endoftext|> unless the
    sample limit cut it; `lps` the log-probability of each."""
    ended = bool(seq) and seq[-1] == tok.eot
    tokens = list(seq[:-1] if ended else seq)
    text = tok.decode(tokens)
    return DecodeResult(
        tokens=tokens,
        text=text,
        avg_logprob=float(sum_logprob) / (len(tokens) + 1),
        no_speech_prob=no_speech_prob,
        temperature=temperature,
        compression_ratio=compression_ratio(text.strip()),
        token_logprobs=list(lps[: len(tokens)]),
        finish="eot" if ended else "length",
    )


class _Sampling:
    """Greedy (temperature 0, one row per window) or best-of-n sampling (n rows per window, each
    window drawing from its own generator). A row that ended is fed <|endoftext|> until every row
    of its window has; then the window's rows leave the batch."""

    def __init__(self, tok, n_windows: int, group: int, temperature: float, rngs, length_penalty):
        self.tok, self.group, self.temperature, self.rngs = tok, group, temperature, rngs
        self.length_penalty = length_penalty
        self.windows = list(range(n_windows))  # the window of each group of rows, in cache order
        self.rows = [[] for _ in range(n_windows * group)]  # tokens sampled per row
        self.lps = [[] for _ in range(n_windows * group)]
        self.ended = np.zeros(n_windows * group, dtype=bool)
        self.no_speech: list[float] = []
        self.results: dict[int, DecodeResult] = {}

    def step(self, logits: np.ndarray):
        """logits (rows, vocab) after the rules -> (rows kept, None when all are; next token per row kept)."""
        g, eot = self.group, self.tok.eot
        if self.temperature == 0:
            nxt = logits.argmax(axis=1)
        else:
            parts = [logits[k * g : (k + 1) * g] for k in range(len(self.windows))]
            nxt = np.concatenate([_choose(p, self.temperature, self.rngs[w]) for p, w in zip(parts, self.windows)])
        nxt[self.ended] = eot
        lp = _log_softmax_at(logits, nxt)
        for k in np.flatnonzero(~self.ended):
            self.rows[k].append(int(nxt[k]))
            self.lps[k].append(float(lp[k]))
        self.ended |= nxt == eot
        done = self.ended.reshape(-1, g).all(axis=1)
        for k in np.flatnonzero(done):
            self._finish(k)
        if not done.any():
            return None, nxt
        keep = np.flatnonzero(np.repeat(~done, g))
        self.windows = [w for w, d in zip(self.windows, done) if not d]
        self.rows, self.lps = [self.rows[i] for i in keep], [self.lps[i] for i in keep]
        self.ended = self.ended[keep]
        return keep, nxt[keep]

    @property
    def done(self) -> bool:
        return not self.windows

    def _finish(self, k: int):
        g = self.group
        rows, lps = self.rows[k * g : (k + 1) * g], self.lps[k * g : (k + 1) * g]
        w = self.windows[k]
        self.results[w] = _best(self.tok, rows, lps, self.no_speech[w], self.temperature, self.length_penalty)

    def finish(self) -> list[DecodeResult]:
        """Every window's result, those cut at the sample limit included, in window order."""
        for k in range(len(self.windows)):
            self._finish(k)
        return [self.results[w] for w in sorted(self.results)]


def _best(tok, sampled, logprobs, no_speech_prob, temperature, length_penalty=None) -> DecodeResult:
    """The most likely candidate by the reference's ranking (`_ranking_score`); its log-probability
    counts <|endoftext|>, its length does not."""
    scores = []
    for seq, lps in zip(sampled, logprobs):
        length = len(seq) - (1 if seq and seq[-1] == tok.eot else 0)
        scores.append(_ranking_score(sum(lps), length, length_penalty))
    k = int(np.argmax(scores))
    return _result(tok, sampled[k], logprobs[k], sum(logprobs[k]), no_speech_prob, temperature)


class _BeamSearch:
    """Beam search as openai-whisper runs it: every step, each beam proposes its beam_size + 1 most
    likely next tokens; of a window's proposals (ranked by summed log-probability, float32) the best
    beam_size that do not end become its beams, and those that end ranked above the last of them are
    finished candidates. A window is done when it has round(beam_size * patience) finished ones;
    its rows then leave the batch. The beams are rows of one KV cache, reordered by index."""

    def __init__(self, tok, n_windows: int, beam_size: int, patience: float | None, length_penalty):
        self.tok, self.group, self.length_penalty = tok, beam_size, length_penalty
        self.max_finished = round(beam_size * (patience or 1.0))
        self.windows = list(range(n_windows))
        self.rows = [[] for _ in range(n_windows * beam_size)]
        self.lps = [[] for _ in range(n_windows * beam_size)]
        self.sums = np.zeros(n_windows * beam_size, dtype=np.float32)
        self.finished: list[list[tuple]] = [[] for _ in range(n_windows)]  # (score, tokens, lps) per window
        self.no_speech: list[float] = []
        self.results: dict[int, DecodeResult] = {}

    def step(self, logits: np.ndarray):
        """logits (rows, vocab) after the rules -> (source row of each new row, next token of each)."""
        g, eot = self.group, self.tok.eot
        top = _top_tokens(logits, g + 1)
        source, nxt, rows, lps, sums, done = [], [], [], [], [], np.zeros(len(self.windows), dtype=bool)
        for k in range(len(self.windows)):
            picked, ended = self._extend(*top, k)
            room = self.max_finished - len(self.finished[k])
            self.finished[k] += [(s, self.rows[r] + [eot], self.lps[r] + [lp]) for s, r, lp in ended[:room]]
            done[k] = len(self.finished[k]) >= self.max_finished
            for s, r, t, lp in picked:
                source.append(r), nxt.append(t), sums.append(s)
                rows.append(self.rows[r] + [t]), lps.append(self.lps[r] + [lp])
        self.rows, self.lps, self.sums = rows, lps, np.array(sums, dtype=np.float32)
        source, nxt = np.array(source, dtype=np.int64), np.array(nxt, dtype=np.int64)
        if not done.any():
            return source, nxt
        for k in np.flatnonzero(done):  # topped up from the beams just chosen, as the reference does
            self._finish(k)
        keep = np.flatnonzero(np.repeat(~done, g))
        self.windows = [w for w, d in zip(self.windows, done) if not d]
        self.finished = [f for f, d in zip(self.finished, done) if not d]
        self.rows, self.lps, self.sums = [rows[i] for i in keep], [lps[i] for i in keep], self.sums[keep]
        return source[keep], nxt[keep]

    def _extend(self, tokens: np.ndarray, logprobs: np.ndarray, k: int):
        """Window k's candidates from each row's best tokens and their log-probabilities (rows, g + 1)
        -> (beam_size best that go on: (sum, source row, token, logprob); those that end ranked above
        the last of them: (sum, source row, logprob)), best first."""
        g, eot = self.group, self.tok.eot
        first = not self.rows[k * g]
        rows = slice(k * g, k * g + (1 if first else g))  # at the first step the beams are one prefix
        scores = (self.sums[rows, None] + logprobs[rows]).ravel()
        # a stable sort of the row-major candidates: ties keep row order, then token rank
        order = np.argsort(-scores, kind="stable")
        picked, finished = [], []
        for c in order:
            r, j = divmod(int(c), tokens.shape[1])
            r += rows.start
            t, lp = int(tokens[r, j]), float(logprobs[r, j])
            if t == eot:
                finished.append((scores[c], r, lp))
            else:
                picked.append((scores[c], r, t, lp))
                if len(picked) == g:
                    break
        return picked, finished

    @property
    def done(self) -> bool:
        return not self.windows

    def _finish(self, k: int):
        """Window k's result: its finished candidates, topped up with its best live beams when fewer
        than beam_size finished, ranked by `_ranking_score`."""
        g, candidates = self.group, list(self.finished[k])
        if len(candidates) < g:  # best first; among equal sums the later beam first (numpy's argsort reversed)
            for j in np.argsort(self.sums[k * g : (k + 1) * g], kind="stable")[::-1][: g - len(candidates)]:
                r = k * g + int(j)
                candidates.append((self.sums[r], self.rows[r], self.lps[r]))
        eot = self.tok.eot
        scores = [
            _ranking_score(float(s), len(seq) - (seq[-1] == eot), self.length_penalty) for s, seq, _ in candidates
        ]
        s, seq, lps = candidates[int(np.argmax(scores))]
        self.results[self.windows[k]] = _result(self.tok, seq, lps, s, self.no_speech[self.windows[k]], 0.0)

    def finish(self) -> list[DecodeResult]:
        for k in range(len(self.windows)):
            self._finish(k)
        return [self.results[w] for w in sorted(self.results)]


def _search(tok, n_windows: int, opts, temperature: float, rngs):
    if temperature == 0 and opts.beam_size > 1:
        return _BeamSearch(tok, n_windows, opts.beam_size, opts.patience, opts.length_penalty)
    group = 1 if temperature == 0 else opts.best_of
    return _Sampling(tok, n_windows, group, temperature, rngs, opts.length_penalty)


def decode_batch(
    m, features, initial: list[list[int]], opts, temperature: float, rngs, on_first_token=None, cross=None
):
    """Decode N windows' features (N, T, d) together at one temperature -> N DecodeResults.

    initial: each window's given tokens (`initial_tokens`), all of one length; rngs: each window's
    sampler. A window's rows (beams, best-of candidates) step together with every other window's
    on one KV cache, and leave it when their window is done; every row's cache grows by one
    position per step, so `sample_limit` bounds all of them.
    on_first_token: called once when the first token has been chosen (latency measurement).
    cross: the windows' cross K/V (`net.cross_kv`), when computed already."""
    B, cfg, tok = m.B, m.cfg, m.tok
    n_initial = len(initial[0])
    limit = sample_limit(cfg, n_initial)
    rules = LogitRules(tok, cfg, n_initial, opts)
    search = _search(tok, len(initial), opts, temperature, rngs)
    # The given tokens are the same in every row of a window: decoded once per window, then copied.
    cache = net.new_cache(m.params, cfg, B, features, n_initial + limit - 1, cross=cross)
    hidden = net.decode(m.params, cfg, B, B.asarray(np.array(initial, dtype=np.int64)), cache)
    search.no_speech = _no_speech_probs(m, hidden, initial[0].index(tok.sot))
    hidden = hidden[:, -1:]
    if search.group > 1:
        net.expand_cache(B, cache, search.group)
        hidden = B.take_rows(hidden, np.repeat(np.arange(len(initial)), search.group))
    for step in range(limit):
        logits = B.to_numpy(net.logits(m.params, B, hidden[:, -1:]))[:, 0].astype(np.float32)
        rules(logits, search.rows)
        rows, nxt = search.step(logits)
        if on_first_token is not None and step == 0:
            on_first_token()
        if search.done or step + 1 == limit:  # the last token is never fed back
            break
        if rows is not None and not np.array_equal(rows, np.arange(cache.self_k[0].shape[0])):
            net.reorder_cache(B, cache, rows)
        hidden = net.decode(m.params, cfg, B, B.asarray(nxt[:, None].astype(np.int64)), cache)
    return search.finish()


def decode_window(
    m, audio_features, prompt, sot_seq, opts, temperature: float, rng, on_first_token=None, cross=None
) -> DecodeResult:
    """Decode one window's features (1, T, d) at one temperature: beam search at 0 (greedy with
    beam_size 1), the best of `opts.best_of` samples above."""
    initial = initial_tokens(m.tok, m.cfg, prompt, sot_seq, opts.without_timestamps)
    return decode_batch(m, audio_features, [initial], opts, temperature, [rng], on_first_token, cross)[0]


def _no_speech_probs(m, hidden, sot_at: int) -> list[float]:
    """Probability of <|nospeech|> after <|startoftranscript|> per window, from its prefill (N, T, d)."""
    first = m.B.to_numpy(net.logits(m.params, m.B, hidden[:, sot_at : sot_at + 1]))[:, 0]
    index = np.full(len(first), m.tok.no_speech)
    return [float(p) for p in np.exp(_log_softmax_at(first.astype(np.float32), index))]


def needs_fallback(result: DecodeResult, opts) -> bool:
    """The reference's test of a window: its text looks like a loop (compression) or is unlikely
    (avg log-prob), unless the window is probably silence. A window cut at the length limit is
    judged by the same test."""
    failed = False
    if opts.compression_ratio_threshold is not None and result.compression_ratio > opts.compression_ratio_threshold:
        failed = True
    if opts.log_prob_threshold is not None and result.avg_logprob < opts.log_prob_threshold:
        failed = True
    if (
        opts.no_speech_threshold is not None
        and result.no_speech_prob > opts.no_speech_threshold
        and opts.log_prob_threshold is not None
        and result.avg_logprob < opts.log_prob_threshold
    ):
        failed = False
    return failed


def decode_with_fallback(m, audio_features, prompt, sot_seq, opts, rng, on_first_token=None, cross=None):
    """Retry at the next temperature while `needs_fallback`; the last temperature's result is
    returned even if it fails too (the reference keeps it). The cross K/V is computed once for all."""
    result = None
    cross = cross if cross is not None else net.cross_kv(m.params, m.cfg, m.B, audio_features)
    for t in opts.temperatures:
        result = decode_window(m, audio_features, prompt, sot_seq, opts, t, rng, on_first_token, cross)
        on_first_token = None
        if not needs_fallback(result, opts):
            break
    return result


def decode_batch_with_fallback(m, features, initial: list[list[int]], opts, rngs, cross=None) -> list[DecodeResult]:
    """`decode_batch` of N windows, then the windows that `needs_fallback` again, together, at the
    next temperature; each keeps the last temperature's result as `decode_with_fallback` does."""
    results, todo = [None] * len(initial), list(range(len(initial)))
    cross = cross if cross is not None else net.cross_kv(m.params, m.cfg, m.B, features)
    for t in opts.temperatures:
        part, part_cross = features, cross
        if len(todo) != len(initial):
            part, part_cross = m.B.take_rows(features, todo), net.take_cross_kv(m.B, cross, todo)
        found = decode_batch(m, part, [initial[i] for i in todo], opts, t, [rngs[i] for i in todo], cross=part_cross)
        for i, result in zip(todo, found):
            results[i] = result
        todo = [i for i in todo if needs_fallback(results[i], opts)]
        if not todo:
            break
    return results


def detect_language(m, audio_features, cross=None) -> tuple[str, float]:
    """Most likely language of one window's features (1, T, d), with its probability."""
    return detect_languages(m, audio_features, cross)[0]


def detect_languages(m, audio_features, cross=None) -> list[tuple[str, float]]:
    """Most likely language of each window's features (N, T, d), with its probability: one
    decoder step of <|startoftranscript|> for all of them. cross: their `net.cross_kv`, if computed."""
    B, tok = m.B, m.tok
    n = audio_features.shape[0]
    cache = net.new_cache(m.params, m.cfg, B, audio_features, 1, cross=cross)
    hidden = net.decode(m.params, m.cfg, B, B.asarray(np.full((n, 1), tok.sot, dtype=np.int64)), cache)
    logits = B.to_numpy(net.logits(m.params, B, hidden))[:, 0]
    codes = list(tok.languages)
    lang_logits = logits[:, [tok.languages[c] for c in codes]]
    p = np.exp(lang_logits - lang_logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    best = p.argmax(axis=1)
    return [(codes[k], float(row[k])) for k, row in zip(best, p)]
