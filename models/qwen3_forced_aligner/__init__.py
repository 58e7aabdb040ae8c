"""Qwen3-ForcedAligner (0.6B): Qwen3-ASR's audio encoder and Qwen3 decoder with a timestamp
classifier instead of the vocabulary head; aligns a given text to audio, word by word."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec

FAMILY = Family(
    name="qwen3_forced_aligner",
    specs=(
        ModelSpec(
            id="qwen3-forced-aligner-0.6b",
            family="qwen3_forced_aligner",
            architecture="AuT audio encoder + Qwen3 decoder + timestamp classifier (forced alignment)",
            languages="11 languages (ja/ko not yet)",
            status=AVAILABLE,
            formats=("qwen-safetensors", "hf-safetensors"),
            hub_repos=("Qwen/Qwen3-ForcedAligner-0.6B", "Qwen/Qwen3-ForcedAligner-0.6B-hf"),
            kind="aligner",
        ),
    ),
    loader="polyasr.models.qwen3_forced_aligner.pipeline:load_model",
    layout=CheckpointLayout(
        markers=(("config.json", "model.safetensors"), ("config.json", "model.safetensors.index.json")),
        weights=("*.safetensors", "model.safetensors.index.json"),
    ),
)
