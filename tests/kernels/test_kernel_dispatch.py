"""The kernels switch (`POLYASR_KERNELS`, `kernels=`) and the torch backend's routing: which ops run
the Triton kernels, which masks fall back to torch, and that kernel files import without Triton."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import assert_close, attention_tolerance, log_mel_tolerance, sdpa_tolerance

import polyasr.kernels.attention as attention_module
import polyasr.kernels.rel_pos_attention as rel_pos_module
from polyasr.backends import get_backend
from polyasr.backends.kernel_dispatch import resolve_kernels
from polyasr.backends.torch import TorchBackend
from polyasr.errors import BackendError


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("POLYASR_KERNELS", raising=False)


def test_auto_is_triton_only_on_cuda(no_env, monkeypatch):
    assert resolve_kernels(None, "cpu") == "torch" and resolve_kernels("auto", "cpu") == "torch"
    assert resolve_kernels(None, "cuda") == "torch"  # until the kernels have been validated on a GPU
    monkeypatch.setattr("polyasr.backends.kernel_dispatch.AUTO_USES_TRITON", True)
    assert resolve_kernels(None, "cuda") == "triton" and resolve_kernels(None, "cpu") == "torch"
    assert get_backend("cpu").kernels == "torch"


def test_env_var_and_option(monkeypatch):
    monkeypatch.setenv("POLYASR_KERNELS", "triton")
    assert TorchBackend("cpu").kernels == "triton"  # the tests run in the interpreter
    assert TorchBackend("cpu", kernels="torch").kernels == "torch"  # the option wins
    monkeypatch.setenv("POLYASR_KERNELS", "Torch ")
    assert resolve_kernels(None, "cuda") == "torch"
    monkeypatch.setenv("POLYASR_KERNELS", "cuda")
    with pytest.raises(BackendError, match="POLYASR_KERNELS='cuda' is not one of auto, torch, triton"):
        TorchBackend("cpu")
    with pytest.raises(BackendError, match="kernels='fast'"):
        TorchBackend("cpu", kernels="fast")


def test_triton_on_cpu_needs_the_interpreter(no_env, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
        TorchBackend("cpu", kernels="triton")
    assert resolve_kernels("triton", "cuda") == "triton"


def test_triton_missing(no_env, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(BackendError, match="`triton` package is not installed"):
        resolve_kernels("triton", "cuda")
    monkeypatch.setattr("polyasr.backends.kernel_dispatch.AUTO_USES_TRITON", True)
    assert resolve_kernels("auto", "cuda") == "torch"


def test_backend_without_triton_runs_the_torch_path():
    """A CPU-only install has no Triton: the backend and the kernel files' references still import and run."""
    code = """
import sys
sys.modules["triton"] = None  # import triton -> ImportError
import torch
from polyasr.backends.torch import TorchBackend
B = TorchBackend("cpu")
assert B.kernels == "torch"
q = torch.randn(1, 2, 5, 8)
out = B.rel_pos_attention(q, q, q, torch.randn(2, 9, 8), torch.zeros(2, 1, 8), torch.zeros(2, 1, 8))
y = B.glu_dwconv_silu(torch.randn(1, 5, 8), torch.randn(4, 3), torch.zeros(4))
assert out.shape == (1, 2, 5, 8) and y.shape == (1, 5, 4)
from polyasr.kernels.dwconv import dwconv_glu_silu
try:
    dwconv_glu_silu(torch.randn(1, 5, 8), torch.randn(4, 3), None, None, None)
except RuntimeError as e:
    assert "Triton is not installed" in str(e), e
else:
    raise AssertionError("launched without Triton")
print("ok")
"""
    env = {"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


# ---- routing ----------------------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch):
    """Counts launches of the Triton attention kernels (the real ones still run)."""
    seen = []
    for module, name in ((attention_module, "attention"), (rel_pos_module, "rel_pos_attention")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _r=real, _n=name, **k: (seen.append(_n), _r(*a, **k))[1])
    return seen


def _qkv(b=2, h=2, tq=9, tk=9, d=16):
    return torch.randn(b, h, tq, d), torch.randn(b, h, tk, d), torch.randn(b, h, tk, d)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_routes_key_padding_masks_to_the_kernel(calls, causal):
    tri, ref = TorchBackend("cpu", kernels="triton"), TorchBackend("cpu", kernels="torch")
    q, k, v = _qkv()
    keep = torch.arange(9)[None] < torch.tensor([[9], [4]])
    for mask in (None, keep[:, None, None, :]):
        assert_close(
            tri.attention(q, k, v, mask=mask, causal=causal),
            ref.attention(q, k, v, mask=mask, causal=causal),
            atol=sdpa_tolerance(q, k, v),
            what=f"mask={mask is not None} causal={causal}",
        )
    decode = _qkv(tq=1, tk=12)  # one decode step against a 12-entry cache
    assert_close(tri.attention(*decode, causal=True), ref.attention(*decode, causal=True), atol=sdpa_tolerance(*decode))
    assert calls == ["attention"] * 3


def test_attention_falls_back_for_other_masks(calls):
    tri, ref = TorchBackend("cpu", kernels="triton"), TorchBackend("cpu", kernels="torch")
    q, k, v = _qkv()
    additive = torch.randn(2, 1, 1, 9)
    per_query = torch.rand(2, 1, 9, 9) > 0.3
    per_query[..., 0] = True
    shared = (torch.arange(9) < 5)[None, None, None, :]  # broadcast over the batch
    for mask in (additive, per_query, shared):
        assert torch.equal(tri.attention(q, k, v, mask=mask), ref.attention(q, k, v, mask=mask))
    assert calls == []


def test_rel_pos_attention_routes_to_the_kernel(calls):
    tri, ref = TorchBackend("cpu", kernels="triton"), TorchBackend("cpu", kernels="torch")
    q, k, v = _qkv(tq=13, tk=13)
    pos, u, vb = torch.randn(2, 25, 16), torch.randn(2, 1, 16), torch.randn(2, 1, 16)
    keep = (torch.arange(13)[None] < torch.tensor([[13], [6]]))[:, None, None, :]
    # scores (q + u) k + (q + v) p: 2 x 16 products, scaled by 1/4
    terms = float((q.abs().max() + max(u.abs().max(), vb.abs().max())) * max(k.abs().max(), pos.abs().max())) / 4
    tol = attention_tolerance(values=float(v.abs().max()), score_terms=terms, reduction=32)
    for mask in (None, keep):
        assert_close(
            tri.rel_pos_attention(q, k, v, pos, u, vb, mask=mask),
            ref.rel_pos_attention(q, k, v, pos, u, vb, mask=mask),
            atol=tol,
        )
    assert calls == ["rel_pos_attention"] * 2


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("tq, causal, masked", [(7, True, False), (1, True, False), (7, False, True)])
def test_attention_with_fewer_kv_heads_is_grouped_query_attention(kernels, tq, causal, masked):
    """k/v with Hkv < H heads: query head h reads kv head h // (H / Hkv), on either path, equal to
    SDPA over kv heads repeated to H (the reference GQA definition)."""
    backend = TorchBackend("cpu", kernels=kernels)
    q, k, v = torch.randn(2, 6, tq, 16), torch.randn(2, 2, 11, 16), torch.randn(2, 2, 11, 16)
    mask = (torch.arange(11)[None] < torch.tensor([[11], [5]]))[:, None, None, :] if masked else None
    k_rep, v_rep = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    keep = torch.ones(tq, 11, dtype=torch.bool).tril(11 - tq) if causal else None
    full = keep if mask is None else (mask if keep is None else mask & keep)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k_rep, v_rep, attn_mask=full)
    got = backend.attention(q, k, v, mask=mask, causal=causal)
    assert_close(got, expected, atol=sdpa_tolerance(q, k, v), what="GQA attention")


def test_log_mel_routes_to_the_mel_kernel_unless_the_checkpoint_brings_tables(monkeypatch):
    import numpy as np

    import polyasr.kernels.mel_kernel as mel_kernel_module
    from polyasr.kernels.mel_tables import MelConfig, tables

    calls = []
    real = mel_kernel_module.log_mel
    monkeypatch.setattr(mel_kernel_module, "log_mel", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = MelConfig.whisper(80)
    batch = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    lengths = np.array([4000, 2500])
    tri, ref = TorchBackend("cpu", kernels="triton"), TorchBackend("cpu", kernels="torch")
    (ft, nt), (fr, nr) = tri.log_mel(batch, lengths, cfg), ref.log_mel(batch, lengths, cfg)
    assert calls == [1] and nt.tolist() == nr.tolist()
    assert_close(ft, fr, log_mel_tolerance(batch, cfg, lengths), what="mel kernel (interpreter) vs log_mel_ref")
    tri.log_mel(batch, lengths, cfg, tables(cfg))  # a checkpoint's own tables: the reference takes them
    assert calls == [1]
