"""End to end: GigaAM v3 and Parakeet TDT give the same greedy tokens with the hot ops on the Triton
kernels (interpreter on CPU) as on plain torch, on random-weight checkpoints in their released
formats and a padded batch of two short utterances (key-padding masks, masked conv tails).

Whisper's attention is routed the same way (tested per op in test_kernel_dispatch.py) but its
greedy decoder runs one kernel launch per layer per token, too slow for the interpreter here;
Qwen3-ASR's decoder attention carries a per-query mask, which stays on SDPA.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # the model tests' checkpoint writers

from polyasr import AsrEngine  # noqa: E402
from polyasr.audio import load_audio  # noqa: E402
from polyasr.cli import main  # noqa: E402


def _clips(fixtures_dir, name):
    audio = load_audio(fixtures_dir / name)
    return [audio[: 16000 * 2], audio[8000: 8000 + 16000 * 5 // 4]]  # 2 s and 1.25 s: a padded batch


def _engines(model_id, path):
    return [AsrEngine.from_model(model_id, path, device="cpu", kernels=k) for k in ("torch", "triton")]


@pytest.fixture(scope="module")
def gigaam_ckpt(tmp_path_factory):
    pytest.importorskip("omegaconf")
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg()
    assert cfg["encoder"]["conv_norm_type"] == "layer_norm"  # the fused conv kernel's LayerNorm variant
    return save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", cfg, v3_state_dict(cfg, bf16_window=True))


@pytest.fixture(scope="module")
def parakeet_nemo(tmp_path_factory):
    pytest.importorskip("transformers")
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_nemo

    config = tiny_config(48)
    model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)
    return write_nemo(model, fe, sp, tmp_path_factory.mktemp("parakeet") / "tiny.nemo")


def test_gigaam_same_tokens(gigaam_ckpt, fixtures_dir):
    ref, tri = _engines("gigaam-v3-ctc", gigaam_ckpt)
    assert (ref.backend.kernels, tri.backend.kernels) == ("torch", "triton")
    clips = _clips(fixtures_dir, "ru_short.wav")
    a, b = ref.model.recognize(clips), tri.model.recognize(clips)
    assert any(len(x.token_ids) for x in a)  # random weights still emit tokens: the comparison means something
    for x, y in zip(a, b, strict=True):
        assert x.token_ids.tolist() == y.token_ids.tolist() and x.token_frames.tolist() == y.token_frames.tolist()
        assert_close(y.frame_confidence, x.frame_confidence, atol=1e-5, what="max posteriors")


def test_gigaam_cli_kernels_option(gigaam_ckpt, fixtures_dir, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    import soundfile

    soundfile.write(clip, _clips(fixtures_dir, "ru_short.wav")[1], 16000)
    args = ["transcribe", str(clip), "--model", "gigaam-v3-ctc", "--model-path", str(gigaam_ckpt), "--device", "cpu",
            "--format", "json"]
    assert main(args + ["--kernels", "torch"]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert main(args + ["--kernels", "triton"]) == 0
    triton_out = json.loads(capsys.readouterr().out)
    assert (torch_out["info"]["kernels"], triton_out["info"]["kernels"]) == ("torch", "triton")
    assert torch_out["text"] == triton_out["text"]


def test_parakeet_same_tokens(parakeet_nemo, fixtures_dir):
    ref, tri = _engines("parakeet-tdt-v3", parakeet_nemo)
    clips = _clips(fixtures_dir, "en_short.wav")
    (pa, la), (pb, lb) = ref.model.encode(clips), tri.model.encode(clips)
    assert np.array_equal(la, lb)
    for i, n in enumerate(la):
        assert_close(pb[i, :n], pa[i, :n], atol=1e-4, what=f"joint projection, item {i}")
    a, b = ref.model.decode(pa, la), tri.model.decode(pb, lb)
    assert any(len(h.tokens) for h in a)
    for x, y in zip(a, b, strict=True):
        assert (x.tokens.tolist(), x.frames.tolist(), x.durations.tolist()) == \
            (y.tokens.tolist(), y.frames.tolist(), y.durations.tolist())
