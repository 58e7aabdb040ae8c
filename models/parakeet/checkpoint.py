"""The Parakeet checkpoint layouts users have, read into (config, tensors, tokenizer).

* a NeMo `.nemo` archive (the release format), given as the file or a directory holding one;
* a transformers directory: `config.json` (model_type parakeet_tdt), `model.safetensors`
  (or shards, or `pytorch_model.bin`), `preprocessor_config.json`, `tokenizer.json`;
* what `polyasr convert` makes of a `.nemo`: a directory with the archive's `model_config.yaml`,
  its weights as `model.safetensors` (NeMo's names, dtypes kept) and `tokenizer.model`. It loads
  without torch (the `.nemo`'s weights are a torch pickle), which the MLX path needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_config, read_safetensors_dir, read_torch_weights, write_safetensors
from polyasr.models.parakeet.config import ParakeetConfig
from polyasr.models.parakeet.tokenizer import ParakeetTokenizer
from polyasr.models.parakeet.weights import HF_MAP, nemo_weight_map
from polyasr.models.weight_map import WeightMap


@dataclass
class ParakeetCheckpoint:
    format: str  # "nemo" | "nemo-safetensors" | "hf-safetensors" | "hf-pytorch-bin"
    cfg: ParakeetConfig
    tensors: dict[str, np.ndarray]
    dtypes: dict[str, str]
    tokenizer: ParakeetTokenizer
    weight_map: WeightMap
    source: str


def read_parakeet_checkpoint(path: str | Path) -> ParakeetCheckpoint:
    path = Path(path)
    if path.is_dir():
        nemo = sorted(path.glob("*.nemo"))
        if (path / "config.json").is_file():
            return _read_hf(path)
        if (path / CONVERTED_CONFIG).is_file():
            return _read_converted(path)
        if len(nemo) == 1:
            return _read_nemo(nemo[0])
        if len(nemo) > 1:
            raise CheckpointError(
                f"{path}: holds several .nemo archives ({', '.join(p.name for p in nemo)}); "
                "pass the one to load as --model-path"
            )
        raise CheckpointError(
            f"{path}: no Parakeet checkpoint here (expected a .nemo archive, a transformers "
            "directory with config.json and model.safetensors, or a `polyasr convert` output)"
        )
    if path.suffix == ".nemo" or path.is_file():
        return _read_nemo(path)
    raise CheckpointError(f"{path}: not a Parakeet checkpoint file or directory")


def _read_nemo(archive: Path) -> ParakeetCheckpoint:
    from polyasr.models.parakeet.nemo_archive import read_nemo

    contents = read_nemo(archive)
    try:
        cfg = ParakeetConfig.from_nemo(contents.config)
        tensors, dtypes = read_torch_weights(contents.weights_path)
    finally:
        # The weights are memory-mapped: on POSIX the mapping outlives the file, so the temporary
        # copy is removed now; where it cannot be (Windows), the directory goes at exit.
        try:
            contents.workdir.cleanup()
        except OSError:
            pass
    tokenizer = ParakeetTokenizer(cfg.vocab_size, sentencepiece_model=contents.tokenizer_model, source=str(archive))
    return ParakeetCheckpoint("nemo", cfg, tensors, dtypes, tokenizer, nemo_weight_map(cfg), str(archive))


CONVERTED_CONFIG = "model_config.yaml"


def write_converted(archive: str | Path, out_dir: str | Path) -> tuple[Path, int]:
    """A `.nemo` archive -> `out_dir` with model_config.yaml, model.safetensors and tokenizer.model (see
    the module docstring); returns the directory and the tensor count. The archive is read as for
    loading (members checked, weights by `torch.load(weights_only=True)`)."""
    import yaml

    from polyasr.models.parakeet.nemo_archive import read_nemo

    contents = read_nemo(archive)
    try:
        ParakeetConfig.from_nemo(contents.config)  # refuse what polyasr cannot run before writing anything
        tensors, dtypes = read_torch_weights(contents.weights_path)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_safetensors(
            tensors, dtypes, out / "model.safetensors", {"source_format": "nemo", "source": Path(archive).name}
        )
    finally:
        try:
            contents.workdir.cleanup()
        except OSError:
            pass
    config = yaml.safe_dump(contents.config, allow_unicode=True, sort_keys=False)
    (out / CONVERTED_CONFIG).write_text(config, encoding="utf-8")
    if contents.tokenizer_model is not None:
        (out / "tokenizer.model").write_bytes(contents.tokenizer_model)
    return out, len(tensors)


def convert(spec, src: Path, out: Path) -> str:
    """`polyasr convert`: a .nemo archive (or a directory holding one) -> model.safetensors +
    model_config.yaml + tokenizer.model in `out`, loadable without torch. Returns the line the CLI prints."""
    archive = src if src.is_file() else next(iter(sorted(src.glob("*.nemo"))), src)
    _, count = write_converted(archive, out)
    return f"{archive} (nemo, {count} tensors) -> {out}"


def _read_converted(directory: Path) -> ParakeetCheckpoint:

    config = read_config(directory / CONVERTED_CONFIG)
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(
            f"{directory}: {CONVERTED_CONFIG} but no model.safetensors (a `polyasr convert` output holds both)"
        )
    cfg = ParakeetConfig.from_nemo(config)
    tensors, dtypes = read_safetensors_dir(directory)
    sp = directory / "tokenizer.model"
    tokenizer = ParakeetTokenizer(
        cfg.vocab_size, sentencepiece_model=sp.read_bytes() if sp.is_file() else None, source=str(directory)
    )
    return ParakeetCheckpoint("nemo-safetensors", cfg, tensors, dtypes, tokenizer, nemo_weight_map(cfg), str(directory))


def _read_hf(directory: Path) -> ParakeetCheckpoint:
    config = read_config(directory / "config.json")
    pre_path = directory / "preprocessor_config.json"
    pre = read_config(pre_path) if pre_path.is_file() else {}
    pre = pre.get("feature_extractor", pre)  # a processor_config.json nests it
    cfg = ParakeetConfig.from_hf(config, pre)
    if (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file():
        tensors, dtypes = read_safetensors_dir(directory)
        fmt = "hf-safetensors"
    elif (directory / "pytorch_model.bin").is_file():
        tensors, dtypes = read_torch_weights(directory / "pytorch_model.bin")
        fmt = "hf-pytorch-bin"
    else:
        raise CheckpointError(f"{directory}: config.json but no model.safetensors / pytorch_model.bin")
    tok = directory / "tokenizer.json"
    tokenizer = ParakeetTokenizer(cfg.vocab_size, tokenizer_json=tok if tok.is_file() else None, source=str(directory))
    return ParakeetCheckpoint(fmt, cfg, tensors, dtypes, tokenizer, HF_MAP, str(directory))
