"""Ops written once in terms of other backend ops (`backends/protocol.py` documents each).

`ComposedOps` is a mixin that every backend inherits: an op here is the same composition on
every backend, so it is not written per backend. A backend overrides one only to run something
better for it (a fused kernel, a native op) that computes the same thing; `TorchBackend` does so
for `glu`, `silu` and `silu_mul` (torch's native ops), and for `rope`, `qk_norm_rope` and
`glu_dwconv_silu` (routed to Triton kernels or their references).

Besides the ops, the compositions use only what the protocol says arrays have (`.shape`,
`.ndim`, `reshape`, indexing, arithmetic, slice assignment for `cache_write`).
"""

from __future__ import annotations

import numpy as np


class ComposedOps:
    """Ops built from other ops of the same backend (`self`)."""

    # ---- shapes -------------------------------------------------------------------------------
    def split_heads(self, x, n_heads: int):
        b, t, c = x.shape
        return self.transpose(x.reshape(b, t, n_heads, c // n_heads), (0, 2, 1, 3))

    def merge_heads(self, x):
        b, h, t, d = x.shape
        return self.transpose(x, (0, 2, 1, 3)).reshape(b, t, h * d)

    @staticmethod
    def cache_write(cache, value, pos: int):
        # slice assignment writes into the cache object on torch and MLX alike
        cache[:, :, pos : pos + value.shape[2]] = value
        return cache

    def length_mask(self, lengths, size: int):
        # built on the host: one (B, size) bool transfer, no device arange per call
        n = np.asarray(lengths, dtype=np.int64).reshape(-1)
        return self.asarray(np.arange(size)[None, :] < n[:, None])

    # ---- elementwise --------------------------------------------------------------------------
    def silu(self, x):
        return x * self.sigmoid(x)

    def glu(self, x, axis: int = -1):
        a, g = self.split(x, [x.shape[axis] // 2] * 2, axis=axis)
        return a * self.sigmoid(g)

    def silu_mul(self, gate_up):
        gate, up = self.split(gate_up, [gate_up.shape[-1] // 2] * 2)
        return self.silu(gate) * up

    # ---- convolutions -------------------------------------------------------------------------
    def conv2d_gelu(self, x, w, b=None, stride: int = 1, padding: int = 0):
        return self.gelu(self.conv2d(x, w, b, stride, padding))

    # ---- positions ----------------------------------------------------------------------------
    def rope_tables(self, length: int, dim: int, base: float):
        # angles in fp32 as the upstream models compute them (the product's rounding at large
        # positions is part of what they were trained with); cos / sin of those in float64
        inv_freq = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
        angles = np.outer(np.arange(length, dtype=np.float32), inv_freq.astype(np.float32))
        angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)
        return self.asarray(np.cos(angles).astype(np.float32)), self.asarray(np.sin(angles).astype(np.float32))

    def rope(self, x, cos, sin):
        d = cos.shape[-1]
        y = x.reshape(*x.shape[:-1], x.shape[-1] // d, d) if x.ndim == 3 else x  # (B, T, H, D) | (B, H, T, D)
        c, s = (cos[:, None], sin[:, None]) if x.ndim == 3 else (cos, sin)
        y1, y2 = self.split(y, [d // 2, d // 2])
        out = y * c + self.concat([-y2, y1], axis=-1) * s
        return out.reshape(*x.shape) if x.ndim == 3 else out

    def qk_norm_rope(self, x, w, cos, sin, eps: float = 1e-6):
        if w is None:
            return self.rope(x, cos, sin)
        d = cos.shape[-1]
        y = x.reshape(*x.shape[:-1], x.shape[-1] // d, d) if x.ndim == 3 else x
        y = self.rope(
            self.rms_norm(y, w, eps), cos[:, None] if x.ndim == 3 else cos, sin[:, None] if x.ndim == 3 else sin
        )
        return y.reshape(*x.shape) if x.ndim == 3 else y

    # ---- Conformer conv module ----------------------------------------------------------------
    def glu_dwconv_silu(self, x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
        x = self.glu(x)
        if keep is not None:
            x = self.zero_masked(x, keep[:, :, None])
        x = self.depthwise_conv1d(x, w, b, padding=(w.shape[1] - 1) // 2)
        if ln is not None:
            x = self.layer_norm(x, ln[0], ln[1], eps)
        return self.silu(x)
