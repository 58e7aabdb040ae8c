"""GigaAM v3 (Conformer + CTC, Russian): checkpoint readers, config, network and pipeline."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec


def _spec(model_id: str, vocabulary: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="gigaam",
        architecture=f"Conformer (RoPE MHSA, conv k=5) + CTC, {vocabulary}",
        languages="Russian",
        status=AVAILABLE,
        formats=("gigaam-ckpt", "hf-hub", "safetensors"),
        hub_repos=("ai-sage/GigaAM-v3",),
        language_codes=("ru",),
    )


FAMILY = Family(
    name="gigaam",
    specs=(_spec("gigaam-v3-ctc", "characters"), _spec("gigaam-v3-e2e-ctc", "SentencePiece with punctuation")),
    loader="polyasr.models.gigaam.pipeline:load_model",
    layout=CheckpointLayout(
        markers=(("*.ckpt",), ("config.json", "pytorch_model.bin"), ("config.json", "model.safetensors")),
        weights=("*.ckpt", "pytorch_model.bin", "*.safetensors"),
    ),
    converter="polyasr.models.gigaam.checkpoint:convert",
)
