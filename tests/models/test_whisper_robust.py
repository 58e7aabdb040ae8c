"""Whisper's long-form loop on inputs that break naive decoders: prompts longer than half the text
context, a sampler that never emits <|endoftext|>, repetition loops, audio that is an exact
multiple of 30 s or leaves a last window of a few frames, and random weights on random lengths.

What must hold whatever the audio: no exception, the sequence never outgrows the text context,
every segment inside [0, duration] and in order, and `info["windows_failed"]` naming the windows
whose text failed the compression-ratio / log-prob test at every temperature.

The networks are tiny random ones (transformers' init, written by transformers, read by our
loader), altered in memory where a test needs a behaviour: <|endoftext|> suppressed, its logit
raised, or the decoder's output made constant so that it repeats one word forever.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_hf_whisper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyasr.backends.torch import TorchBackend
from polyasr.models.whisper import decode as whisper_decode
from polyasr.models.whisper import model as net
from polyasr.models.whisper.checkpoint import load_checkpoint
from polyasr.models.whisper.decode import decode_window, initial_tokens, sample_limit
from polyasr.models.whisper.pipeline import WhisperModel, _split_segments
from polyasr.options import TranscribeOptions

SR = 16000
SMALL = dict(
    d_model=32,
    encoder_layers=1,
    encoder_attention_heads=2,
    decoder_layers=1,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
)
HELLO = 7751  # " hello" in the multilingual vocabulary
SHORT_CTX = 64  # a 64-position text context: 32 tokens a window keeps the many-window tests quick


def _backend(name):
    if name == "mlx":
        pytest.importorskip("mlx.core")
        from polyasr.backends.mlx import MLXBackend

        return MLXBackend("float32")
    if name == "triton":  # the cached decoding steps on the attention kernel (interpreted on CPU)
        pytest.importorskip("triton")
    return TorchBackend("cpu", "float32", kernels="triton" if name == "triton" else "torch")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, whisper_base_dir):
    d = tmp_path_factory.mktemp("robust-whisper")
    make_hf_whisper(d, whisper_base_dir, **SMALL)
    return load_checkpoint(d)


def _model(ckpt, backend="torch", ctx=None, params=None, **cfg_changes):
    """Our model on `ckpt`'s weights (or `params`), its text context cut to `ctx` positions."""
    params = dict(params or ckpt.params)
    if ctx is not None:
        params["decoder.positional_embedding"] = params["decoder.positional_embedding"][:ctx]
        cfg_changes["max_target_positions"] = ctx
    changed = dataclasses.replace(ckpt, params=params, cfg=dataclasses.replace(ckpt.cfg, **cfg_changes))
    return WhisperModel("whisper-test", changed, _backend(backend))


def _steered(params, logits: dict[int, float]) -> dict:
    """`params` with the decoder output's first channel fixed at 1.0 and nothing else in the
    embedding rows of `logits`' tokens: each has its given logit at every step, whatever the audio."""
    p = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
    p["decoder.ln.weight"][0], p["decoder.ln.bias"][0] = 0.0, 1.0
    for token, logit in logits.items():
        p["decoder.token_embedding.weight"][token] = 0.0
        p["decoder.token_embedding.weight"][token, 0] = logit
    return p


def _looping(ckpt, word: int) -> dict:
    """Parameters whose decoder output is the same vector at every step: <|0.00|> first (text is
    not allowed there), then `word`, far ahead of every other token, until the model is stopped."""
    p = _steered(ckpt.params, {word: 50.0, 50364: 10.0})
    p["decoder.ln.weight"][:] = 0.0
    p["decoder.ln.bias"][1:] = 0.0
    return p


def _noise(secs: float, seed=0, amplitude=0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(secs * SR)) * amplitude).astype(np.float32)


def _run(m, audio, opts):
    """The model's segments and its info keys (common and Whisper's own), as the engine reports them."""
    out = m.transcribe(audio, opts)
    return out.segments, {"chunks": out.chunks, **out.extra}


def _check_segments(segments, info, audio):
    duration = len(audio) / SR
    for s in segments:
        assert 0 <= s.start <= s.end <= duration, (s.start, s.end, duration)
        assert s.start < duration
    for a, b in zip(segments, segments[1:]):
        assert a.end <= b.start, (a, b)
    assert all(0 <= t < duration for t in info["windows_failed"])
    assert info["windows_failed"] == sorted(info["windows_failed"])


def _greedy(**kw):
    return TranscribeOptions(language="en", temperatures=(0.0,), **kw)


def test_sample_limit_fits_prompt_start_and_samples_in_the_context(ckpt):
    m, cfg = _model(ckpt), ckpt.cfg
    for n_prompt in (0, 1, 100, 222, 223, 224, 400):
        for without_ts in (False, True):
            initial = initial_tokens(m.tok, cfg, list(range(n_prompt)), [m.tok.sot, 1, 2], without_ts)
            limit = sample_limit(cfg, len(initial))
            assert len(initial) - 4 - without_ts <= cfg.max_target_positions // 2 - 1
            assert limit == min(cfg.max_target_positions // 2, cfg.max_target_positions + 1 - len(initial))
            # Every token but the last sampled one is fed through the decoder.
            assert len(initial) + limit - 1 <= cfg.max_target_positions


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_long_prompt_with_best_of_stays_in_context(ckpt, backend, monkeypatch):
    """Sampling five candidates after a 223-token prompt, the first ending early and another
    running to the limit: the cache holds every step of the longest one (the reported overflow)."""
    m = _model(ckpt, backend, params=_steered(ckpt.params, {50257: 5.5}))
    assert m.tok.eot == 50257
    lengths = []
    ranked = whisper_decode._best
    monkeypatch.setattr(
        whisper_decode, "_best", lambda tok, sampled, *a: lengths.append(sampled) or ranked(tok, sampled, *a)
    )
    af = net.encode(m.params, m.cfg, m.B, m.B.asarray(np.zeros((1, 80, 3000), np.float32)))
    prompt = m.tok.encode(" one two three" * 150)
    sot = m.tok.sot_sequence("en", "transcribe")
    limit = sample_limit(m.cfg, 1 + 223 + len(sot))
    opts = TranscribeOptions(language="en", best_of=5)
    result = decode_window(m, af, prompt, sot, opts, 1.0, np.random.default_rng(0))
    (candidates,) = lengths
    assert candidates[0][-1] == m.tok.eot and len(candidates[0]) < limit, "the first candidate should end early"
    assert any(len(c) == limit and m.tok.eot not in c for c in candidates), "another should reach the limit"
    assert all(len(c) <= limit for c in candidates) and len(result.tokens) <= limit


@pytest.mark.parametrize("backend", ["torch", "mlx", pytest.param("triton", marks=pytest.mark.slow)])
def test_never_ending_sampler_ends_at_the_length_limit(ckpt, backend):
    m = _model(ckpt, backend, ctx=SHORT_CTX, suppress_tokens=(50257,))
    # The decoding loop is under test, not the encoder: a few random frames stand in for the audio.
    af = m.B.asarray(np.random.default_rng(0).standard_normal((1, 16, m.cfg.d_model)).astype(np.float32))
    sot = m.tok.sot_sequence("en", "transcribe")
    for t, prompt in ((0.0, []), (1.0, list(range(1000, 1100)))):
        opts = TranscribeOptions(language="en", best_of=3)
        result = decode_window(m, af, prompt, sot, opts, t, np.random.default_rng(0))
        initial = initial_tokens(m.tok, m.cfg, prompt, sot, False)
        assert result.finish == "length" and len(result.tokens) == sample_limit(m.cfg, len(initial))


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_long_initial_prompt_conditioned_over_many_windows(ckpt, backend):
    """A 300-token initial prompt, then each window's text appended to it, on a model that never
    ends a window by itself: every window is cut at the limit and the file still finishes."""
    m = _model(ckpt, backend, suppress_tokens=(50257,))
    prompt = " the quick brown fox jumps over the lazy dog" * 30
    assert len(m.tok.encode(prompt)) > 223
    audio = _noise(65.0)
    opts = _greedy(initial_prompt=prompt, condition_on_previous_text=True)
    segments, info = _run(m, audio, opts)
    assert info["chunks"] >= 3
    _check_segments(segments, info, audio)


def _count_temperatures(monkeypatch):
    tried = []

    def counting(*args, **kw):
        result = decode_window(*args, **kw)
        tried.append((result.temperature, result.compression_ratio))
        return result

    monkeypatch.setattr(whisper_decode, "decode_window", counting)
    return tried


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_repetition_loop_falls_back_then_is_kept_and_reported(ckpt, backend, monkeypatch):
    """A window that repeats one word is caught by the compression ratio at every temperature;
    the last one's text is kept (openai-whisper keeps it) and the window is named in info."""
    m = _model(ckpt, backend, ctx=SHORT_CTX, params=_looping(ckpt, HELLO))
    tried = _count_temperatures(monkeypatch)
    audio = _noise(30.0)  # exactly one window
    opts = TranscribeOptions(language="en", temperatures=(0.0, 0.5, 1.0), best_of=2)
    segments, info = _run(m, audio, opts)
    assert [t for t, _ in tried] == [0.0, 0.5, 1.0] and all(r > 2.4 for _, r in tried)
    assert info["chunks"] == 1 and info["windows_failed"] == [0.0] and info["temperature_fallbacks"] == 1
    assert len(segments) == 1 and segments[0].end == 30.0
    assert segments[0].tokens == [m.tok.timestamp_begin] + [HELLO] * (len(segments[0].tokens) - 1)
    _check_segments(segments, info, audio)


@pytest.mark.parametrize("backend", ["torch", "mlx"])
@pytest.mark.parametrize("secs, windows", [(30.0, 1), (60.0, 2), (60.04, 3), (30.01, 2)])
def test_exact_multiples_and_few_frame_last_windows(ckpt, backend, secs, windows):
    """The looping model gives one segment per window, to the window's end: 30 s makes one window,
    60.04 s a last window of 4 frames, whose segment stops at the end of the audio."""
    m = _model(ckpt, backend, ctx=SHORT_CTX, params=_looping(ckpt, HELLO))
    audio = _noise(secs)
    segments, info = _run(m, audio, _greedy())
    assert info["chunks"] == windows and len(segments) == windows
    assert segments[-1].end == round(len(audio) // 160 / 100, 3)
    _check_segments(segments, info, audio)


class _Result:
    def __init__(self, tokens):
        self.tokens, self.token_logprobs = tokens, [-0.1] * len(tokens)


def test_timestamps_past_the_audio_are_brought_back(ckpt):
    """A last window of 3 s (300 frames at offset 10 s) whose model stamps run to 8 s: the segment
    across the end stops there, one after it is dropped, and the seek stops at the window's end."""
    m = _model(ckpt)
    tok, ts = m.tok, lambda secs: m.tok.timestamp_begin + round(secs / 0.02)
    word = tok.encode(" word")
    tokens = [ts(0.0), *word, ts(2.0), ts(2.0), *word, ts(5.0), ts(5.0), *word, ts(8.0), ts(8.0), *word]
    segments, advance = _split_segments(tok, _Result(tokens), 10.0, 13.0, 300, 2)
    assert [(s.start, s.end) for s in segments] == [(10.0, 12.0), (12.0, 13.0)]
    assert advance == 300
    # Within the audio, the seek goes to the last closed timestamp, as the reference seeks.
    segments, advance = _split_segments(tok, _Result([ts(0.0), *word, ts(2.0), ts(2.0), *word]), 10.0, 13.0, 300, 2)
    assert [(s.start, s.end) for s in segments] == [(10.0, 12.0)] and advance == 200
    # A single timestamp at the end: nothing more is spoken in this window, the seek skips it.
    segments, advance = _split_segments(tok, _Result([*tokens[:4], *word, ts(2.5)]), 10.0, 13.0, 300, 2)
    assert [(s.start, s.end) for s in segments] == [(10.0, 12.0), (12.0, 12.5)] and advance == 300
    # No pair: one segment to the last timestamp, here past the audio, so to the audio's end.
    segments, advance = _split_segments(tok, _Result([ts(1.0), *word, ts(9.0)]), 10.0, 13.0, 300, 2)
    assert [(s.start, s.end) for s in segments] == [(10.0, 13.0)] and advance == 300


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secs=st.floats(1.0, 95.0),
    seed=st.integers(0, 2**16),
    eot_logit=st.sampled_from([None, 4.0, 7.0]),
    amplitude=st.sampled_from([0.0, 0.05, 0.5]),
    without_timestamps=st.booleans(),
    temperatures=st.sampled_from([(0.0,), (0.0, 1.0)]),
)
def test_random_weights_and_lengths_stay_inside_the_audio(
    ckpt, secs, seed, eot_logit, amplitude, without_timestamps, temperatures
):
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(0.0, 0.05, v.shape).astype(np.float32) for k, v in ckpt.params.items()}
    if eot_logit is not None:  # windows that end early, at varied points
        params = _steered(params, {50257: eot_logit})
    m = _model(ckpt, ctx=SHORT_CTX, params=params)
    audio = _noise(secs, seed, amplitude)
    opts = TranscribeOptions(
        language=None if seed % 3 == 0 else "en",
        temperatures=temperatures,
        without_timestamps=without_timestamps,
        best_of=2,
        seed=seed,
    )
    segments, info = _run(m, audio, opts)
    _check_segments(segments, info, audio)
