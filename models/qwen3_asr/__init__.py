"""Qwen3-ASR (0.6B, 1.7B): AuT audio encoder + projector + Qwen3 decoder. See README.md."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec


def _spec(size: str, hub: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        id=f"qwen3-asr-{size}",
        family="qwen3_asr",
        architecture="AuT audio encoder + projector + Qwen3 LLM decoder",
        languages="30 languages",
        status=AVAILABLE,
        formats=("qwen-safetensors", "hf-safetensors"),
        hub_repos=hub,
        # None: the checkpoint's config lists them (`support_languages`).
    )


FAMILY = Family(
    name="qwen3_asr",
    specs=(_spec("0.6b", ("Qwen/Qwen3-ASR-0.6B",)), _spec("1.7b", ("Qwen/Qwen3-ASR-1.7B", "Qwen/Qwen3-ASR-1.7B-hf"))),
    loader="polyasr.models.qwen3_asr.pipeline:load_model",
    layout=CheckpointLayout(
        markers=(("config.json", "model.safetensors"), ("config.json", "model.safetensors.index.json")),
        weights=("*.safetensors", "model.safetensors.index.json"),
    ),
)
