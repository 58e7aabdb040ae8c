"""TDT (token-and-duration transducer) greedy decoding over a batch, by the compiled `polyasr._decode`
extension: the label-looping loop of NeMo's greedy TDT decoder and transformers' ParakeetForTDT.

Per item, with the predictor (embedding, L-layer LSTM, the joint's prediction linear) started from zero
state fed the blank row, and frame t = 0:

    logits = out_w @ relu(enc_proj[t] + pred_w @ g + pred_b) + out_b      # (V1 + D,)
    k = argmax(logits[:V1]);  d = durations[argmax(logits[V1:])]
    blank:  t += max(d, 1)                              (the predictor state is kept)
    token:  emit (k, t, d, softmax(logits[:V1])[k]); feed k to the predictor; t += d, where d = 0
            keeps t unless that is the max_symbols-th token in a row at t (then t += 1)

until t >= lengths[b]. Inputs are taken without copies when they are C-contiguous CPU arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from polyasr import _decode


class TdtHyp(NamedTuple):
    """One item's emissions (views into the batch's flat arrays): token ids, the frame each was
    emitted at, its predicted duration in frames, and its token probability."""

    tokens: np.ndarray  # (N,) int32
    frames: np.ndarray  # (N,) int32
    durations: np.ndarray  # (N,) int32
    confidences: np.ndarray  # (N,) float32


def _array(name: str, x, ndim: int) -> np.ndarray:
    """A float32 array of rank ndim, without a copy when it is already C-contiguous on the CPU."""
    if hasattr(x, "detach"):  # a torch tensor that requires grad cannot be exported by DLPack
        x = x.detach()
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = np.from_dlpack(x)
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D float32 array, got {x.ndim}-D {x.dtype}")
    return np.ascontiguousarray(x)


def _ints(name: str, x) -> np.ndarray:
    """A 1-D int64 array from any integer sequence (small: a copy costs nothing)."""
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer) or x.size == 0):
        raise ValueError(f"{name} must be a 1-D integer array, got {x.ndim}-D {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.int64)


def _check_shapes(a: dict[str, np.ndarray]) -> None:
    """The shapes implied by enc_proj (B, T, J), embed (V1, P), w_ih's L and durations' D."""
    (B, T, J), (V1, P), L, D = a["enc_proj"].shape, a["embed"].shape, a["w_ih"].shape[0], a["durations"].shape[0]
    if D == 0:
        raise ValueError("durations must not be empty")
    expected = {
        "lengths": (B,),
        "w_ih": (L, 4 * P, P),
        "w_hh": (L, 4 * P, P),
        "bias": (L, 4 * P),
        "pred_w": (J, P),
        "pred_b": (J,),
        "out_w": (V1 + D, J),
        "out_b": (V1 + D,),
    }
    for name, shape in expected.items():
        if a[name].shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a[name].shape}")
    if (a["durations"] < 0).any():
        raise ValueError(f"durations must be >= 0, got {a['durations'].tolist()}")
    if ((a["lengths"] < 0) | (a["lengths"] > T)).any():
        raise ValueError(f"lengths must lie in [0, {T}] frames, got {a['lengths'].tolist()}")


def tdt_greedy(
    enc_proj,
    lengths,
    embed,
    w_ih,
    w_hh,
    bias,
    pred_w,
    pred_b,
    out_w,
    out_b,
    durations,
    blank: int,
    max_symbols: int = 10,
    threads: int = 1,
) -> list[TdtHyp]:
    """Greedy TDT decoding of a batch (see the module docstring for the loop).

    enc_proj: (B, T, J) float32, the encoder output through the joint's encoder linear (bias included).
    lengths: (B,) integer valid frames per item; None means all T.
    embed: (V1, P) float32 predictor embedding, V1 = tokens incl. blank.
    w_ih, w_hh: (L, 4P, P) float32 LSTM weights, torch gate order i, f, g, o; bias: (L, 4P) = b_ih + b_hh.
    pred_w: (J, P), pred_b: (J,) float32, the joint's prediction linear.
    out_w: (V1 + D, J), out_b: (V1 + D,) float32, the joint's output layer (tokens, then durations).
    durations: (D,) integer duration values in frames, each >= 0.
    blank: the blank id in [0, V1); max_symbols >= 1: tokens in a row at one frame before it is left.
    threads: items are split over this many threads (0: one per core); results do not depend on it.
    Raises ValueError naming the argument for a wrong dtype, rank or shape, or a value out of range.
    """
    arrays = {
        "enc_proj": enc_proj,
        "embed": embed,
        "w_ih": w_ih,
        "w_hh": w_hh,
        "bias": bias,
        "pred_w": pred_w,
        "pred_b": pred_b,
        "out_w": out_w,
        "out_b": out_b,
    }
    ranks = {
        "enc_proj": 3,
        "embed": 2,
        "w_ih": 3,
        "w_hh": 3,
        "bias": 2,
        "pred_w": 2,
        "pred_b": 1,
        "out_w": 2,
        "out_b": 1,
    }
    a = {name: _array(name, x, ranks[name]) for name, x in arrays.items()}
    a["lengths"] = _ints(
        "lengths", np.full(a["enc_proj"].shape[0], a["enc_proj"].shape[1]) if lengths is None else lengths
    )
    a["durations"] = _ints("durations", durations)
    _check_shapes(a)
    if not 0 <= blank < a["embed"].shape[0]:
        raise ValueError(f"blank {blank} is outside the tokens [0, {a['embed'].shape[0]}) of embed")
    if max_symbols < 1:
        raise ValueError(f"max_symbols must be >= 1, got {max_symbols}")
    tokens, frames, durs, confs, offsets = _decode.tdt_greedy(
        a["enc_proj"],
        a["lengths"],
        a["embed"],
        a["w_ih"],
        a["w_hh"],
        a["bias"],
        a["pred_w"],
        a["pred_b"],
        a["out_w"],
        a["out_b"],
        a["durations"],
        int(blank),
        int(max_symbols),
        int(threads),
    )
    return [TdtHyp(tokens[i:j], frames[i:j], durs[i:j], confs[i:j]) for i, j in zip(offsets[:-1], offsets[1:])]
