"""The backend conformance suite: every member of `polyasr.backends.Backend` on every available
backend, against a float64 numpy reference written here (never against another backend).

Backends: torch on the CPU; torch with `kernels="triton"` in the Triton interpreter (the ops
routed to kernels run them; tests/conftest.py sets TRITON_INTERPRET); MLX when `mlx` imports.
A new backend adds one line to `_BACKENDS` and must pass every case. `CASES` maps each protocol
member to the case that checks it; `test_every_protocol_member_has_a_case` fails when an op is
added to the protocol without one.

Inputs are float32 (the backends' compute dtype here); each reference is computed in float64 from
those float32 values, so the only difference left is the backend's fp32 arithmetic, which
`fp32_tol` bounds from the magnitudes involved and the length of each reduction.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import itertools
import math

import numpy as np
import pytest

from polyasr.backends import Backend
from polyasr.backends.protocol import protocol_members
from polyasr.kernels.mel_tables import NORM_STD_EPS, MelConfig, frame_counts, tables

U32 = 2.0**-24  # fp32 unit roundoff
ULPS = 8.0


def fp32_tol(magnitude, n: int = 1, ulps: float = ULPS) -> np.ndarray:
    """What fp32 arithmetic may be off by, elementwise: a result built from `n` rounded terms whose
    absolute values sum to `magnitude` is within ~ u * sqrt(n) * magnitude when the rounding errors
    are independent (u = 2^-24; any summation order, blocking or FMA use stays of that order, which is
    what lets the suite pass on every CPU). `ulps` covers the few roundings per term (a product, a
    scale) and the last-bit error of library exp / log / erf / tanh."""
    return ulps * U32 * math.sqrt(max(n, 1)) * np.asarray(magnitude, dtype=np.float64)


def check(B, actual, expected, tol, what: str):
    """actual (a backend array) against the float64 `expected` within `tol` (scalar or elementwise):
    says how many elements differ, by how much, and where the worst one is."""
    a = np.asarray(B.to_numpy(actual), dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e)
    bad = ~(err <= np.broadcast_to(tol, err.shape))  # NaN counts as bad
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err, -1.0)), err.shape)
        tol_at = np.broadcast_to(tol, err.shape)[worst]
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{err.size} elements differ; worst |diff| {err[worst]:.3g} at {worst} "
            f"(actual {a[worst]:.7g}, expected {e[worst]:.7g}, tolerance {tol_at:.3g})"
        )


def exact(B, actual, expected, what: str):
    a, e = B.to_numpy(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.array_equal(a, e), f"{what}: {a} != {e}"


def f32(*shape, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    return (np.random.standard_normal(shape) * scale + offset).astype(np.float32)


# ---- backends ----------------------------------------------------------------------------------


def _torch(kernels: str):
    from polyasr.backends.torch import TorchBackend

    return TorchBackend("cpu", "float32", kernels=kernels)


def _mlx():
    from polyasr.backends.mlx import MLXBackend

    return MLXBackend("float32")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


_BACKENDS = {
    "torch-cpu": (lambda: _torch("torch"), _has("torch")),
    "torch-triton-interpreter": (lambda: _torch("triton"), _has("torch") and _has("triton")),
    "mlx": (_mlx, _has("mlx")),
}


@pytest.fixture(scope="module", params=sorted(_BACKENDS))
def B(request):
    make, available = _BACKENDS[request.param]
    if not available:
        pytest.skip(f"{request.param}: its package is not installed")
    return make()


CASES: dict[str, object] = {}


def case(*members: str):
    """Register a case as the check of these protocol members."""

    def register(fn):
        for m in members:
            assert m not in CASES, f"{m} has two cases"
            CASES[m] = fn
        return fn

    return register


# ---- float64 references ------------------------------------------------------------------------


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attention_ref(q, k, v, keep, bias=None):
    """float64 softmax(q k^T / sqrt(D) + bias, keys where keep) v and its fp32 tolerance.

    The scores' error is u sqrt(D) (|q| |k|^T) / sqrt(D); exp turns it into a relative error of the
    weights (twice: numerator and normaliser), the weighted sum adds u sqrt(Tk) of p |v|."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    d = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    s_mag = np.abs(q) @ np.swapaxes(np.abs(k), -1, -2) / math.sqrt(d)
    if bias is not None:
        s, s_mag = s + bias, s_mag + np.abs(np.where(np.isfinite(bias), bias, 0.0))
    s = np.where(keep, s, -np.inf)
    p = _softmax(s)
    out_mag = p @ np.abs(v)
    ds = fp32_tol(np.where(keep, s_mag, 0.0), n=d).max(-1, keepdims=True)  # per query
    tol = (2 * ds + fp32_tol(1.0, n=k.shape[2])) * out_mag
    return p @ v, tol


def _conv1d_ref(x, w, b, stride, padding):
    """x (B, T, Cin), w (Cout, Cin, K) -> (B, T', Cout), and the magnitudes |w| * |x| summed."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
    k = w.shape[2]
    t_out = (xp.shape[1] - k) // stride + 1
    cols = np.stack([xp[:, i * stride : i * stride + k] for i in range(t_out)], axis=1)  # (B, T', K, Cin)
    y = np.einsum("btkc,ock->bto", cols, w)
    mag = np.einsum("btkc,ock->bto", np.abs(cols), np.abs(w))
    if b is not None:
        y, mag = y + b, mag + np.abs(b)
    return y, mag


def _conv2d_ref(x, w, b, stride, padding, groups):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cout, cin_g, kh, kw = w.shape
    ho, wo = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    y, mag = np.zeros((x.shape[0], cout, ho, wo)), np.zeros((x.shape[0], cout, ho, wo))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        xs = xp[:, g * cin_g : (g + 1) * cin_g]
        for i in range(ho):
            for j in range(wo):
                patch = xs[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                y[:, o, i, j] = (patch * w[o]).sum((1, 2, 3))
                mag[:, o, i, j] = (np.abs(patch) * np.abs(w[o])).sum((1, 2, 3))
    if b is not None:
        y, mag = y + np.asarray(b)[None, :, None, None], mag + np.abs(b)[None, :, None, None]
    return y, mag


def _depthwise_ref(x, w, b, padding):
    """x (B, T, C), w (C, K) -> (B, T', C) and magnitudes."""
    return _conv1d_ref_grouped(np.asarray(x, np.float64), np.asarray(w, np.float64), b, padding)


def _conv1d_ref_grouped(x, w, b, padding):
    xp = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
    k = w.shape[1]
    t_out = xp.shape[1] - k + 1
    cols = np.stack([xp[:, i : i + k] for i in range(t_out)], axis=1)  # (B, T', K, C)
    y = np.einsum("btkc,ck->btc", cols, w)
    mag = np.einsum("btkc,ck->btc", np.abs(cols), np.abs(w))
    if b is not None:
        y, mag = y + b, mag + np.abs(b)
    return y, mag


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _layer_norm_ref(x, w, b, eps):
    """LayerNorm and its tolerance: the mean and variance are reductions over C of |x|-sized terms;
    their errors, divided by the std, scale the output by |w|."""
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    std = np.sqrt(x.var(-1, keepdims=True) + eps)
    y = (x - mean) / std * w + b
    row = np.abs(x).max(-1, keepdims=True)
    tol = fp32_tol(row / std, n=x.shape[-1]) * (np.abs(w) + np.abs((x - mean) / std) * np.abs(w)) + fp32_tol(
        np.abs(y) + np.abs(b)
    )
    return y, tol


def _rms_norm_ref(x, w, eps):
    x = np.asarray(x, np.float64)
    rms = np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    y = x / rms * w
    return y, fp32_tol(np.abs(x) / rms * np.abs(w), n=x.shape[-1])


def _rotate_half(y):
    d = y.shape[-1]
    return np.concatenate([-y[..., d // 2 :], y[..., : d // 2]], axis=-1)


def _rope_ref(x, cos, sin, w=None, eps=1e-6):
    """Rotate-half RoPE per head (optionally after a per-head RMSNorm), x (B, H, T, D) or (B, T, H*D)."""
    d = cos.shape[-1]
    x = np.asarray(x, np.float64)
    y = x.reshape(*x.shape[:-1], -1, d) if x.ndim == 3 else x
    c, s = (cos[:, None], sin[:, None]) if x.ndim == 3 else (cos, sin)
    c, s = np.asarray(c, np.float64), np.asarray(s, np.float64)
    tol_in = fp32_tol(np.abs(y))
    if w is not None:
        y, tol_in = _rms_norm_ref(y, w, eps)
    out = y * c + _rotate_half(y) * s
    tol = fp32_tol(np.abs(y * c) + np.abs(_rotate_half(y) * s), n=2) + tol_in * (np.abs(c) + np.abs(s))
    return (out.reshape(x.shape), tol.reshape(x.shape)) if x.ndim == 3 else (out, tol)


# ---- identity and capability flags -------------------------------------------------------------


@case(*protocol_members()[1])
def case_attributes(B):
    assert isinstance(B.name, str) and B.name and str(B.device)
    assert B.dtype_name in ("float32", "float16", "bfloat16")
    assert B.zeros((1,)).dtype == B.dtype == B.asarray(np.zeros(1)).dtype
    assert isinstance(B.kernels, str) and B.kernels
    assert isinstance(B.decode_on_host, bool)
    assert isinstance(B.host_threads, int) and B.host_threads >= 1
    assert isinstance(B.small_blocks, bool)
    assert B.max_pass_rows is None or (isinstance(B.max_pass_rows, int) and B.max_pass_rows > 0)
    # the suite's backends are made without quantisation: every prepared linear is counted full precision
    assert B.quantization is None and B.quantized_layers == 0
    before = B.full_precision_layers
    B.prepare_linear(B.asarray(f32(2, 4)))
    assert (B.quantized_layers, B.full_precision_layers) == (0, before + 1)
    assert isinstance(B, Backend)


# ---- arrays ------------------------------------------------------------------------------------


@case("asarray")
def case_asarray(B):
    x = np.random.standard_normal((2, 3))  # float64 in: the compute dtype out, correctly rounded
    exact(B, B.asarray(x), x.astype(np.float32), "float64 data")
    ints = np.array([[3, -1], [0, 7]], np.int64)
    a = B.to_numpy(B.asarray(ints))
    assert a.dtype.kind == "i" and a.tolist() == ints.tolist()
    assert B.to_numpy(B.asarray(ints, dtype=B.dtype)).dtype == np.float32
    exact(B, B.asarray(np.array([True, False])), np.array([True, False]), "bool data")
    exact(B, B.asarray([1.5, -2.0]), np.array([1.5, -2.0], np.float32), "a list")
    view = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    exact(B, B.asarray(view), view, "a strided view")


@case("param")
def case_param(B):
    x = f32(4, 3)
    x.flags.writeable = False  # checkpoints arrive as read-only memory maps
    exact(B, B.param(x), x, "float32 weight")
    values = np.array([1.0, -2.5, 0.15625, 2.0**100], np.float32)  # exactly representable in bf16
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    exact(B, B.param(bits, "bfloat16"), values, "bf16 bits")
    ids = np.array([1, 2], np.int64)
    assert B.to_numpy(B.param(ids)).tolist() == [1, 2]


@case("to_numpy")
def case_to_numpy(B):
    x = f32(2, 5)
    out = B.to_numpy(B.asarray(x))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and np.array_equal(out, x)
    assert B.to_numpy(B.asarray(np.array([4, 5], np.int32))).dtype.kind == "i"
    assert B.to_numpy(B.asarray(np.array([True]))).dtype == np.bool_


@case("cast")
def case_cast(B):
    x = f32(3, 2)
    y = B.cast(B.asarray(x, dtype=B.asarray(np.zeros(1, np.float32)).dtype))
    assert y.dtype == B.dtype
    exact(B, y, x, "cast")


@case("zeros")
def case_zeros(B):
    z = B.zeros((2, 0, 3))
    assert tuple(z.shape) == (2, 0, 3) and z.dtype == B.dtype
    exact(B, B.zeros((2, 3)), np.zeros((2, 3), np.float32), "zeros")
    assert B.zeros([4], dtype=B.dtype).dtype == B.dtype


@case("empty")
def case_empty(B):
    e = B.empty((2, 3, 5, 4))
    assert tuple(e.shape) == (2, 3, 5, 4) and e.dtype == B.dtype
    x = f32(2, 3, 5, 4)
    exact(B, B.cache_write(e, B.asarray(x), 0), x, "empty, then written whole")


@case("contiguous")
def case_contiguous(B):
    x = f32(2, 3, 4)
    exact(B, B.contiguous(B.transpose(B.asarray(x), (2, 0, 1))), np.transpose(x, (2, 0, 1)), "contiguous")


@case("synchronize", "evaluate", "no_grad")
def case_sync_points(B):
    x = B.asarray(f32(3, 4))
    w = B.prepare_linear(B.asarray(f32(2, 4)))
    with B.no_grad():
        y = B.linear(x, w)
    assert B.evaluate(y) is None and B.evaluate() is None and B.synchronize() is None
    assert B.to_numpy(y).shape == (3, 2)


# ---- layers ------------------------------------------------------------------------------------


@case("prepare_linear", "linear")
def case_linear(B):
    wide = 16384  # a vocabulary-wide output: torch's CPU layout for it differs by row count (`WideLinear`)
    cases = (((2, 5, 7), 3, True), ((1, 7), 3, False), ((1, 1, 33), 1, True), ((4, 1), 6, True))
    cases += (((1, 1, 16), wide, True), ((3, 1, 16), wide, False), ((5, 16), wide, True), ((1, 16), wide, False))
    cases += (((3, 40, 96), 160, True), ((130, 64), 48, False))  # encoder-like: sequences of frames
    # many_rows: False (decoder rows), True (sequences of any length), or a fixed row count on
    # either side of the torch CPU path's switch from MKL's packing to oneDNN's
    for (shape, cout, bias), many_rows in itertools.product(cases, (False, True, 64, 1500)):
        x, w = f32(*shape), f32(cout, shape[-1])
        b = f32(cout) if bias else None
        prepared = B.prepare_linear(B.asarray(w), many_rows=many_rows)
        y = B.linear(B.asarray(x), prepared, None if b is None else B.asarray(b))
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
        mag = np.abs(x) @ np.abs(w).T.astype(np.float64) + (0 if b is None else np.abs(b))
        check(B, y, ref, fp32_tol(mag, n=shape[-1] + 1), f"linear {shape} -> {cout}, many_rows={many_rows}")


@case("conv1d")
def case_conv1d(B):
    for t, cin, cout, k, stride, padding in (
        (11, 4, 6, 3, 2, 1),
        (7, 3, 5, 1, 1, 0),
        (1, 2, 3, 3, 1, 1),
        (9, 5, 2, 4, 3, 2),
    ):
        x, w, b = f32(2, t, cin), f32(cout, cin, k), f32(cout)
        y = B.conv1d(B.asarray(x), B.asarray(w), B.asarray(b), stride=stride, padding=padding)
        ref, mag = _conv1d_ref(x, w, b, stride, padding)
        check(B, y, ref, fp32_tol(mag, n=cin * k + 1), f"conv1d T={t} K={k} stride={stride}")
    x, w = f32(1, 5, 2), f32(3, 2, 2)
    ref, mag = _conv1d_ref(x, w, None, 1, 0)
    check(B, B.conv1d(B.asarray(x), B.asarray(w)), ref, fp32_tol(mag, n=5), "conv1d without bias")


@case("conv2d")
def case_conv2d(B):
    for groups, stride, padding, k, hw in (
        (1, 2, 1, 3, (9, 7)),
        (4, 2, 1, 3, (5, 6)),
        (1, 1, 0, 1, (3, 4)),
        (2, 1, 1, 3, (1, 1)),
    ):
        cin, cout = 4, 8
        x, w, b = f32(2, cin, *hw), f32(cout, cin // groups, k, k), f32(cout)
        y = B.conv2d(B.asarray(x), B.asarray(w), B.asarray(b), stride, padding, groups)
        ref, mag = _conv2d_ref(x, w, b, stride, padding, groups)
        check(B, y, ref, fp32_tol(mag, n=cin // groups * k * k + 1), f"conv2d groups={groups} stride={stride}")


@case("conv2d_gelu", "prepare_conv2d")
def case_conv2d_gelu(B):
    # one input channel (a spectrogram; torch on the CPU: a GEMM over patches) and several (oneDNN,
    # channels-last), with and without bias, the weight as the checkpoint has it and prepared
    # (same shape); the result also read back the way a stem flattens it
    for (cin, stride, padding, hw, bias), prepared in itertools.product(
        ((1, 2, 1, (9, 7), True), (1, 1, 0, (4, 5), False), (4, 2, 1, (8, 5), True), (3, 1, 1, (1, 1), False)),
        (False, True),
    ):
        x, w, b = f32(2, cin, *hw), f32(8, cin, 3, 3), f32(8) if bias else None
        weight = B.prepare_conv2d(B.asarray(w)) if prepared else B.asarray(w)
        assert tuple(weight.shape) == w.shape
        y = B.conv2d_gelu(B.asarray(x), weight, None if b is None else B.asarray(b), stride, padding)
        conv, mag = _conv2d_ref(x, w, b, stride, padding, 1)
        ref = conv / 2 * (1 + _ERF(conv / math.sqrt(2)))
        # the convolution's error passes through gelu (slope below 1.13), then gelu's own (u |x|)
        tol = 1.13 * fp32_tol(mag, n=cin * 9 + 1) + fp32_tol(np.abs(conv), n=2)
        what = f"conv2d_gelu cin={cin} stride={stride} bias={bias} prepared={prepared}"
        check(B, y, ref, tol, what)
        flat = ref.transpose(0, 3, 1, 2).reshape(2, ref.shape[3], -1)  # (B, W', Cout * H')
        check(B, B.merge_heads(B.transpose(y, (0, 1, 3, 2))), flat, tol.transpose(0, 3, 1, 2).reshape(flat.shape), what)


@case("depthwise_conv1d")
def case_depthwise_conv1d(B):
    for t, c, k, padding, bias in ((9, 5, 3, 1, True), (6, 3, 1, 0, False), (1, 4, 3, 1, True), (8, 2, 5, 0, True)):
        x, w = f32(2, t, c), f32(c, k)
        b = f32(c) if bias else None
        y = B.depthwise_conv1d(B.asarray(x), B.asarray(w), None if b is None else B.asarray(b), padding=padding)
        ref, mag = _depthwise_ref(x, w, b, padding)
        check(B, y, ref, fp32_tol(mag, n=k + 1), f"depthwise_conv1d T={t} K={k} padding={padding}")


@case("layer_norm")
def case_layer_norm(B):
    for shape, eps in (((2, 3, 16), 1e-5), ((1, 1, 7), 1e-6), ((3, 1), 1e-5)):
        x, w, b = f32(*shape, scale=2.0, offset=3.0), f32(shape[-1]), f32(shape[-1])
        y = B.layer_norm(B.asarray(x), B.asarray(w), B.asarray(b), eps)
        ref, tol = _layer_norm_ref(x, w, b, eps)
        check(B, y, ref, tol, f"layer_norm {shape}")


@case("rms_norm")
def case_rms_norm(B):
    for shape, eps in (((2, 3, 16), 1e-6), ((1, 1, 5), 1e-5), ((2, 1), 1e-6)):
        x, w = f32(*shape, scale=3.0), f32(shape[-1])
        ref, tol = _rms_norm_ref(x, w, eps)
        check(B, B.rms_norm(B.asarray(x), B.asarray(w), eps), ref, tol, f"rms_norm {shape}")


@case("embedding")
def case_embedding(B):
    table = f32(7, 5)
    for ids in (np.array([[0, 6, 3], [3, 3, 1]]), np.array([4]), np.array([[2]])):
        exact(B, B.embedding(B.asarray(ids), B.asarray(table)), table[ids], f"embedding {ids.shape}")


# ---- elementwise -------------------------------------------------------------------------------

_X = np.concatenate([np.linspace(-12, 12, 97), np.random.default_rng(1).standard_normal(31) * 3]).astype(np.float32)
_X64 = _X.astype(np.float64)
_ERF = np.vectorize(math.erf)


def _unary(B, op: str, ref, mag):
    check(B, getattr(B, op)(B.asarray(_X)), ref, fp32_tol(mag, n=2), op)
    x2 = _X[:30].reshape(2, 3, 5)  # and shaped input, not only 1-D
    out = getattr(B, op)(B.asarray(x2))
    assert tuple(out.shape) == (2, 3, 5)


@case("gelu")
def case_gelu(B):
    # x/2 (1 + erf): for x << 0 the sum cancels, so the error is u * |x|, not u * |gelu(x)|
    _unary(B, "gelu", _X64 / 2 * (1 + _ERF(_X64 / math.sqrt(2))), np.abs(_X64))


@case("relu")
def case_relu(B):
    exact(B, B.relu(B.asarray(_X)), np.maximum(_X, 0), "relu")


# exp(x) inside sigmoid / tanh: the argument's own rounding (u |x|) becomes a relative error of
# the result, so these are within a few u (1 + |x|) of it, relative
@case("silu")
def case_silu(B):
    ref = _X64 * _sigmoid(_X64)
    _unary(B, "silu", ref, np.abs(ref) * (1 + np.abs(_X64)))


@case("sigmoid")
def case_sigmoid(B):
    _unary(B, "sigmoid", _sigmoid(_X64), _sigmoid(_X64) * (1 + np.abs(_X64)))


@case("tanh")
def case_tanh(B):
    _unary(B, "tanh", np.tanh(_X64), np.abs(np.tanh(_X64)) * (1 + np.abs(_X64)))


@case("glu")
def case_glu(B):
    for shape, axis in (((2, 3, 8), -1), ((2, 6, 3), 1), ((1, 1, 2), -1)):
        x = f32(*shape, scale=3.0)
        a, g = np.split(x.astype(np.float64), 2, axis=axis)
        ref = a * _sigmoid(g)
        check(B, B.glu(B.asarray(x), axis=axis), ref, fp32_tol(np.abs(ref), n=3), f"glu {shape} axis={axis}")


@case("silu_mul")
def case_silu_mul(B):
    for shape in ((2, 3, 8), (1, 1, 2), (5, 6)):
        x = f32(*shape, scale=3.0).astype(np.float64)
        gate, up = np.split(x, 2, axis=-1)
        ref = gate * _sigmoid(gate) * up
        check(B, B.silu_mul(B.asarray(x)), ref, fp32_tol(np.abs(ref), n=3), f"silu_mul {shape}")


@case("log_softmax")
def case_log_softmax(B):
    for shape, axis, offset in (((2, 7), -1, 0.0), ((2, 5, 3), 1, 0.0), ((3, 9), -1, 1000.0), ((4, 1), -1, 0.0)):
        x = f32(*shape, scale=4.0, offset=offset).astype(np.float64)
        m = x.max(axis, keepdims=True)
        lse = m + np.log(np.exp(x - m).sum(axis, keepdims=True))
        ref = x - lse
        tol = fp32_tol(np.abs(x) + np.abs(lse), n=shape[axis])  # a difference of two |x|-sized values
        check(B, B.log_softmax(B.asarray(x), axis=axis), ref, tol, f"log_softmax {shape} axis={axis} +{offset}")


# ---- attention and positions -------------------------------------------------------------------


@case("attention")
def case_attention(B):
    """Self-attention, causal with queries as the last Tq positions (a cached decode step), key padding
    with a length-1 row, GQA, an additive per-query mask, Tk = 1, an odd head size, and decoder
    steps' few queries over many keys."""
    cases = [
        # (B, H, Hkv, Tq, Tk, D, causal, key lengths or None, additive)
        (2, 3, 3, 7, 7, 16, False, None, False),
        (2, 3, 3, 7, 7, 16, True, None, False),
        (1, 2, 2, 3, 9, 8, True, None, False),
        (2, 2, 2, 1, 9, 8, True, None, False),
        (2, 3, 3, 5, 8, 12, False, [8, 1], False),
        (2, 4, 2, 4, 6, 8, True, [6, 5], False),
        (2, 4, 1, 1, 5, 8, False, [5, 2], False),
        (2, 2, 2, 3, 1, 8, False, None, False),
        (2, 2, 2, 4, 6, 8, False, None, True),
        # decoder steps over Whisper's 1500 audio keys: one row, and 5 beams folded into the query axis
        (1, 8, 8, 1, 1500, 64, False, None, False),
        (3, 8, 8, 5, 1500, 64, False, None, False),
        (2, 3, 3, 1, 40, 16, True, None, False),
    ]
    for b, h, hkv, tq, tk, d, causal, lengths, additive in cases:
        q, k, v = f32(b, h, tq, d), f32(b, hkv, tk, d), f32(b, hkv, tk, d)
        keep = np.ones((b, 1, tq, tk), bool)
        if causal:
            keep &= np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)
        mask, bias = None, None
        if lengths is not None:
            key_mask = (np.arange(tk)[None, :] < np.array(lengths)[:, None])[:, None, None, :]
            keep, mask = keep & key_mask, B.asarray(key_mask)
        if additive:
            bias = f32(b, 1, tq, tk)
            bias[:, :, :, 0] = -np.inf  # masked by -inf in an additive mask
            mask = B.asarray(bias)
        ref, tol = _attention_ref(q, k, v, keep, bias)
        out = B.attention(B.asarray(q), B.asarray(k), B.asarray(v), mask=mask, causal=causal)
        check(B, out, ref, tol, f"attention Tq={tq} Tk={tk} H={h}/{hkv} causal={causal} lengths={lengths}")


@case("rel_pos_attention")
def case_rel_pos_attention(B):
    h, d = 3, 8
    for t, lengths in ((1, None), (2, [2, 1]), (9, None), (17, [17, 6]), (5, [1, 5])):
        q, k, v = (f32(2, h, t, d) for _ in range(3))
        pos, u, bv = f32(h, 2 * t - 1, d), f32(h, 1, d), f32(h, 1, d)
        keep = np.ones((2, 1, t, t), bool)
        mask = None
        if lengths is not None:
            km = (np.arange(t)[None, :] < np.array(lengths)[:, None])[:, None, None, :]
            keep, mask = keep & km, B.asarray(km)
        qd, kd, vd, pd, ud, bvd = (a.astype(np.float64) for a in (q, k, v, pos, u, bv))
        shifted = pd[:, (t - 1) - np.arange(t)[:, None] + np.arange(t)[None, :]]  # (H, T, T, D): pos[T-1-i+j]
        content = (qd + ud) @ np.swapaxes(kd, -1, -2)
        position = np.einsum("bhid,hijd->bhij", qd + bvd, shifted)
        s = np.where(keep, (content + position) / math.sqrt(d), -np.inf)
        p = _softmax(s)
        s_mag = (np.abs(qd) + np.abs(ud)) @ np.swapaxes(np.abs(kd), -1, -2) + np.einsum(
            "bhid,hijd->bhij", np.abs(qd) + np.abs(bvd), np.abs(shifted)
        )
        ds = fp32_tol(np.where(keep, s_mag / math.sqrt(d), 0.0), n=2 * d).max(-1, keepdims=True)
        tol = (2 * ds + fp32_tol(1.0, n=t)) * (p @ np.abs(vd))
        out = B.rel_pos_attention(*(B.asarray(a) for a in (q, k, v, pos, u, bv)), mask=mask)
        check(B, out, p @ vd, tol, f"rel_pos_attention T={t} lengths={lengths}")


@case("rope_tables")
def case_rope_tables(B):
    for length, dim, base in ((13, 8, 10000.0), (1, 4, 10000.0), (40, 16, 5000.0)):
        cos, sin = B.rope_tables(length, dim, base)
        assert cos.dtype == sin.dtype == B.dtype
        j = np.arange(dim) % (dim // 2)
        angle = np.arange(length)[:, None] * base ** (-2.0 * j / dim)[None, :]
        # the angle is an fp32 product of fp32 frequencies: u * angle, a few times over
        tol = fp32_tol(angle + 1.0, n=4)
        check(B, cos, np.cos(angle), tol, f"rope_tables cos {length}x{dim}")
        check(B, sin, np.sin(angle), tol, f"rope_tables sin {length}x{dim}")


def _tables(t: int, d: int, rows: int | None = None):
    angle = np.random.uniform(-10, 10, ((rows, 1) if rows else ()) + (t, d // 2))
    angle = np.concatenate([angle, angle], axis=-1)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


@case("rope")
def case_rope(B):
    d = 8
    for shape, rows in (((2, 3, 5, d), None), ((2, 5, 3 * d), None), ((2, 3, 5, d), 2), ((1, 1, 1, d), None)):
        t = shape[2] if len(shape) == 4 else shape[1]
        x = f32(*shape)
        cos, sin = _tables(t, d, rows)
        ref, tol = _rope_ref(x, cos, sin)
        out = B.rope(B.asarray(x), B.asarray(cos), B.asarray(sin))
        check(B, out, ref, tol, f"rope x {shape} tables {cos.shape}")


@case("qk_norm_rope")
def case_qk_norm_rope(B):
    d = 8
    for shape, rows, norm in (
        ((2, 3, 5, d), None, True),
        ((2, 5, 2 * d), None, True),
        ((2, 4, 3, d), 2, True),
        ((2, 3, 5, d), None, False),
        ((1, 1, 1, d), None, True),
    ):
        t = shape[2] if len(shape) == 4 else shape[1]
        x, w = f32(*shape, scale=2.0), f32(d)
        cos, sin = _tables(t, d, rows)
        ref, tol = _rope_ref(x, cos, sin, w if norm else None, 1e-6)
        out = B.qk_norm_rope(B.asarray(x), B.asarray(w) if norm else None, B.asarray(cos), B.asarray(sin), 1e-6)
        check(B, out, ref, tol, f"qk_norm_rope x {shape} tables {cos.shape} norm={norm}")


# ---- Conformer conv module ---------------------------------------------------------------------


@case("glu_dwconv_silu")
def case_glu_dwconv_silu(B):
    for t, c, k, lengths, with_ln, bias in (
        (13, 6, 5, [13, 8], True, True),
        (13, 6, 5, [13, 8], False, True),
        (7, 3, 3, None, True, False),
        (1, 4, 3, [1, 1], False, True),
        (9, 5, 9, [9, 1], True, True),
    ):
        x, w = f32(2, t, 2 * c, scale=2.0), f32(c, k)
        b = f32(c) if bias else None
        ln = (f32(c), f32(c)) if with_ln else None
        keep = None if lengths is None else np.arange(t)[None, :] < np.array(lengths)[:, None]
        a, g = np.split(x.astype(np.float64), 2, axis=-1)
        glu = a * _sigmoid(g)
        if keep is not None:
            glu = np.where(keep[:, :, None], glu, 0.0)
        y, mag = _depthwise_ref(glu, w, b, (k - 1) // 2)
        tol = fp32_tol(mag, n=k + 1) * 2  # the GLU's own rounding enters every tap
        if ln is not None:
            y, ln_tol = _layer_norm_ref(y, *ln, 1e-5)
            std = np.sqrt(np.var(y, -1, keepdims=True) + 1e-5)
            tol = tol.max(-1, keepdims=True) / std * 2 * np.abs(ln[0]) + ln_tol
        ref = y * _sigmoid(y)
        tol = tol * 1.1 + fp32_tol(np.abs(ref), n=2)  # silu' <= 1.1
        out = B.glu_dwconv_silu(
            B.asarray(x),
            B.asarray(w),
            None if b is None else B.asarray(b),
            None if keep is None else B.asarray(keep),
            None if ln is None else tuple(B.asarray(p) for p in ln),
            1e-5,
        )
        check(B, out, ref, tol, f"glu_dwconv_silu T={t} K={k} lengths={lengths} ln={with_ln}")


# ---- shapes ------------------------------------------------------------------------------------


@case("split_heads", "merge_heads")
def case_heads(B):
    for b, t, h, d in ((2, 5, 3, 4), (1, 1, 1, 8), (3, 2, 4, 1)):
        x = f32(b, t, h * d)
        heads = B.split_heads(B.asarray(x), h)
        exact(B, heads, x.reshape(b, t, h, d).transpose(0, 2, 1, 3), f"split_heads {x.shape} into {h}")
        exact(B, B.merge_heads(heads), x, "merge_heads")
        y = f32(b, h, t, d)
        exact(B, B.merge_heads(B.asarray(y)), y.transpose(0, 2, 1, 3).reshape(b, t, h * d), "merge_heads")


@case("split")
def case_split(B):
    x = f32(2, 4, 8)
    for sizes, axis in (([3, 5], -1), ([1, 1, 2], 1), ([2], 0), ([8, 0], 2)):
        parts = B.split(B.asarray(x), sizes, axis=axis)
        refs = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
        assert len(parts) == len(sizes)
        for p, r in zip(parts, refs, strict=True):
            exact(B, p, r, f"split {sizes} axis={axis}")


@case("transpose")
def case_transpose(B):
    x = f32(2, 3, 4)
    for axes in ((2, 0, 1), (0, 2, 1), (0, 1, 2)):
        exact(B, B.transpose(B.asarray(x), axes), np.transpose(x, axes), f"transpose {axes}")


@case("concat")
def case_concat(B):
    a, b = f32(2, 3), f32(1, 3)
    exact(B, B.concat([B.asarray(a), B.asarray(b)]), np.concatenate([a, b]), "concat axis 0")
    c = f32(2, 1)
    exact(B, B.concat((B.asarray(a), B.asarray(c)), axis=-1), np.concatenate([a, c], -1), "concat axis -1")
    exact(B, B.concat([B.asarray(a)]), a, "concat of one")


@case("stack")
def case_stack(B):
    xs = [f32(2, 3) for _ in range(3)]
    exact(B, B.stack([B.asarray(x) for x in xs], axis=1), np.stack(xs, 1), "stack axis 1")
    ids = [np.array([1, 2]), np.array([3, 4])]
    assert B.to_numpy(B.stack([B.asarray(i) for i in ids])).tolist() == [[1, 2], [3, 4]]


@case("repeat_batch")
def case_repeat_batch(B):
    x = f32(2, 3, 2)
    for n in (1, 3):
        exact(B, B.repeat_batch(B.asarray(x), n), np.repeat(x, n, axis=0), f"repeat_batch {n}")


@case("take_rows")
def case_take_rows(B):
    x = f32(4, 2, 3)
    for index in ([2, 0, 0, 3], [1], np.array([3, 2, 1, 0]), [1, 1, 1, 1, 1, 1]):
        exact(B, B.take_rows(B.asarray(x), index), x[np.asarray(index)], f"take_rows {list(index)}")


@case("pad_last")
def case_pad_last(B):
    x = f32(2, 3)
    exact(B, B.pad_last(B.asarray(x), 2), np.pad(x, ((0, 0), (0, 2))), "pad_last zeros")
    exact(B, B.pad_last(B.asarray(x), 1, -1.5), np.pad(x, ((0, 0), (0, 1)), constant_values=-1.5), "value")
    exact(B, B.pad_last(B.asarray(x), 0), x, "pad_last 0")


@case("cache_write")
def case_cache_write(B):
    cache = B.zeros((2, 2, 6, 4))
    ref = np.zeros((2, 2, 6, 4), np.float32)
    for pos, n in ((0, 1), (3, 2), (5, 1), (1, 2)):
        v = f32(2, 2, n, 4)
        out = B.cache_write(cache, B.asarray(v), pos)
        ref[:, :, pos : pos + n] = v
        assert out is cache, "cache_write must return the cache object it wrote into"
        exact(B, cache, ref, f"the cache after writing {n} at {pos}")


@case("masked_scatter")
def case_masked_scatter(B):
    x = f32(2, 5, 3)
    for where in (
        np.array([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]], bool),
        np.zeros((2, 5), bool),
        np.ones((2, 5), bool),
    ):
        rows = f32(int(where.sum()), 3)
        ref = x.copy()
        ref[where] = rows
        exact(
            B, B.masked_scatter(B.asarray(x), B.asarray(where), B.asarray(rows)), ref, f"masked_scatter {where.sum()}"
        )


# ---- masks, selection, reductions --------------------------------------------------------------


@case("length_mask")
def case_length_mask(B):
    for lengths, size in (([5, 0, 1], 5), (np.array([2, 3]), 3), ([1], 1)):
        ref = np.arange(size)[None, :] < np.asarray(lengths)[:, None]
        exact(B, B.length_mask(lengths, size), ref, f"length_mask {lengths} {size}")


@case("zero_masked")
def case_zero_masked(B):
    x = f32(2, 4, 3)
    x[1, 2:] = np.nan
    x[0, 3] = np.inf
    keep = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    ref = np.where(keep[:, :, None], x, 0.0).astype(np.float32)
    exact(B, B.zero_masked(B.asarray(x), B.asarray(keep)[:, :, None]), ref, "zero_masked")
    full = np.broadcast_to(keep[:, :, None], x.shape)
    exact(B, B.zero_masked(B.asarray(x), B.asarray(np.ascontiguousarray(full))), ref, "zero_masked full mask")


@case("where")
def case_where(B):
    cond = np.array([[True, False, True], [False, False, True]])
    a, b = f32(2, 3), f32(2, 3)
    c, aa, bb = B.asarray(cond), B.asarray(a), B.asarray(b)
    exact(B, B.where(c, aa, bb), np.where(cond, a, b), "where arrays")
    exact(B, B.where(c, aa, 0.0), np.where(cond, a, 0.0).astype(np.float32), "where array, scalar")
    exact(B, B.where(c[:, :1], 2.5, bb), np.where(cond[:, :1], 2.5, b).astype(np.float32), "where broadcast")
    n = B.asarray(np.array([3, 0, 5]))
    assert B.to_numpy(B.where(n > 0, n, 1)).tolist() == [3, 1, 5]  # integers and an int scalar (TDT loop)


@case("argmax")
def case_argmax(B):
    x = f32(3, 7)
    x[1, 2] = x[1, 5] = 10.0  # a tie: the first
    for axis in (-1, 0):
        out = B.to_numpy(B.argmax(B.asarray(x), axis=axis))
        assert out.dtype.kind in "iu" and out.tolist() == np.argmax(x, axis=axis).tolist(), f"argmax axis={axis}"
    assert B.to_numpy(B.argmax(B.asarray(f32(1, 1)))).tolist() == [0]


@case("max")
def case_max(B):
    x = f32(3, 7, 2)
    for axis in (-1, 1, 0):
        exact(B, B.max(B.asarray(x), axis=axis), x.max(axis), f"max axis={axis}")


@case("any")
def case_any(B):
    assert B.any(B.asarray(np.array([False, True, False]))) is True
    assert B.any(B.asarray(np.zeros((2, 3), bool))) is False
    assert B.any(B.asarray(np.arange(4)) > 2) is True


@case("mean_std")
def case_mean_std(B):
    for shape, correction, eps, offset in (((2, 5, 37), 1, 0.0, 3.0), ((3, 2), 1, 1e-7, 0.0), ((4, 9), 0, 0.0, -1.0)):
        x = f32(*shape, scale=2.0, offset=offset)
        mean, std = B.mean_std(B.asarray(x), correction=correction, eps=eps)
        x64, t = x.astype(np.float64), shape[-1]
        ref_mean = x64.mean(-1)
        dev = x64 - ref_mean[..., None]
        ref_std = np.sqrt(np.square(dev).sum(-1) / (t - correction) + eps)
        # the mean's rounding is a sum of T terms of |x|; the variance's of T squared deviations,
        # whose error reaches std through the square root (half the relative error), plus the
        # mean's own error entering every deviation
        mag = np.abs(x64).mean(-1)
        check(B, mean, ref_mean, fp32_tol(mag, n=t), f"mean_std mean {shape}")
        check(B, std, ref_std, fp32_tol(ref_std, n=t) + fp32_tol(mag, n=t), f"mean_std std {shape}")


# ---- audio frontend ----------------------------------------------------------------------------

NEMO = MelConfig(
    n_fft=512,
    n_mels=64,
    periodic_window=False,
    pad_mode="constant",
    preemphasis=0.97,
    log="ln",
    log_guard=2.0**-24,
    log_guard_type="add",
    normalize="per_feature",
)
GIGAAM = MelConfig(
    n_fft=320, win_length=320, n_mels=64, center=False, mel_scale="htk", mel_norm=None, log="ln", log_guard=1e-9
)
WHISPER = MelConfig.whisper(80)


def _stft_power_ref(x: np.ndarray, cfg: MelConfig, window: np.ndarray, bank: np.ndarray, n_frames: int):
    """One item's float64 mel power (n_mels, T) from its padded signal, and its fp32 error bound.

    A frame's DFT computed in fp32 (any FFT, or a DFT as a matrix product) is off by about
    u log2(n_fft) ||frame||_2 per bin, plus the frame's own rounding (pre-emphasis, window);
    |X|^2 turns that into 2 |X| dX, the mel bank sums it over bins (and rounds over F terms)."""
    idx = np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
    frames = x[idx] * window  # (T, n_fft)
    spec = np.fft.rfft(frames, axis=-1)
    mag = np.abs(spec)
    power = mag**cfg.power
    fnorm = np.linalg.norm(frames, axis=-1, keepdims=True)
    dx = fp32_tol(fnorm * (np.log2(cfg.n_fft) + 2))
    dp = cfg.power * mag ** (cfg.power - 1) * dx + dx**2 + fp32_tol(power)
    mel = power @ bank.T
    dmel = dp @ np.abs(bank).T + fp32_tol(np.abs(power) @ np.abs(bank).T, n=bank.shape[1])
    return mel.T, dmel.T


def _signal(x: np.ndarray, cfg: MelConfig) -> np.ndarray:
    x = x.astype(np.float64)
    if cfg.preemphasis is not None and len(x):
        x = np.concatenate([x[:1], x[1:] - cfg.preemphasis * x[:-1]])
    half = cfg.n_fft // 2
    if cfg.center:
        x = np.pad(x, half, mode="reflect" if cfg.pad_mode == "reflect" else "constant")
    return x


def _log_mel_ref(batch, lengths, cfg: MelConfig, tabs):
    """float64 features (B, n_mels, T) of each item alone, and the fp32 tolerance for each element."""
    window, bank = (np.asarray(t, np.float64) for t in tabs)
    t_out = int(frame_counts([batch.shape[1]], cfg)[0])
    frames = frame_counts(lengths, cfg)
    out, tol = np.zeros((len(lengths), cfg.n_mels, t_out)), np.zeros((len(lengths), cfg.n_mels, t_out))
    for i, (n, nf) in enumerate(zip(lengths, frames, strict=True)):
        if nf == 0:
            continue
        mel, dmel = _stft_power_ref(_signal(batch[i, :n], cfg), cfg, window, bank, nf)
        if cfg.log == "ln":
            arg = mel + cfg.log_guard if cfg.log_guard_type == "add" else np.maximum(mel, cfg.log_guard)
            if cfg.log_clamp_max is not None:
                arg = np.minimum(arg, cfg.log_clamp_max)
            f, df = np.log(arg), dmel / arg + fp32_tol(np.abs(np.log(arg)))
        else:
            arg = np.maximum(mel, cfg.log_guard)
            lg, dlg = np.log10(arg), dmel / arg / math.log(10) + fp32_tol(np.abs(np.log10(arg)))
            floor = lg.max() - 8.0
            f = (np.maximum(lg, floor) + 4.0) / 4.0
            df = (np.where(lg > floor, dlg, dlg.max()) + fp32_tol(np.abs(lg) + 4)) / 4.0
        if cfg.normalize == "per_feature" and nf == 1:
            f, df = np.zeros_like(f), np.zeros_like(df)  # x - mean(x) over one frame is exactly 0
        elif cfg.normalize == "per_feature":
            # mean: off by the mean error of its terms plus its own rounding; std (n - 1): off by
            # at most the rms error of the deviations (triangle inequality on their L2 norm)
            mean, std = f.mean(-1, keepdims=True), f.std(-1, ddof=1, keepdims=True)
            g = (f - mean) / (std + NORM_STD_EPS)
            d_mean = df.mean(-1, keepdims=True) + fp32_tol(np.abs(f).mean(-1, keepdims=True), n=nf)
            d_std = np.sqrt(np.square(df + d_mean).sum(-1, keepdims=True) / (nf - 1))
            d_std = d_std + fp32_tol(std, n=nf)
            df = (df + d_mean + np.abs(g) * d_std) / (std + NORM_STD_EPS) + fp32_tol(np.abs(g), n=3)
            f = g
        out[i, :, :nf], tol[i, :, :nf] = f, df
    return out, tol, frames


@case("log_mel")
def case_log_mel(B):
    rng = np.random.default_rng(3)
    for cfg, lengths, own in (
        (WHISPER, [3200, 2417, 201], False),  # reflect padding needs > n_fft // 2 samples
        (NEMO, [3000, 1, 1700, 0], False),  # one sample: one frame, normalised to 0; none: no frames
        (GIGAAM, [2000, 320, 319, 1481], False),  # not centred: 320 samples make one frame
        (GIGAAM, [2400, 1000], True),  # the checkpoint's own window and bank
    ):
        n = max(lengths)
        batch = np.zeros((len(lengths), n), np.float32)
        for i, m in enumerate(lengths):
            batch[i, :m] = rng.standard_normal(m) * 0.1
        batch[:, :] += np.where(np.arange(n) < np.array(lengths)[:, None], 0, rng.standard_normal((1, n)))  # junk
        tabs = tables(cfg)
        if own:
            tabs = (np.roll(tabs[0], 3).copy(), (tabs[1] * 1.5).astype(np.float32))
        feats, frames = B.log_mel(batch, np.array(lengths), cfg, tabs if own else None)
        ref, tol, ref_frames = _log_mel_ref(batch, lengths, cfg, tabs)
        assert isinstance(frames, np.ndarray) and frames.tolist() == ref_frames.tolist()
        check(B, feats, ref, tol, f"log_mel {cfg.log} n_fft={cfg.n_fft} lengths={lengths} own tables={own}")


@case("mel_power")
def case_mel_power(B):
    rng = np.random.default_rng(4)
    for cfg, n in (
        (WHISPER, 2000),
        (MelConfig.whisper(128), 1000),
        (WHISPER, 400),  # one frame, dropped: Whisper drops the last one
        (WHISPER, 399),
        (dataclasses.replace(WHISPER, power=1.0, drop_last_frame=False), 1000),
        (dataclasses.replace(WHISPER, preemphasis=0.97), 1000),
    ):
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        n_frames = max(0, 1 + (n - cfg.n_fft) // cfg.hop_length - int(cfg.drop_last_frame))
        window, bank = (t.astype(np.float64) for t in tables(cfg))
        if n_frames:
            signal = _signal(x, dataclasses.replace(cfg, center=False))  # never centred
            ref, tol = _stft_power_ref(signal, cfg, window, bank, n_frames)
        else:
            ref = tol = np.zeros((cfg.n_mels, 0))
        check(B, B.mel_power(x, cfg), ref[None], tol[None], f"mel_power N={n} {cfg}")


@case("whisper_log")
def case_whisper_log(B):
    mel = np.concatenate([10.0 ** np.random.uniform(-12, 2, (2, 80, 20)), np.zeros((2, 80, 1))], -1).astype(np.float32)
    for log_max, guard in ((0.5, 1e-10), (-3.0, 1e-10), (1.0, 1e-6)):
        lg = np.log10(np.maximum(mel.astype(np.float64), guard))
        ref = (np.maximum(lg, log_max - 8.0) + 4.0) / 4.0
        tol = fp32_tol(np.abs(lg) + 4.0, n=2) / 4.0
        check(B, B.whisper_log(B.asarray(mel), log_max, guard), ref, tol, f"whisper_log max={log_max} guard={guard}")


# ---- the contract itself -----------------------------------------------------------------------


# ---- sequence ops (Silero VAD) -----------------------------------------------------------------


def _lstm_ref(x, w_ih, w_hh, b_ih, b_hh, h, c):
    """torch.nn.LSTM's equations in float64 numpy, one step at a time."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), h, c


@case("lstm")
def case_lstm(B):
    """Gates are squashed to (-1, 1); each step's pre-activation sums Cin + H + 2 terms of order 1,
    and the state's error can grow at most linearly over T steps: 1e-5 covers fp32 for T = 7."""
    x, h0, c0 = (np.random.standard_normal(s) for s in ((3, 7, 5), (3, 4), (3, 4)))
    w_ih, w_hh, b_ih, b_hh = (np.random.standard_normal(s) for s in ((16, 5), (16, 4), (16,), (16,)))
    ref, h_ref, c_ref = _lstm_ref(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    arr = lambda a: B.asarray(a.astype(np.float32))  # noqa: E731
    out, (h, c) = B.lstm(arr(x), arr(w_ih), arr(w_hh), arr(b_ih), arr(b_hh), (arr(h0), arr(c0)))
    for got, want, what in ((out, ref, "outputs"), (h, h_ref, "h"), (c, c_ref, "c")):
        check(B, got, want, 1e-5, f"lstm {what}")
    zero = _lstm_ref(x, w_ih, w_hh, b_ih, b_hh, np.zeros((3, 4)), np.zeros((3, 4)))[0]
    check(B, B.lstm(arr(x), arr(w_ih), arr(w_hh), arr(b_ih), arr(b_hh))[0], zero, 1e-5, "lstm from zero state")


@case("stft_magnitude")
def case_stft_magnitude(B):
    """Magnitudes up to ~40 from 256-term sums of order-1 terms: fp32 error ~ 2^-24 * 40 * 16 < 1e-4."""
    sig, window = np.random.standard_normal((2, 640)), np.hanning(257)[:-1]
    frames = np.stack([sig[:, s : s + 256] for s in range(0, 640 - 256 + 1, 128)], axis=1)
    want = np.abs(np.fft.rfft(frames * window, axis=-1))
    got = B.stft_magnitude(B.asarray(sig.astype(np.float32)), B.asarray(window.astype(np.float32)), 128)
    check(B, got, want, 1e-4, "stft_magnitude")


@pytest.mark.parametrize("member", sorted(CASES))
def test_op(B, member):
    CASES[member](B)


def test_every_protocol_member_has_a_case():
    methods, attributes = protocol_members()
    assert sorted(CASES) == sorted(methods + attributes), (
        f"protocol members without a conformance case: {sorted(set(methods + attributes) - set(CASES))}; "
        f"cases for members not in the protocol: {sorted(set(CASES) - set(methods + attributes))}"
    )


def _signature(fn) -> list[tuple]:
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("name", sorted(n for n, (_, ok) in _BACKENDS.items() if ok))
def test_backend_class_implements_every_member_with_the_protocols_signature(name):
    """Checked on the class (a static or plain method alike), so a renamed parameter or a dropped
    default is caught before any model calls it with the protocol's keywords."""
    backend = _BACKENDS[name][0]()
    methods, attributes = protocol_members()
    for m in methods:
        impl = getattr(type(backend), m, None)
        assert callable(impl), f"{type(backend).__name__} has no {m}"
        assert _signature(getattr(backend, m)) == _signature(getattr(Backend, m)), (
            f"{type(backend).__name__}.{m}{inspect.signature(getattr(backend, m))} != "
            f"Backend.{m}{inspect.signature(getattr(Backend, m))}"
        )
    missing = [a for a in attributes if not hasattr(backend, a)]
    assert not missing, f"{type(backend).__name__} lacks the attributes {missing}"


def test_torch_wide_linear_packs_its_copy_on_the_first_multi_row_call():
    """A vocabulary-wide fp32 weight on torch's CPU backend: one row multiplies the (Cin, Cout)
    copy, and the oneDNN-packed copy is made only once several rows come (then reused)."""
    from polyasr.backends.torch import TorchBackend
    from polyasr.backends.torch_packed_linear import WIDE_OUTPUT, WideLinear, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN")
    B = TorchBackend("cpu", "float32")
    w = B.prepare_linear(B.asarray(f32(WIDE_OUTPUT, 8)))
    assert isinstance(w, WideLinear) and w.shape == (8, WIDE_OUTPUT) and w.packed is None
    B.linear(B.asarray(f32(1, 1, 8)), w)
    assert w.packed is None and w.nbytes == 4 * 8 * WIDE_OUTPUT
    B.linear(B.asarray(f32(4, 1, 8)), w)
    packed = w.packed
    B.linear(B.asarray(f32(2, 8)), w)
    assert packed is not None and w.packed is packed and w.nbytes == 2 * 4 * 8 * WIDE_OUTPUT
    assert not isinstance(B.prepare_linear(B.asarray(f32(WIDE_OUTPUT - 1, 8))), WideLinear)


@pytest.mark.parametrize("cout, cin", [(24, 8), (1536, 768), (512, 2048)])
def test_mkl_packed_weight_multiplies_any_row_count(cout, cin):
    """MKL packs a weight for `MKL_PACK_ROWS` rows, and `PackedLinear` multiplies it by whatever rows
    a call brings: the row count at packing must choose MKL's blocking only, never the result. From
    no rows to thousands, on either side of the hint, the products are fp32-exact."""
    from polyasr.backends.torch import TorchBackend
    from polyasr.backends.torch_packed_linear import MKL_PACK_ROWS, PackedLinear, mkl_packing_available

    if not mkl_packing_available():
        pytest.skip("MKL's packed GEMM is used on Intel CPUs with torch's MKL build only")
    B = TorchBackend("cpu", "float32")
    w, b = f32(cout, cin), f32(cout)
    packed = PackedLinear(B.asarray(w))
    assert packed.library == "mkl"
    for rows in (0, 1, 3, MKL_PACK_ROWS - 1, MKL_PACK_ROWS, MKL_PACK_ROWS + 1, 1000, 2500):
        x = f32(rows, cin)
        for bias in (None, b):
            y = packed.linear(B.asarray(x), None if bias is None else B.asarray(bias))
            ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if bias is None else bias)
            mag = np.abs(x) @ np.abs(w).T.astype(np.float64) + (0 if bias is None else np.abs(bias))
            check(B, y, ref, fp32_tol(mag, n=cin + 1), f"{rows} rows x ({cin} -> {cout}), bias {bias is not None}")


def test_torch_cpu_packs_sequence_weights_once_and_keeps_decoder_weights_transposed():
    """On torch's CPU backend an fp32 weight that only multiplies sequences is held packed alone
    (no (Cin, Cout) copy beside it): by MKL on an Intel CPU unless its family fixes every call at
    thousands of rows, else by oneDNN; a decoder weight stays (Cin, Cout)."""
    import torch

    from polyasr.backends.torch import TorchBackend
    from polyasr.backends.torch_packed_linear import (
        ONEDNN_FROM_ROWS,
        PackedLinear,
        mkl_packing_available,
        packing_available,
    )

    if not packing_available():
        pytest.skip("this torch build has no oneDNN")
    B = TorchBackend("cpu", "float32")
    w = f32(24, 8)
    seq, step = B.prepare_linear(B.asarray(w), many_rows=True), B.prepare_linear(B.asarray(w))
    windows = B.prepare_linear(B.asarray(w), many_rows=ONEDNN_FROM_ROWS)
    assert isinstance(seq, PackedLinear) and seq.shape == (8, 24) and seq.nbytes == 4 * 24 * 8
    assert seq.library == ("mkl" if mkl_packing_available() else "onednn") and windows.library == "onednn"
    held = [t for t in vars(seq).values() if isinstance(t, torch.Tensor) and not t.is_mkldnn]
    assert all(t.untyped_storage().nbytes() <= 4 for t in held)  # no dense copy of the weight
    assert tuple(step.shape) == (8, 24) and step.is_contiguous()
    x = f32(2, 5, 8)
    np.testing.assert_allclose(B.to_numpy(B.linear(B.asarray(x), seq)), x @ w.T, rtol=1e-5, atol=1e-5)
