"""Pieces every family's network uses, on backend ops, and the one load-time `prepare`.

`param_shapes(cfg)` of each family returns a `ParamShapes`: every parameter with its shape (what
checkpoints are checked against, as a plain dict) and, for the weights the backend wants in
another layout, which kind of layer they belong to. `prepare` turns those, once at load time:

    linear     (out, in)        -> B.prepare_linear (the backend's matmul layout, maybe quantised)
    seq_linear (out, in)        -> the same, `many_rows=True`: it only multiplies whole sequences
                                   (encoder layers), which a backend may lay out for large GEMMs;
                                   `many_rows=` the count in `shapes.rows` where the family fixes
                                   every call's rows (Whisper's encoder windows)
    conv1x1    (out, in, 1)     -> B.prepare_linear of (out, in), many rows: a 1x1 conv is a linear
                                   per frame
    depthwise  (C, 1, K)        -> (C, K) contiguous, what `glu_dwconv_silu` takes
    conv2d     (out, in, kh, kw) -> B.prepare_conv2d: same shape, the backend's memory layout
    per_head   (H, D)           -> (H, 1, D) contiguous, broadcast over the time axis

Everything else (norms, biases, embeddings, the other conv stems) stays as the checkpoint has it.
"""

from __future__ import annotations

PREPARE = {
    "linear": lambda B, w: B.prepare_linear(w),
    "seq_linear": lambda B, w: B.prepare_linear(w, many_rows=True),
    "conv1x1": lambda B, w: B.prepare_linear(w[..., 0], many_rows=True),
    "depthwise": lambda B, w: B.contiguous(w[:, 0, :]),
    "conv2d": lambda B, w: B.prepare_conv2d(w),
    "per_head": lambda B, w: B.contiguous(w[:, None, :]),
}


class ParamShapes(dict):
    """name -> shape, plus `kinds`: name -> a `PREPARE` key for the weights `prepare` lays out,
    and `rows`: name -> the fewest rows a call multiplies, for the sequence weights that have one."""

    def __init__(self):
        super().__init__()
        self.kinds: dict[str, str] = {}
        self.rows: dict[str, int] = {}

    def linear(self, prefix: str, n_out: int, n_in: int, bias: bool = True, many_rows: bool | int = False) -> None:
        """`many_rows`: the layer multiplies whole sequences at every call (an encoder's), never a
        single decoder row; True, or the fewest rows a call multiplies where the family fixes it."""
        self._weight(prefix, (n_out, n_in), "seq_linear" if many_rows else "linear", bias)
        if many_rows and many_rows is not True:
            self.rows[f"{prefix}.weight"] = many_rows

    def conv1x1(self, prefix: str, n_out: int, n_in: int, bias: bool = True) -> None:
        self._weight(prefix, (n_out, n_in, 1), "conv1x1", bias)

    def conv2d(self, prefix: str, n_out: int, n_in: int, kernel: int, bias: bool = True) -> None:
        """A `conv2d_gelu` layer's (out, in, kernel, kernel) weight."""
        self._weight(prefix, (n_out, n_in, kernel, kernel), "conv2d", bias)

    def depthwise(self, prefix: str, channels: int, kernel: int, bias: bool = True) -> None:
        self._weight(prefix, (channels, 1, kernel), "depthwise", bias)

    def norm(self, prefix: str, d: int, bias: bool = True) -> None:
        self[f"{prefix}.weight"] = (d,)
        if bias:
            self[f"{prefix}.bias"] = (d,)

    def _weight(self, prefix: str, shape: tuple[int, ...], kind: str, bias: bool) -> None:
        self[f"{prefix}.weight"] = shape
        self.kinds[f"{prefix}.weight"] = kind
        if bias:
            self[f"{prefix}.bias"] = (shape[0],)


def prepare(params: dict, shapes: ParamShapes, B) -> dict:
    """Checkpoint parameters -> what the networks take: each weight `shapes.kinds` names laid out
    for the backend (see the module docstring); the rest unchanged. Names absent from `params`
    (a subset was passed) are skipped."""
    out = dict(params)
    for name, kind in shapes.kinds.items():
        if name not in params:
            continue
        rows = shapes.rows.get(name)  # a fixed row count is the one thing a kind key cannot carry
        out[name] = B.prepare_linear(params[name], many_rows=rows) if rows else PREPARE[kind](B, params[name])
    return out


def linear(params, B, x, prefix: str):
    """x (..., Cin) -> (..., Cout) with `<prefix>.weight` (backend layout) and `<prefix>.bias` if present."""
    return B.linear(x, params[f"{prefix}.weight"], params.get(f"{prefix}.bias"))


def layer_norm(params, B, x, prefix: str):
    return B.layer_norm(x, params[f"{prefix}.weight"], params[f"{prefix}.bias"])
