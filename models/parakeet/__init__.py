"""Parakeet TDT 0.6B (FastConformer + TDT): .nemo / converted / HF checkpoints, network, decoding loop."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec

# The model card's list for v3; v2 is English only.
_V3_LANGUAGES = (
    "bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "hr", "hu", "it",
    "lt", "lv", "mt", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sv", "uk",
)  # fmt: skip


def _spec(version: str, languages: str, codes: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        id=f"parakeet-tdt-{version}",
        family="parakeet",
        architecture="FastConformer (rel-pos MHSA, 8x dw-striding) + TDT",
        languages=languages,
        status=AVAILABLE,
        formats=("nemo", "hf-safetensors"),
        hub_repos=(f"nvidia/parakeet-tdt-0.6b-{version}",),
        language_codes=codes,
    )


FAMILY = Family(
    name="parakeet",
    specs=(_spec("v3", "25 European languages", _V3_LANGUAGES), _spec("v2", "English", ("en",))),
    loader="polyasr.models.parakeet.pipeline:load_model",
    layout=CheckpointLayout(
        markers=(("*.nemo",), ("config.json", "model.safetensors"), ("config.json", "model.safetensors.index.json")),
        weights=("*.nemo",),
    ),
    converter="polyasr.models.parakeet.checkpoint:convert",
    aliases=(("parakeet-tdt-0.6b-v3", "parakeet-tdt-v3"), ("parakeet-tdt-0.6b-v2", "parakeet-tdt-v2")),
)
