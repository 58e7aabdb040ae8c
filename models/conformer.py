"""The macaron Conformer block (Gulati et al. 2020) that GigaAM and Parakeet share, on backend ops.

    x = x + 1/2 FF(LN x);  x = x + MHSA(LN x);  x = x + Conv(LN x);  x = x + 1/2 FF(LN x);  LN x

FF = linear, SiLU, linear. The two families differ only in the attention (rotary vs
Transformer-XL relative positions) and the conv module's norm, which the caller passes in as
functions of the normalised input. Parameter names are the upstream ones both checkpoints use
(`norm_feed_forward1`, `feed_forward1.linear1`, ..., `norm_out`).
"""

from __future__ import annotations


def linear(params, B, x, prefix: str):
    """x (..., Cin) -> (..., Cout) with `<prefix>.weight` (backend layout) and `<prefix>.bias` if present."""
    return B.linear(x, params[f"{prefix}.weight"], params.get(f"{prefix}.bias"))


def layer_norm(params, B, x, prefix: str):
    return B.layer_norm(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"])


def feed_forward(params, B, x, prefix: str):
    return linear(params, B, B.silu(linear(params, B, x, f"{prefix}.linear1")), f"{prefix}.linear2")


def macaron_block(params, B, x, prefix: str, attend, convolve):
    """One block: x (B, T, d) -> (B, T, d). attend / convolve: (B, T, d) normalised -> (B, T, d)."""
    x = x + 0.5 * feed_forward(
        params, B, layer_norm(params, B, x, f"{prefix}.norm_feed_forward1"), f"{prefix}.feed_forward1"
    )
    x = x + attend(layer_norm(params, B, x, f"{prefix}.norm_self_att"))
    x = x + convolve(layer_norm(params, B, x, f"{prefix}.norm_conv"))
    x = x + 0.5 * feed_forward(
        params, B, layer_norm(params, B, x, f"{prefix}.norm_feed_forward2"), f"{prefix}.feed_forward2"
    )
    return layer_norm(params, B, x, f"{prefix}.norm_out")
