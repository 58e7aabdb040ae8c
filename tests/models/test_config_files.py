"""A malformed config or tokenizer file in a checkpoint directory is a CheckpointError naming the
file, for every family, never a parser's traceback.

Each family's small valid checkpoint is written once; then every JSON / YAML file in it is broken in
turn (truncated JSON, a YAML list where a mapping belongs) and the directory loaded the way users
load it. A file the loader does not read may stay broken; the ones it must read are listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from polyasr import AsrEngine
from polyasr.errors import CheckpointError


def _break_each(src: Path, tmp: Path, model_id: str) -> set[str]:
    """Break each config-like file of `src` in a copy and load it; the names whose breakage was refused."""
    refused = set()
    names = sorted(p.name for p in src.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
    assert names, f"{src} holds no config files"
    for name in names:
        d = tmp / f"broken-{name}"
        shutil.copytree(src, d)
        (d / name).write_text("- a list\n- not a mapping\n" if name.endswith((".yaml", ".yml")) else '{"a": 1,')
        try:
            AsrEngine.from_model(model_id, d, device="cpu")
        except CheckpointError as e:
            assert name in str(e), f"{name}: the error does not name the file: {e}"
            refused.add(name)
    return refused


def test_whisper(random_whisper_dir, tmp_path):
    (random_whisper_dir / "generation_config.json").exists() or pytest.fail(
        "transformers writes generation_config.json"
    )
    refused = _break_each(random_whisper_dir, tmp_path, "whisper-base")
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= refused


def test_qwen3_asr(tmp_path):
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok, layers=1)
    src = save_checkpoint(build_reference(cfg), cfg, tok, tmp_path / "qwen", "qwen")
    (src / "generation_config.json").write_text('{"eos_token_id": [1, 2]}')
    refused = _break_each(src, tmp_path, "qwen3-asr-0.6b")
    assert {"config.json", "tokenizer_config.json", "generation_config.json", "vocab.json"} <= refused
    hf = save_checkpoint(build_reference(cfg), cfg, tok, tmp_path / "hf", "transformers")
    assert {"config.json", "tokenizer.json"} <= _break_each(hf, tmp_path / "hf-broken", "qwen3-asr-0.6b")


def test_parakeet(tmp_path):
    pytest.importorskip("transformers")
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_hf_dir

    from polyasr.cli import main

    config = tiny_config(40, num_hidden_layers=1)
    model, fe, sp = random_model(config), feature_extractor(config), train_sentencepiece(40)
    hf = write_hf_dir(model, fe, sp, tmp_path / "hf")
    refused = _break_each(hf, tmp_path, "parakeet-tdt-v3")
    assert {"config.json", "preprocessor_config.json", "tokenizer.json"} <= refused
    from parakeet_refs import write_nemo

    converted = tmp_path / "converted"
    archive = write_nemo(model, fe, sp, tmp_path / "m.nemo")
    assert main(["convert", "--model", "parakeet-tdt-v3", "--model-path", str(archive), "-o", str(converted)]) == 0
    assert "model_config.yaml" in _break_each(converted, tmp_path / "conv-broken", "parakeet-tdt-v3")


def test_gigaam(tmp_path):
    from polyasr.models.gigaam.checkpoint import read_gigaam_checkpoint

    (tmp_path / "config.json").write_text('{"model_class": ')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="config.json"):
        read_gigaam_checkpoint(tmp_path)
