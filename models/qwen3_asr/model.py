"""The Qwen3-ASR network as plain functions of (params, cfg, B): audio encoder, Qwen3 decoder, logits.

Audio encoder ("AuT", as Qwen's `Qwen3ASRAudioEncoder` computes it):
  log-mel (n_mels, T) of one item is cut into chunks of `2 * n_window` frames (the last one
  zero-padded); each chunk goes alone through three (3x3, stride 2, pad 1) conv2d + GELU
  over (frequency, time), is flattened per output frame to (channels x frequency) and projected
  (`conv_out`, no bias), and gets sinusoidal positions that restart at 0 in every chunk. Only the
  frames a chunk's valid length produces are kept. The kept frames of an item are cut into
  attention windows of `post-conv frames per chunk * (n_window_infer // (2 * n_window))` tokens
  (13 * 8 = 104, 8 s, for the released models); a token attends only inside its window. Then
  pre-LN transformer layers, `ln_post`, and the projector proj1 -> GELU -> proj2 to the LLM width.
  A batch packs every item's kept tokens into one (N, d) sequence for the per-token work, ordered
  window by window, the windows sorted by length: attention then runs on each run of equal windows
  as a view, with no padding and no mask, so an item's output does not depend on its batch and no
  matmul runs on padding.

Decoder: Qwen3 (pre-RMSNorm; GQA with per-head RMSNorm on q and k before RoPE; SwiGLU MLP),
run on prompt embeddings in which the audio placeholder tokens are replaced by the encoder output.

params: flat dict of backend arrays under the names of `param_shapes`; q/k/v (both stacks) and the
MLP's gate/up are stored fused. Layout is channels-last (B, T, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyasr.models import layers
from polyasr.models.layers import ParamShapes


def param_shapes(cfg) -> ParamShapes:
    """Every parameter the network needs, with its shape: the contract checkpoints are checked
    against, and how `prepare` lays each weight out (models/layers.py)."""
    a, t = cfg.audio, cfg.text
    d, c, shapes = a.d_model, a.downsample_hidden_size, ParamShapes()
    lin = shapes.linear

    def enc(prefix, n_out, n_in, bias=True):  # the audio encoder multiplies whole sequences
        lin(prefix, n_out, n_in, bias, many_rows=True)

    def ln(name):
        shapes.norm(name, d)

    for i, c_in in ((1, 1), (2, c), (3, c)):
        shapes.conv2d(f"audio_tower.conv2d{i}", c, c_in, 3)
    enc("audio_tower.conv_out", d, c * a.conv_freq_bins, bias=False)
    for i in range(a.encoder_layers):
        p = f"audio_tower.layers.{i}"
        ln(f"{p}.self_attn_layer_norm"), enc(f"{p}.self_attn.qkv", 3 * d, d), enc(f"{p}.self_attn.out_proj", d, d)
        ln(f"{p}.final_layer_norm"), enc(f"{p}.fc1", a.encoder_ffn_dim, d), enc(f"{p}.fc2", d, a.encoder_ffn_dim)
    ln("audio_tower.ln_post"), enc("audio_tower.proj1", d, d), enc("audio_tower.proj2", a.output_dim, d)
    h, hd = t.hidden_size, t.head_dim
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    shapes["model.embed_tokens.weight"] = (t.vocab_size, h)
    for i in range(t.num_hidden_layers):
        p = f"model.layers.{i}"
        shapes[f"{p}.input_layernorm.weight"] = shapes[f"{p}.post_attention_layernorm.weight"] = (h,)
        lin(f"{p}.self_attn.qkv", q + 2 * kv, h, bias=t.attention_bias)
        lin(f"{p}.self_attn.o_proj", h, q, bias=t.attention_bias)
        shapes[f"{p}.self_attn.q_norm.weight"] = shapes[f"{p}.self_attn.k_norm.weight"] = (hd,)
        lin(f"{p}.mlp.gate_up", 2 * t.intermediate_size, h, bias=False)
        lin(f"{p}.mlp.down_proj", h, t.intermediate_size, bias=False)
    shapes["model.norm.weight"] = (h,)
    if not t.tie_word_embeddings:
        shapes["lm_head.weight"] = (t.vocab_size, h)
    return shapes


def prepare(params, cfg, B) -> dict:
    """Checkpoint parameters -> what the functions below take, once at load time: linear weights in
    the backend's layout (models/layers.py), the sinusoid table, and the output projection (tied
    to the embedding or not)."""
    out = prepare_shared(params, param_shapes(cfg), cfg, B)
    head = params["model.embed_tokens.weight"] if cfg.text.tie_word_embeddings else params.pop("lm_head.weight")
    out.pop("lm_head.weight", None)
    out["lm_head"] = B.prepare_linear(head)
    return out


def prepare_shared(params, shapes, cfg, B) -> dict:
    """What every network on this encoder and decoder needs (Qwen3-ASR, Qwen3-ForcedAligner): the
    declared weights laid out for the backend, and the encoder's sinusoid table."""
    out = layers.prepare(params, shapes, B)
    out["audio_tower.positions"] = B.asarray(sinusoids(chunk_tokens(cfg.audio.chunk_frames), cfg.audio.d_model))
    return out


# ---- audio encoder ---------------------------------------------------------------------------------
def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's sinusoid table (length, channels): sin | cos halves, timescales 1 .. 10000."""
    inc = np.log(10000.0) / (channels // 2 - 1)
    scaled = np.arange(length)[:, None] * np.exp(-inc * np.arange(channels // 2))[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def chunk_tokens(frames: int) -> int:
    """Output frames of three (k=3, s=2, p=1) convolutions over `frames` input frames (0 stays 0)."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames


def audio_tokens(frames: int, cfg) -> int:
    """Encoder output length (= audio placeholder tokens in the prompt) for `frames` mel frames."""
    full, tail = divmod(int(frames), cfg.audio.chunk_frames)
    return full * chunk_tokens(cfg.audio.chunk_frames) + chunk_tokens(tail)


@dataclass
class EncoderPlan:
    """Host-side index arrays of one batch (see `plan_encoder`)."""

    chunks: np.ndarray  # (n_chunks,) index into the (B * chunks_per_item) chunk grid
    tokens_rows: np.ndarray | None  # (N,) the kept conv tokens (index into n_chunks * per_chunk), in window
    # order; None when that is all of them in order (one item of whole chunks)
    windows: list[tuple[int, int, int]]  # (first token, windows, tokens per window): runs of equal windows
    restore: np.ndarray | None  # (N,) window order -> items' tokens in order; None when they coincide
    tokens: list[int]  # encoder output length per item


def plan_encoder(frames, cfg, grid_chunks: int) -> EncoderPlan:
    """Which chunks run, which conv tokens are kept, and the order the encoder keeps them in: every
    attention window's tokens adjacent, the windows sorted by length (the full ones first), so each
    run of equal windows is a plain (windows, length, d) view of the packed tokens, with no padding
    to mask and no gather per layer; the items' order is restored once, after the last layer.

    frames: valid mel frames per item; grid_chunks: chunks per item in the padded (B, n_mels, T) batch.
    """
    a = cfg.audio
    per_chunk = chunk_tokens(a.chunk_frames)
    window = per_chunk * a.chunks_per_window
    chunks, kept, spans = [], [], []
    for b, n in enumerate(int(f) for f in frames):
        first = len(kept)
        for c in range(-(-n // a.chunk_frames)):
            valid = chunk_tokens(min(a.chunk_frames, n - c * a.chunk_frames))
            kept += range(len(chunks) * per_chunk, len(chunks) * per_chunk + valid)
            chunks.append(b * grid_chunks + c)
        spans += [(s, min(s + window, len(kept))) for s in range(first, len(kept), window)]
    spans.sort(key=lambda span: span[0] - span[1])  # stable: longest first, items in order within a length
    order = np.concatenate([np.arange(s, e) for s, e in spans]) if spans else np.zeros(0, np.int64)
    windows, start = [], 0
    for s, e in spans:
        if windows and windows[-1][2] == e - s:
            windows[-1][1] += 1
        else:
            windows.append([start, 1, e - s])
        start += e - s
    in_order = bool(np.all(order == np.arange(order.size)))
    rows = np.asarray(kept, np.int64)[order]
    return EncoderPlan(
        np.asarray(chunks, np.int64),
        None if np.array_equal(rows, np.arange(len(chunks) * per_chunk)) else rows,
        [tuple(w) for w in windows],
        None if in_order else np.argsort(order),
        [audio_tokens(f, cfg) for f in frames],
    )


# The stem's blocks on a backend that wants `small_blocks` (see _conv_stem): the first conv's output
# for one group of chunks, and the flattened conv output `conv_out` multiplies at once. Elsewhere,
# groups of STEM_GROUP_CHUNKS (a bound on memory: 393 MB of first-conv output at C = 480).
STEM_GROUP_BYTES = 16 << 20
STEM_GROUP_CHUNKS = 64


def _conv_stem(params, cfg, B, x):
    """x (n_chunks, 1, n_mels, chunk) -> (n_chunks, tokens per chunk, d_model).

    Where the backend wants `small_blocks` (torch on the CPU), the convolutions run on groups of
    chunks whose first conv output (C x n_mels/2 x chunk/2 floats per chunk, 6 MB at C = 480) stays
    under STEM_GROUP_BYTES: malloc maps a larger block afresh at every call and faults its pages in
    one by one, while blocks under its mmap threshold reuse the heap's pages; two chunks a group
    convolve as fast as more. `conv_out` then multiplies the flattened outputs of as many groups as
    fit the same bound at once: per group, its product would have a few dozen rows, which runs at
    half the rate of a few hundred. Elsewhere, groups of STEM_GROUP_CHUNKS."""
    n_mels, chunk = x.shape[2], x.shape[3]
    if not B.small_blocks:
        group = rows = STEM_GROUP_CHUNKS
    else:
        per_chunk = cfg.audio.downsample_hidden_size * -(-n_mels // 2) * -(-chunk // 2) * 4
        group = max(1, STEM_GROUP_BYTES // per_chunk)
        flat_per_chunk = per_chunk // 16  # after two more stride-2 convs: a quarter on each axis
        rows = max(1, STEM_GROUP_BYTES // (flat_per_chunk * group)) * group
    outs = []
    for r in range(0, x.shape[0], rows):
        flat = [_conv_group(params, B, x[s : s + group]) for s in range(r, min(x.shape[0], r + rows), group)]
        y = flat[0] if len(flat) == 1 else B.concat(flat, axis=0)
        outs.append(B.linear(y, params["audio_tower.conv_out.weight"]))
    return outs[0] if len(outs) == 1 else B.concat(outs, axis=0)


def _conv_group(params, B, y):
    """(n, 1, n_mels, chunk) -> (n, tokens per chunk, C * n_mels / 8): the three conv + GELU stages,
    flattened channel-major per token as upstream does."""
    for i in (1, 2, 3):
        p = f"audio_tower.conv2d{i}"
        y = B.conv2d_gelu(y, params[f"{p}.weight"], params[f"{p}.bias"], stride=2, padding=1)
    return B.merge_heads(B.transpose(y, (0, 1, 3, 2)))  # (n, C, F, T) -> (n, T, C * F)


def _encoder_layer(params, cfg, B, x, windows, i):
    """x (N, d): an encoder layer on the packed tokens (window order); attention runs on each run of
    equal windows as a (windows, length, d) view."""
    a, p = cfg.audio, f"audio_tower.layers.{i}"
    d, n = a.d_model, a.encoder_attention_heads
    h = B.layer_norm(x, params[f"{p}.self_attn_layer_norm.weight"], params[f"{p}.self_attn_layer_norm.bias"])
    qkv = B.linear(h, params[f"{p}.self_attn.qkv.weight"], params[f"{p}.self_attn.qkv.bias"])
    outs = []
    for start, count, length in windows:
        q, k, v = B.split(qkv[start : start + count * length].reshape(count, length, 3 * d), [d] * 3)
        o = B.attention(B.split_heads(q, n), B.split_heads(k, n), B.split_heads(v, n))
        outs.append(B.merge_heads(o).reshape(count * length, d))
    o = outs[0] if len(outs) == 1 else B.concat(outs, axis=0)
    x = x + B.linear(o, params[f"{p}.self_attn.out_proj.weight"], params[f"{p}.self_attn.out_proj.bias"])
    h = B.layer_norm(x, params[f"{p}.final_layer_norm.weight"], params[f"{p}.final_layer_norm.bias"])
    h = B.gelu(B.linear(h, params[f"{p}.fc1.weight"], params[f"{p}.fc1.bias"]))
    return x + B.linear(h, params[f"{p}.fc2.weight"], params[f"{p}.fc2.bias"])


def encode(params, cfg, B, mel, frames):
    """mel (B, n_mels, T) log-mel, zero past each item's `frames` -> (audio embeddings (sum tokens, hidden),
    tokens per item): items' outputs packed in order, ready to replace the prompt's placeholders."""
    a = cfg.audio
    n_items, n_mels, t = mel.shape
    grid = -(-t // a.chunk_frames)
    plan = plan_encoder(frames, cfg, grid)
    if plan.chunks.size == 0:
        return B.zeros((0, a.output_dim)), plan.tokens
    mel = B.pad_last(mel, grid * a.chunk_frames - t)
    # (B, n_mels, grid, chunk) -> (B * grid, 1, n_mels, chunk): one image per chunk
    chunks = B.transpose(mel.reshape(n_items, n_mels, grid, a.chunk_frames), (0, 2, 1, 3))
    chunks = chunks.reshape(n_items * grid, 1, n_mels, a.chunk_frames)[B.asarray(plan.chunks)]
    x = _conv_stem(params, cfg, B, chunks) + params["audio_tower.positions"]
    x = x.reshape(-1, a.d_model)  # (N, d): kept tokens, packed in window order
    if plan.tokens_rows is not None:
        x = x[B.asarray(plan.tokens_rows)]
    for i in range(a.encoder_layers):
        x = _encoder_layer(params, cfg, B, x, plan.windows, i)
    if plan.restore is not None:
        x = x[B.asarray(plan.restore)]
    x = B.layer_norm(x, params["audio_tower.ln_post.weight"], params["audio_tower.ln_post.bias"])
    x = B.gelu(B.linear(x, params["audio_tower.proj1.weight"], params["audio_tower.proj1.bias"]))
    return B.linear(x, params["audio_tower.proj2.weight"], params["audio_tower.proj2.bias"]), plan.tokens


# ---- decoder ---------------------------------------------------------------------------------------
@dataclass
class KVCache:
    """Preallocated per-layer keys/values (B, Hkv, max_len, D) indexed by slot, gpt-fast style.

    Prompts are left-padded: row b's real tokens start at slot `pad[b]`, and its RoPE position is
    slot - pad[b], so a row computes what it would compute alone. `keys_ok` (B, max_len) masks
    the padded slots; `length` is how many slots are filled.
    """

    k: list
    v: list
    pad: np.ndarray
    keys_ok: object
    cos: object
    sin: object
    length: int = 0


def new_cache(cfg, B, pad, max_len: int) -> KVCache:
    """An empty cache for len(pad) rows of up to `max_len` slots; pad = left padding per row."""
    t = cfg.text
    shape = (len(pad), t.num_key_value_heads, max_len, t.head_dim)
    cos, sin = B.rope_tables(max_len, t.head_dim, t.rope_theta)
    keys_ok = B.asarray(np.arange(max_len)[None, :] >= np.asarray(pad)[:, None])
    return KVCache(
        [B.zeros(shape) for _ in range(t.num_hidden_layers)],
        [B.zeros(shape) for _ in range(t.num_hidden_layers)],
        np.asarray(pad),
        keys_ok,
        cos,
        sin,
    )


def _positions(cache: KVCache, B, start: int, n: int):
    """RoPE cos/sin (B, 1, n, D) and the attention mask (B, 1, n, start + n) for slots start..start+n."""
    slots = np.arange(start, start + n)
    pos = B.asarray(np.maximum(slots[None, :] - cache.pad[:, None], 0))
    cos, sin = B.embedding(pos, cache.cos)[:, None], B.embedding(pos, cache.sin)[:, None]
    causal = np.arange(start + n)[None, :] <= slots[:, None]  # (n, start + n)
    own = np.arange(start + n)[None, :] == slots[:, None]  # a padded slot sees itself: no empty softmax row
    mask = (cache.keys_ok[:, None, None, : start + n] & B.asarray(causal)) | B.asarray(own)
    return cos, sin, mask


def _decoder_layer(params, cfg, B, x, cache, rope, i):
    t, p = cfg.text, f"model.layers.{i}"
    nq, nkv, hd = t.num_attention_heads, t.num_key_value_heads, t.head_dim
    cos, sin, mask = rope
    h = B.rms_norm(x, params[f"{p}.input_layernorm.weight"], t.rms_norm_eps)
    q, k, v = B.split(
        B.linear(h, params[f"{p}.self_attn.qkv.weight"], params.get(f"{p}.self_attn.qkv.bias")),
        [nq * hd, nkv * hd, nkv * hd],
    )
    q = B.qk_norm_rope(B.split_heads(q, nq), params[f"{p}.self_attn.q_norm.weight"], cos, sin, t.rms_norm_eps)
    k = B.qk_norm_rope(B.split_heads(k, nkv), params[f"{p}.self_attn.k_norm.weight"], cos, sin, t.rms_norm_eps)
    start, end = cache.length, cache.length + x.shape[1]
    keys = B.cache_write(cache.k[i], k, start)[:, :, :end]
    values = B.cache_write(cache.v[i], B.split_heads(v, nkv), start)[:, :, :end]
    o = B.attention(q, keys, values, mask=mask)
    x = x + B.linear(B.merge_heads(o), params[f"{p}.self_attn.o_proj.weight"], params.get(f"{p}.self_attn.o_proj.bias"))
    h = B.rms_norm(x, params[f"{p}.post_attention_layernorm.weight"], t.rms_norm_eps)
    return x + B.linear(B.silu_mul(B.linear(h, params[f"{p}.mlp.gate_up.weight"])), params[f"{p}.mlp.down_proj.weight"])


def embed(params, B, ids):
    """ids (B, T) -> token embeddings (B, T, hidden)."""
    return B.embedding(ids, params["model.embed_tokens.weight"])


def decode(params, cfg, B, x, cache: KVCache):
    """x (B, T, hidden) embeddings of the slots after the cache's `length` -> final-normed hidden
    states (B, T, hidden). Writes the new keys/values and advances `cache.length` by T."""
    start, n = cache.length, x.shape[1]
    if start + n > cache.k[0].shape[2]:
        raise ValueError(f"decoder cache overflow: {start + n} > {cache.k[0].shape[2]} slots")
    rope = _positions(cache, B, start, n)
    for i in range(cfg.text.num_hidden_layers):
        x = _decoder_layer(params, cfg, B, x, cache, rope, i)
    cache.length = start + n
    return B.rms_norm(x, params["model.norm.weight"], cfg.text.rms_norm_eps)


def logits(params, B, hidden):
    """hidden (B, T, hidden) -> logits (B, T, vocab)."""
    return B.linear(hidden, params["lm_head"])


def keep_rows(cache: KVCache, B, rows: list[int]) -> None:
    """Drop the cache rows not in `rows` (finished sequences), in place."""
    idx = B.asarray(np.asarray(rows, dtype=np.int64))
    cache.k = [k[idx] for k in cache.k]
    cache.v = [v[idx] for v in cache.v]
    cache.pad, cache.keys_ok = cache.pad[rows], cache.keys_ok[idx]
