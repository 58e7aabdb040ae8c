"""The MLX backend (issue 8, first part): its ops against the torch backend's, and Whisper on real
weights giving the same transcripts on MLX as on torch. Runs on `mlx[cpu]` on Linux."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.backends.mlx import MLXBackend  # noqa: E402
from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.kernels.mel import MelConfig  # noqa: E402

M, T = MLXBackend(), TorchBackend("cpu", "float32", kernels="torch")
RNG = np.random.default_rng(0)


def _both(*arrays):
    return [M.asarray(a) for a in arrays], [T.asarray(a) for a in arrays]


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(M.to_numpy(a), T.to_numpy(b), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("tq, tk, causal, masked", [(7, 7, False, False), (7, 7, True, False), (3, 9, True, False),
                                                     (1, 9, True, False), (5, 8, False, True)])
def test_attention(tq, tk, causal, masked):
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 3, tq, 16), (2, 3, tk, 16), (2, 3, tk, 16)))
    mask = None
    if masked:
        keep = np.arange(tk)[None, :] < np.array([tk, 4])[:, None]
        mask = keep[:, None, None, :]
    (qm, km, vm), (qt, kt, vt) = _both(q, k, v)
    out_m = M.attention(qm, km, vm, mask=None if mask is None else mx.array(mask), causal=causal)
    out_t = T.attention(qt, kt, vt, mask=None if mask is None else T.asarray(mask), causal=causal)
    _close(out_m, out_t)


def test_layers_and_shapes():
    x, w, b = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 11, 8), (6, 8, 3), (6,)))
    (xm, wm, bm), (xt, wt, bt) = _both(x, w, b)
    _close(M.conv1d(xm, wm, bm, stride=2, padding=1), T.conv1d(xt, wt, bt, stride=2, padding=1))
    lw, lb = RNG.standard_normal(8).astype(np.float32), RNG.standard_normal(8).astype(np.float32)
    _close(M.layer_norm(xm, M.asarray(lw), M.asarray(lb)), T.layer_norm(xt, T.asarray(lw), T.asarray(lb)))
    _close(M.gelu(xm), T.gelu(xt))
    w2 = RNG.standard_normal((5, 8)).astype(np.float32)
    _close(M.linear(xm, M.prepare_linear(M.asarray(w2)), M.asarray(b[:5])),
           T.linear(xt, T.prepare_linear(T.asarray(w2)), T.asarray(b[:5])))
    _close(M.merge_heads(M.split_heads(xm, 2)), xt)
    for a, c in zip(M.split(xm, [3, 5]), T.split(xt, [3, 5])):
        _close(a, c)


def test_cache_write_updates_the_cache_in_place():
    cache = M.zeros((1, 2, 6, 4))
    value = M.asarray(np.ones((1, 2, 2, 4), np.float32))
    M.cache_write(cache, value, 3)
    assert M.to_numpy(cache)[0, 0, :, 0].tolist() == [0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_frontend(n_mels):
    cfg = MelConfig.whisper(n_mels)
    samples = RNG.standard_normal(16000).astype(np.float32) * 0.1
    pm, pt = M.mel_power(samples, cfg), T.mel_power(samples, cfg)
    np.testing.assert_allclose(M.to_numpy(pm), T.to_numpy(pt), rtol=1e-3, atol=1e-5)
    _close(M.whisper_log(pm, 0.5), T.whisper_log(pt, 0.5), atol=1e-4)


@pytest.mark.slow
def test_whisper_tiny_en_transcripts_equal_torch(whisper_tiny_en_dir, fixtures_dir):
    opts = TranscribeOptions(temperatures=(0.0,))
    ref = AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="cpu")
    ours = AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="mlx")
    for name in ("en_short.wav", "silence.wav"):
        a, b = ref.transcribe_file(fixtures_dir / name, opts), ours.transcribe_file(fixtures_dir / name, opts)
        assert b.info["device"].startswith("mlx")
        assert [(s.start, s.end, s.text) for s in a.segments] == [(s.start, s.end, s.text) for s in b.segments]


def test_attention_with_fewer_kv_heads():
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((1, 4, 5, 8), (1, 2, 9, 8), (1, 2, 9, 8)))
    (qm, km, vm), (qt, kt, vt) = _both(q, k, v)
    _close(M.attention(qm, km, vm, causal=True), T.attention(qt, kt, vt, causal=True))
