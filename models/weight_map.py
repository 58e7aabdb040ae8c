"""Checkpoint names -> our canonical parameter names, one table per checkpoint format.

A table maps a source pattern to a target pattern (`{}` = a layer index, `None` = drop the
tensor on purpose). Fusions are declared beside it: a target built by concatenating several
source tensors on axis 0, where `None` stands for a zero block (a projection without bias).
After mapping, every expected parameter must be present with its exact shape and every source
tensor must have been consumed; anything else is a `WeightsMismatchError` that names the tensors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from polyasr.errors import WeightsMismatchError


@dataclass(frozen=True)
class WeightMap:
    rename: dict[str, str | None]
    fuse: dict[str, tuple[str | None, ...]] = field(default_factory=dict)


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


def _match(name: str, compiled) -> tuple[str, tuple[str, ...]] | None:
    for template, rx in compiled:
        m = rx.match(name)
        if m:
            return template, m.groups()
    return None


def _fill(template: str, groups: tuple[str, ...]) -> str:
    return template.format(*groups)


def _fuse(target: str, sources, tensors, dtypes, consumed, expected_shape):
    """Concatenate the sources of one fused target; None parts become zeros of the missing rows."""
    parts = [tensors[s] if s is not None and s in tensors else None for s in sources]
    for s in sources:
        if s is not None and s not in tensors:
            raise WeightsMismatchError(f"missing tensor {s!r} (needed to build {target!r})")
    known = [p for p in parts if p is not None]
    rows = (expected_shape[0] - sum(p.shape[0] for p in known)) if expected_shape else 0
    n_zero = sum(p is None for p in parts)
    if n_zero and (rows <= 0 or rows % n_zero):
        raise WeightsMismatchError(f"cannot size the zero block of fused {target!r}")
    like = known[0]
    blocks = [p if p is not None else np.zeros((rows // n_zero, *like.shape[1:]), like.dtype) for p in parts]
    consumed.update(s for s in sources if s is not None)
    tag = dtypes.get(next(s for s in sources if s is not None))
    return np.concatenate(blocks, axis=0), tag


def apply_weight_map(
    tensors: dict[str, np.ndarray],
    dtypes: dict[str, str],
    wm: WeightMap,
    expected: dict[str, tuple[int, ...]],
    source: str,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Rename/fuse `tensors` by `wm` and check them against `expected` shapes.

    tensors: source name -> host array; dtypes: source name -> dtype tag ("bfloat16" for raw bf16 bits).
    Returns (params, param_dtypes) keyed by canonical names. Raises WeightsMismatchError naming
    missing, unexpected and mis-shaped tensors (all of them at once, so one run shows every problem).
    """
    compiled = [(t, _pattern(t)) for t in wm.rename]
    if in_canonical_names(tensors, wm, expected):  # already in our names (a quantised checkpoint)
        _check({k: tensors[k] for k in expected}, expected, [], source, wm)
        return {k: tensors[k] for k in expected}, {k: dtypes.get(k) for k in expected}
    params, tags, consumed, dropped = {}, {}, set(), []
    layer_counts = _layer_indices(expected)
    for target_t, source_ts in wm.fuse.items():
        for groups in layer_counts.get(target_t, [()]):
            target = _fill(target_t, groups)
            sources = tuple(_fill(s, groups) if s is not None else None for s in source_ts)
            params[target], tags[target] = _fuse(target, sources, tensors, dtypes, consumed, expected.get(target))
    unexpected = []
    for name, arr in tensors.items():
        if name in consumed:
            continue
        hit = _match(name, compiled)
        if hit is None:
            unexpected.append(name)
            continue
        target_t = wm.rename[hit[0]]
        if target_t is None:
            dropped.append(name)
        else:
            target = _fill(target_t, hit[1])
            params[target], tags[target] = arr, dtypes.get(name)
    _check(params, expected, unexpected, source, wm)
    for record in RECORDERS:  # `polyasr convert --quantize` sees the canonical parameters a loader made
        record(params, tags, {k: (tensors[k], dtypes.get(k)) for k in dropped})
    return params, tags


# Callbacks (params, tags, dropped source tensors) for every mapped checkpoint: models/quantized_checkpoint.py
RECORDERS: list = []


def in_canonical_names(tensors, wm: WeightMap, expected) -> bool:
    """Whether a checkpoint is `polyasr convert --quantize` output, which is in canonical names: it
    holds quantised weights, every expected name is present, and anything else is a tensor the table
    drops on purpose (a frontend buffer the family reads beside the map). Names alone would not do:
    a source layout can share canonical names (Parakeet's joint output with dropout) and must
    still be checked against its own table."""
    from polyasr.backends.quant_layout import QuantizedArray

    if not set(expected) <= set(tensors) or not expected:
        return False
    if not any(isinstance(tensors[k], QuantizedArray) for k in expected):
        return False
    compiled = [(t, _pattern(t)) for t in wm.rename]
    for name in set(tensors) - set(expected):
        hit = _match(name, compiled)
        if hit is None or wm.rename[hit[0]] is not None:
            return False
    return True


def _layer_indices(expected: dict[str, tuple]) -> dict[str, list[tuple[str, ...]]]:
    """For every expected name with digits, the template it comes from -> index tuples seen."""
    out: dict[str, list] = {}
    for name in expected:
        groups = tuple(re.findall(r"(?<=\.)\d+(?=\.)", name))
        template = re.sub(r"(?<=\.)\d+(?=\.)", "{}", name)
        out.setdefault(template, []).append(groups)
    return out


def _source_name(target: str, wm: WeightMap) -> str:
    """The checkpoint name a missing parameter would have had (users know their checkpoint's names)."""
    for source_t, target_t in wm.rename.items():
        if target_t is not None:
            m = _pattern(target_t).match(target)
            if m:
                return f"{_fill(source_t, m.groups())} (-> {target})"
    return target


def _check(params, expected, unexpected, source, wm):
    missing = sorted(_source_name(k, wm) for k in set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    bad = sorted(
        f"{k}: checkpoint {tuple(params[k].shape)} != model {tuple(expected[k])}"
        for k in set(params) & set(expected)
        if tuple(params[k].shape) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_short(missing)}")
    if unexpected or extra:
        problems.append(f"unexpected {len(unexpected) + len(extra)} tensor(s): {_short(sorted(unexpected + extra))}")
    if bad:
        problems.append(f"shape mismatch: {_short(bad)}")
    if problems:
        raise WeightsMismatchError(f"{source}: " + "; ".join(problems))


def _short(items: list[str], n: int = 6) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def host_float32(arr: np.ndarray, dtype_tag: str | None) -> np.ndarray:
    """A checkpoint array as float32 on the host; "bfloat16" marks raw uint16 bf16 bits."""
    if dtype_tag == "bfloat16":
        return (np.asarray(arr, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)


_BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default; neither GigaAM nor NeMo changes it


def fold_batch_norm(params: dict, tags: dict, conv_modules: list[str]) -> tuple[dict, dict]:
    """Fold each Conformer conv module's eval-mode BatchNorm into its depthwise conv (host, fp32):
    w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta (b = 0 when the conv
    has no bias). conv_modules: the modules' name prefixes (`<prefix>.batch_norm.*`,
    `<prefix>.depthwise_conv.*`)."""
    params, tags = dict(params), dict(tags)
    for c in conv_modules:
        f32 = {
            n: host_float32(params.pop(f"{c}.batch_norm.{n}"), tags.pop(f"{c}.batch_norm.{n}", None))
            for n in ("weight", "bias", "running_mean", "running_var")
        }
        scale = f32["weight"] / np.sqrt(f32["running_var"] + _BN_EPS)
        w = host_float32(params[f"{c}.depthwise_conv.weight"], tags.get(f"{c}.depthwise_conv.weight"))
        bias = f"{c}.depthwise_conv.bias"
        b = host_float32(params[bias], tags.get(bias)) if bias in params else np.zeros_like(scale)
        params[f"{c}.depthwise_conv.weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        params[bias] = (b - f32["running_mean"]) * scale + f32["bias"]
        tags[f"{c}.depthwise_conv.weight"] = tags[bias] = "float32"
    return params, tags
