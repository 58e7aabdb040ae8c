"""The Whisper network as plain functions of (params, cfg, B): encoder, decoder step, logits.

params: flat dict of backend arrays under the canonical names of `param_shapes`.
Self-attention q/k/v and cross-attention k/v are stored fused (one matmul each); Whisper's
k projections have no bias, so their slice of the fused bias is zero.
Layouts are channels-last: mel (B, n_mels, T) is transposed once, then x is (B, T, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyasr.models import layers
from polyasr.models.layers import ParamShapes
from polyasr.models.layers import layer_norm as _ln
from polyasr.models.layers import linear as _lin


def param_shapes(cfg) -> ParamShapes:
    """Every parameter the network needs, with its shape: the contract checkpoints are checked
    against, and how `prepare` lays each weight out (models/layers.py)."""
    d, shapes = cfg.d_model, ParamShapes()
    lin = shapes.linear

    def enc(prefix, n_out, n_in):  # the encoder, and K/V over its output: whole windows a call
        lin(prefix, n_out, n_in, many_rows=cfg.max_source_positions)

    def ln(prefix):
        shapes.norm(prefix, d)

    shapes.update(
        {
            "encoder.conv1.weight": (d, cfg.num_mel_bins, 3),
            "encoder.conv1.bias": (d,),
            "encoder.conv2.weight": (d, d, 3),
            "encoder.conv2.bias": (d,),
            "encoder.positional_embedding": (cfg.max_source_positions, d),
        }
    )
    for i in range(cfg.encoder_layers):
        p = f"encoder.blocks.{i}"
        ln(f"{p}.attn_ln"), enc(f"{p}.attn.qkv", 3 * d, d), enc(f"{p}.attn.out", d, d)
        ln(f"{p}.mlp_ln"), enc(f"{p}.mlp1", cfg.encoder_ffn_dim, d), enc(f"{p}.mlp2", d, cfg.encoder_ffn_dim)
    ln("encoder.ln_post")
    shapes["decoder.token_embedding.weight"] = (cfg.vocab_size, d)
    shapes["decoder.positional_embedding"] = (cfg.max_target_positions, d)
    for i in range(cfg.decoder_layers):
        p = f"decoder.blocks.{i}"
        ln(f"{p}.attn_ln"), lin(f"{p}.attn.qkv", 3 * d, d), lin(f"{p}.attn.out", d, d)
        ln(f"{p}.cross_attn_ln"), lin(f"{p}.cross_attn.q", d, d)
        enc(f"{p}.cross_attn.kv", 2 * d, d)  # applied once to the encoder's output
        lin(f"{p}.cross_attn.out", d, d)
        ln(f"{p}.mlp_ln"), lin(f"{p}.mlp1", cfg.decoder_ffn_dim, d), lin(f"{p}.mlp2", d, cfg.decoder_ffn_dim)
    ln("decoder.ln")
    return shapes


def _mlp(params, B, x, prefix):
    return _lin(params, B, B.gelu(_lin(params, B, x, f"{prefix}.mlp1")), f"{prefix}.mlp2")


def encode(params, cfg, B, mel):
    """mel: (B, n_mels, 2 * n_ctx) -> audio features (B, n_ctx, d_model); a batch of more rows than
    the backend's `max_pass_rows` runs in slices of whole windows."""
    n, frames = mel.shape[0], mel.shape[2] // 2
    per_pass = max(1, B.max_pass_rows // frames) if B.max_pass_rows else n
    if n > per_pass:
        return B.concat([_encode(params, cfg, B, mel[s : s + per_pass]) for s in range(0, n, per_pass)], axis=0)
    return _encode(params, cfg, B, mel)


def _encode(params, cfg, B, mel):
    x = B.transpose(mel, (0, 2, 1))
    x = B.gelu(B.conv1d(x, params["encoder.conv1.weight"], params["encoder.conv1.bias"], padding=1))
    x = B.gelu(B.conv1d(x, params["encoder.conv2.weight"], params["encoder.conv2.bias"], stride=2, padding=1))
    # The convolutions leave (B, T, C) as a transposed view of (B, C, T) memory; made contiguous once
    # here, or every residual add keeps that layout and every layer norm copies it.
    x = B.contiguous(x + params["encoder.positional_embedding"][: x.shape[1]])
    h = cfg.encoder_attention_heads
    for i in range(cfg.encoder_layers):
        p = f"encoder.blocks.{i}"
        q, k, v = B.split(_lin(params, B, _ln(params, B, x, f"{p}.attn_ln"), f"{p}.attn.qkv"), [cfg.d_model] * 3)
        a = B.attention(B.split_heads(q, h), B.split_heads(k, h), B.split_heads(v, h))
        x = x + _lin(params, B, B.merge_heads(a), f"{p}.attn.out")
        x = x + _mlp(params, B, _ln(params, B, x, f"{p}.mlp_ln"), p)
    return _ln(params, B, x, "encoder.ln_post")


@dataclass
class KVCache:
    """Preallocated per-layer self-attention keys/values (R, H, max_len, D), one row per sequence,
    and the cross K/V of the audio (N, H, T, D), one row per audio, computed once per window.

    The sequences of one audio (beams, sampled candidates) are `group` consecutive rows, R = N * group:
    they share that audio's cross K/V row instead of holding copies of it. `length` is how many
    positions are filled (the rest is never read, and never zeroed); the first `shared` of them
    hold the same keys/values in every row of a group (the given tokens, computed once per audio
    and copied by `expand_cache`), so reordering a group's rows never moves them."""

    self_k: list
    self_v: list
    cross_k: list
    cross_v: list
    length: int = 0
    group: int = 1
    shared: int = 0


def cross_kv(params, cfg, B, audio_features) -> tuple[list, list]:
    """The cross-attention keys and values of `audio_features` (N, T, d), per decoder layer, each
    (N, H, T, D): computed once per window and shared by everything that decodes over it (language
    detection, every temperature of the fallback)."""
    h, keys, values = cfg.decoder_attention_heads, [], []
    for i in range(cfg.decoder_layers):
        k, v = B.split(_lin(params, B, audio_features, f"decoder.blocks.{i}.cross_attn.kv"), [cfg.d_model] * 2)
        # Contiguous once here, or attention would copy the strided views at every decoded token.
        keys.append(B.contiguous(B.split_heads(k, h)))
        values.append(B.contiguous(B.split_heads(v, h)))
    return keys, values


def take_cross_kv(B, cross: tuple[list, list], rows) -> tuple[list, list]:
    """The cross K/V of some windows (host ints) of a `cross_kv`; all of them in order is `cross`
    itself (not a copy of tens of megabytes per window)."""
    if np.array_equal(rows, np.arange(cross[0][0].shape[0])):
        return cross
    return tuple([B.take_rows(x, rows) for x in part] for part in cross)


def new_cache(params, cfg, B, audio_features, max_len: int, group: int = 1, cross=None) -> KVCache:
    """Empty self-attention cache for `group` sequences per audio of `max_len` tokens, plus the
    cross K/V of `audio_features` (N, T, d), or `cross` when that was computed already (`cross_kv`)."""
    n, h = audio_features.shape[0], cfg.decoder_attention_heads
    shape = (n * group, h, max_len, cfg.d_model // h)
    keys, values = cross if cross is not None else cross_kv(params, cfg, B, audio_features)
    cache = KVCache([], [], list(keys), list(values), group=group)
    for _ in range(cfg.decoder_layers):
        cache.self_k.append(B.empty(shape))  # read only up to `length`: never zeroed
        cache.self_v.append(B.empty(shape))
    return cache


def expand_cache(B, cache: KVCache, group: int) -> None:
    """A cache of one row per audio (its given tokens decoded once) -> `group` identical rows per
    audio: the filled positions become the group's `shared` prefix. Only those are copied; the
    room left for decoding is left unwritten (gathering it whole costs as much as the steps)."""
    rows, filled = np.repeat(np.arange(cache.self_k[0].shape[0]), group), cache.length

    def expand(buf):
        return B.cache_write(B.empty((len(rows), *buf.shape[1:])), B.take_rows(buf[:, :, :filled], rows), 0)

    cache.self_k = [expand(k) for k in cache.self_k]
    cache.self_v = [expand(v) for v in cache.self_v]
    cache.group, cache.shared = group, filled


def reorder_cache(B, cache: KVCache, rows) -> None:
    """Row i of the cache becomes row rows[i] (host ints; beams within their audio's group). When
    whole groups are dropped (their audio is done) the cache shrinks to the rows kept, the cross
    K/V to the audios kept. When the row count stays, only the filled positions past the group's
    shared prefix move."""
    rows = np.asarray(rows, dtype=np.int64)
    n_rows, shared, filled = cache.self_k[0].shape[0], cache.shared, cache.length
    for buffers in (cache.self_k, cache.self_v):
        for i, buf in enumerate(buffers):
            if len(rows) != n_rows:
                buffers[i] = B.take_rows(buf, rows)
            elif filled > shared:  # beams swap places: one gather of what differs, written back
                B.cache_write(buf, B.take_rows(buf[:, :, shared:filled], rows), shared)
    if len(rows) != n_rows:
        cache.cross_k, cache.cross_v = take_cross_kv(
            B, (cache.cross_k, cache.cross_v), rows[:: cache.group] // cache.group
        )


def _cross_attention(params, cfg, B, x, cache: KVCache, i: int, cross_queries: dict | None = None):
    """x (R, t, d) -> (R, t, d). The rows of one audio attend to the same keys, so they are folded
    into its query axis, (N, group * t, d): one attention per audio, the same values as per row."""
    r, t, d = x.shape
    g, h = cache.group, cfg.decoder_attention_heads
    p = f"decoder.blocks.{i}"
    q = _lin(params, B, _ln(params, B, x, f"{p}.cross_attn_ln"), f"{p}.cross_attn.q")
    if cross_queries is not None:
        cross_queries[i] = B.split_heads(q, h)
    q = q.reshape(r // g, g * t, d) if g > 1 else q
    a = B.merge_heads(B.attention(B.split_heads(q, h), cache.cross_k[i], cache.cross_v[i]))
    return _lin(params, B, a.reshape(r, t, d) if g > 1 else a, f"{p}.cross_attn.out")


def decode(params, cfg, B, tokens, cache: KVCache, cross_queries: dict | None = None):
    """tokens: (R, T) ids following the cache's `length` positions -> hidden states (R, T, d).

    Writes the new keys/values into the cache and advances `cache.length` by T.
    cross_queries: if given, receives each layer's cross-attention queries (R, H, T, D) under its
    index, so word alignment can form the attention weights of a few heads (models/whisper/alignment.py).
    """
    start, t = cache.length, tokens.shape[1]
    room = min(cfg.max_target_positions, cache.self_k[0].shape[2])
    if start + t > room:  # the decoding loop bounds its length; reaching this is a bug in it
        raise ValueError(f"decoder context overflow: {start + t} > {room}")
    x = B.embedding(tokens, params["decoder.token_embedding.weight"])
    x = x + params["decoder.positional_embedding"][start : start + t]
    h = cfg.decoder_attention_heads
    for i in range(cfg.decoder_layers):
        p = f"decoder.blocks.{i}"
        # q, k and v heads are consecutive head groups of the fused projection: one reshape for all three
        qkv = B.split_heads(_lin(params, B, _ln(params, B, x, f"{p}.attn_ln"), f"{p}.attn.qkv"), 3 * h)
        q, k, v = B.split(qkv, [h] * 3, axis=1)
        keys = B.cache_write(cache.self_k[i], k, start)[:, :, : start + t]
        values = B.cache_write(cache.self_v[i], v, start)[:, :, : start + t]
        a = B.attention(q, keys, values, causal=True)
        x = x + _lin(params, B, B.merge_heads(a), f"{p}.attn.out")
        x = x + _cross_attention(params, cfg, B, x, cache, i, cross_queries)
        x = x + _mlp(params, B, _ln(params, B, x, f"{p}.mlp_ln"), p)
    cache.length = start + t
    return _ln(params, B, x, "decoder.ln")


def prepare(params, cfg, B) -> dict:
    """Checkpoint parameters -> what the functions below take, once at load time: linear weights
    in the backend's layout (models/layers.py), and the output projection, tied to the token embedding."""
    out = layers.prepare(params, param_shapes(cfg), B)
    out["decoder.output_projection"] = B.prepare_linear(params["decoder.token_embedding.weight"])
    return out


def logits(params, B, hidden):
    """hidden (B, T, d) -> logits (B, T, vocab)."""
    return B.linear(hidden, params["decoder.output_projection"])
