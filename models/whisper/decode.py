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


def decode_window(
    m, audio_features, prompt, sot_seq, opts, temperature: float, rng, on_first_token=None
) -> DecodeResult:
    """Decode one window's features (1, T, d) at one temperature; best of `opts.best_of` when sampling.

    Every candidate steps together (a finished one is fed <|endoftext|>), so the cache grows by one
    position per step for all of them and `sample_limit` bounds it for all of them.
    on_first_token: called once when the first token has been chosen (latency measurement)."""
    B, cfg, tok = m.B, m.cfg, m.tok
    n = 1 if temperature == 0 else opts.best_of
    initial = initial_tokens(tok, cfg, prompt, sot_seq, opts.without_timestamps)
    limit = sample_limit(cfg, len(initial))
    rules = LogitRules(tok, cfg, len(initial), opts)
    features = B.repeat_batch(audio_features, n) if n > 1 else audio_features
    cache = net.new_cache(m.params, cfg, B, features, len(initial) + limit - 1)
    hidden = net.decode(m.params, cfg, B, B.asarray(np.array([initial] * n, dtype=np.int64)), cache)
    no_speech_prob = _no_speech_prob(m, hidden, initial.index(tok.sot))
    sampled, logprobs = [[] for _ in range(n)], [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    for step in range(limit):
        logits = B.to_numpy(net.logits(m.params, B, hidden[:, -1:]))[:, 0].astype(np.float32)
        rules(logits, sampled)
        nxt = _choose(logits, temperature, rng)
        nxt[done] = tok.eot
        if on_first_token is not None and step == 0:
            on_first_token()
        lp = _log_softmax_at(logits, nxt)
        for k in np.flatnonzero(~done):
            sampled[k].append(int(nxt[k]))
            logprobs[k].append(float(lp[k]))
        done |= nxt == tok.eot
        if done.all() or step + 1 == limit:  # the last token is never fed back
            break
        hidden = net.decode(m.params, cfg, B, B.asarray(nxt[:, None].astype(np.int64)), cache)
    return _best(tok, sampled, logprobs, no_speech_prob, temperature)


def _no_speech_prob(m, hidden, sot_at: int) -> float:
    """Probability of <|nospeech|> after <|startoftranscript|>, from the first candidate's prefill."""
    first = m.B.to_numpy(net.logits(m.params, m.B, hidden[:1, sot_at : sot_at + 1]))[0, 0]
    return float(np.exp(_log_softmax_at(first[None], np.array([m.tok.no_speech]))[0]))


def _best(tok, sampled, logprobs, no_speech_prob, temperature) -> DecodeResult:
    """Rank candidates by mean log-probability (the reference's ranking without a length penalty)."""
    scores = []
    for seq, lps in zip(sampled, logprobs):
        length = len(seq) - (1 if seq and seq[-1] == tok.eot else 0)
        scores.append(sum(lps) / max(length, 1))
    k = int(np.argmax(scores))
    seq, lps = sampled[k], logprobs[k]
    ended = bool(seq) and seq[-1] == tok.eot
    tokens = seq[:-1] if ended else seq
    text = tok.decode(tokens)
    return DecodeResult(
        tokens=tokens,
        text=text,
        avg_logprob=sum(lps) / (len(tokens) + 1),
        no_speech_prob=no_speech_prob,
        temperature=temperature,
        compression_ratio=compression_ratio(text.strip()),
        token_logprobs=lps[: len(tokens)],
        finish="eot" if ended else "length",
    )


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


def decode_with_fallback(m, audio_features, prompt, sot_seq, opts, rng, on_first_token=None) -> DecodeResult:
    """Retry at the next temperature while `needs_fallback`; the last temperature's result is
    returned even if it fails too (the reference keeps it)."""
    result = None
    for t in opts.temperatures:
        result = decode_window(m, audio_features, prompt, sot_seq, opts, t, rng, on_first_token)
        on_first_token = None
        if not needs_fallback(result, opts):
            break
    return result


def detect_language(m, audio_features) -> tuple[str, float]:
    """Most likely language of one window's features (1, T, d), with its probability."""
    B, tok = m.B, m.tok
    cache = net.new_cache(m.params, m.cfg, B, audio_features, 1)
    hidden = net.decode(m.params, m.cfg, B, B.asarray(np.array([[tok.sot]], dtype=np.int64)), cache)
    logits = B.to_numpy(net.logits(m.params, B, hidden))[0, 0]
    codes = list(tok.languages)
    lang_logits = logits[[tok.languages[c] for c in codes]]
    p = np.exp(lang_logits - lang_logits.max())
    p /= p.sum()
    k = int(p.argmax())
    return codes[k], float(p[k])
