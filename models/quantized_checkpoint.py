"""Quantised checkpoints: what `polyasr convert --quantize 8|4` writes, and how torch and MLX read it.

Layout: a directory holding the family's own small files (config, tokenizer; for Whisper from a
CTranslate2 directory, a transformers-style `config.json`) and one `model.safetensors` whose tensors
carry the family's canonical parameter names (what its weight table maps a checkpoint to, before
the backend prepares them), so `apply_weight_map` reads it by identity. A quantised linear weight
`<name>` (out_features x in_features) is three tensors:

    <name>.qweight  uint8   8 bits: (out, in), one value a byte; 4 bits: (out, in / 2), column 2j
                            in the low nibble of byte j, 2j + 1 in the high nibble
    <name>.scales   float32 (out, in / group_size)
    <name>.biases   float32 (out, in / group_size)      w[o, i] = q[o, i] * scales[o, i // g] + biases[o, i // g]

with unsigned q (0..255, 0..15): MLX's affine convention, so MLX multiplies by it as it is (repacked
into its uint32 words). torch's 8-bit scheme (symmetric, one scale per output channel) is stored as
q + 128 with every group of a row sharing the scale and bias = -128 * scale. The safetensors
metadata key `polyasr.quantization` holds JSON: {"format": 1, "bits", "group_size", "scheme",
"model": id, "quantized": [names], "full_precision": [linear weights left in full precision]}.
Every other tensor is stored as the source had it, and so are the small source tensors (<= 1 MiB) the
family's weight table drops but reads beside it (GigaAM's STFT window and mel bank), under their names.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from polyasr.backends.quant_layout import QuantizedArray, quantize_host
from polyasr.errors import CheckpointError

META_KEY = "polyasr.quantization"
FORMAT = 1
SUFFIXES = (".qweight", ".scales", ".biases")


def read_metadata(path: str | Path) -> dict | None:
    """The `polyasr.quantization` metadata of `<dir>/model.safetensors` (or of that file), else None."""
    path = Path(path)
    f = path / "model.safetensors" if path.is_dir() else path
    if f.suffix != ".safetensors" or not f.is_file():
        return None
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(min(n, 100_000_000)))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    meta = (header.get("__metadata__") or {}).get(META_KEY)
    if meta is None:
        return None
    try:
        meta = json.loads(meta)
        bits, group = int(meta["bits"]), int(meta["group_size"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{f}: corrupt {META_KEY} metadata ({e})") from e
    if meta.get("format") != FORMAT or bits not in (4, 8):
        raise CheckpointError(f"{f}: quantised format {meta.get('format')} at {bits} bits is not one polyasr reads")
    return {**meta, "bits": bits, "group_size": group}


def group_quantized(arrays: dict, tags: dict, meta: dict, source: str) -> tuple[dict, dict]:
    """Arrays read from a quantised file -> the same with each `<name>.qweight/.scales/.biases` triple
    replaced by one QuantizedArray `<name>`; a part without its siblings is an error naming it."""
    out, out_tags = {}, {}
    bits, group = meta["bits"], meta["group_size"]
    for name, arr in arrays.items():
        if not name.endswith(SUFFIXES):
            out[name], out_tags[name] = arr, tags.get(name)
            continue
        base = name.rsplit(".", 1)[0]
        if base in out:
            continue
        parts = [f"{base}{s}" for s in SUFFIXES]
        missing = [p for p in parts if p not in arrays]
        if missing:
            raise CheckpointError(f"{source}: quantised tensor {base!r} lacks {', '.join(missing)}")
        bad = [p for p in parts[1:] if tags.get(p) == "bfloat16"]
        if bad:
            raise CheckpointError(f"{source}: {bad[0]} must be float32 or float16")
        out[base] = QuantizedArray(base, *(arrays[p] for p in parts), bits, group)
        out_tags[base] = "float32"
    return out, out_tags


# ---- writing (`polyasr convert --quantize`) ---------------------------------------------------------------
_KEEP_DROPPED_BYTES = 1 << 20
_WEIGHT_FILES = (".safetensors", ".bin", ".ckpt", ".nemo", ".pt", ".pth")


def write_quantized(spec, source: Path, out: Path, bits: int, group_size: int) -> dict:
    """Load `source` (any checkpoint the family reads) once in fp32 on the CPU, quantise the linear
    weights the torch backend would quantise on load, and write the layout above into `out` (created).
    Returns the metadata written."""
    import dataclasses
    import gc
    import shutil

    import torch

    from polyasr.backends import torch_quant
    from polyasr.models import weight_map
    from polyasr.models.checkpoint_io import write_safetensors
    from polyasr.registry import loader_for

    quantizer = torch_quant.Quantizer(bits, group_size, torch.device("cpu"), torch.float32)
    canonical, dropped = {}, {}

    def record(params, tags, extra):
        canonical.update({k: (v, tags.get(k)) for k, v in params.items()})
        dropped.update(extra)

    probe = _Probe()
    weight_map.RECORDERS.append(record)
    try:
        model = loader_for(spec)(spec, source, probe)
    finally:
        weight_map.RECORDERS.pop()
    by_id = {id(arr): name for name, (arr, _) in canonical.items()}
    linears = {by_id[probe.host[i]]: ref for i, ref in probe.prepared.items() if probe.host.get(i) in by_id}
    del probe
    gc.collect()
    # a weight also used as it is (Whisper's token embedding: lookup table and output projection) stays
    # full precision: the raw tensor is still alive after loading only if the model kept it
    quantised = sorted(n for n, ref in linears.items() if ref() is None and quantizer.selects(_host(canonical[n])))
    kept = sorted(set(linears) - set(quantised))
    tensors, dtypes = {}, {}
    # dropped source tensors a family reads beside its table are small frontend buffers (GigaAM's window and
    # mel bank); large ones are duplicates a table drops on purpose. Only a safetensors source is read back
    # with the same table (a CTranslate2 directory comes back in the transformers layout), so only its count.
    src_dir = source if source.is_dir() else source.parent
    same_table = (src_dir / "model.safetensors").is_file() or (src_dir / "model.safetensors.index.json").is_file()
    small = {k: v for k, v in dropped.items() if same_table and np.asarray(v[0]).nbytes <= _KEEP_DROPPED_BYTES}
    for name, (arr, tag) in {**small, **canonical}.items():
        if name not in quantised:
            tensors[name], dtypes[name] = np.asarray(arr), tag or np.asarray(arr).dtype.name
            continue
        qa = quantize_host(_host(canonical[name]).numpy(), bits, group_size, name)
        for part, value in zip(SUFFIXES, (qa.qweight, qa.scales, qa.biases), strict=True):
            tensors[name + part], dtypes[name + part] = value, value.dtype.name
    meta = {
        "format": FORMAT,
        "bits": bits,
        "group_size": group_size,
        "scheme": torch_quant.label(bits, group_size),
        "model": spec.id,
        "quantized": quantised,
        "full_precision": kept,
    }
    out.mkdir(parents=True, exist_ok=True)
    for f in src_dir.iterdir():
        if f.is_file() and not f.name.endswith(_WEIGHT_FILES) and not f.name.endswith(".index.json"):
            shutil.copy(f, out / f.name)
    if model.format == "ctranslate2":  # read back in the transformers layout, which reads our names
        cfg = {"model_type": "whisper", **dataclasses.asdict(model.cfg)}
        (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    write_safetensors(tensors, dtypes, out / "model.safetensors", {META_KEY: json.dumps(meta)})
    del model
    return meta


def _host(entry) -> torch.Tensor:  # noqa: F821
    import torch

    from polyasr.models.weight_map import host_float32

    arr, tag = entry
    return torch.from_numpy(np.ascontiguousarray(host_float32(arr, tag)))


class _Probe:
    """A CPU fp32 torch backend that remembers which parameter tensors went into `prepare_linear`."""

    def __new__(cls):
        import weakref

        from polyasr.backends.torch import TorchBackend

        class Probe(TorchBackend):
            def __init__(self):
                super().__init__("cpu", "float32", "torch")
                self.host, self.prepared = {}, {}  # id(param tensor) -> id(host array); -> weakref to it

            def param(self, x, dtype_name=None):
                t = super().param(x, dtype_name)
                self.host[id(t)] = id(x)
                return t

            def prepare_linear(self, w, many_rows=False):
                if id(w) in self.host:
                    self.prepared[id(w)] = weakref.ref(w)
                return super().prepare_linear(w, many_rows)

        return Probe()
