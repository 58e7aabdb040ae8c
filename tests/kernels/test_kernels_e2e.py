"""End to end: each of the four models gives the same greedy tokens with the hot ops on the Triton
kernels (interpreter on CPU) as on plain torch, on random-weight checkpoints in their released
formats: GigaAM v3 and Parakeet TDT on a padded batch of two short utterances (key-padding masks,
masked conv tails, the mel kernel for Parakeet), Qwen3-ASR on a padded batch (mel kernel, windowed
encoder attention with key masks, fused q/k-norm + RoPE; its decoder's per-query masks stay on
SDPA), Whisper through its encoder (a 300-position audio context) and 12 greedy steps on the KV cache (causal
self-attention and cross-attention kernels; a whole transcript would be hundreds of launches per
token in the interpreter).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close, encoder_arithmetic

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # the model tests' checkpoint writers

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.audio import load_audio  # noqa: E402
from polyasr.cli import main  # noqa: E402


def _clips(fixtures_dir, name):
    audio = load_audio(fixtures_dir / name)
    return [audio[: 16000 * 2], audio[8000 : 8000 + 16000 * 5 // 4]]  # 2 s and 1.25 s: a padded batch


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
    opts = TranscribeOptions()
    a, b = ([e.model.recognize(c, opts) for c in clips] for e in (ref, tri))
    assert any(len(x.tokens) for x in a)  # random weights still emit tokens: the comparison means something
    for x, y in zip(a, b, strict=True):
        assert x.tokens.tolist() == y.tokens.tolist() and x.positions.tolist() == y.positions.tolist()
        # a posterior p moves by p times its logit's error: the encoder's, one more layer (the head)
        kw = encoder_arithmetic(ref.model.cfg)
        assert_close(y.confidence, x.confidence, magnitude=1.0, **kw, what="max posteriors")


def test_gigaam_cli_kernels_option(gigaam_ckpt, fixtures_dir, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    import soundfile

    soundfile.write(clip, _clips(fixtures_dir, "ru_short.wav")[1], 16000)
    args = [
        "transcribe",
        str(clip),
        "--model",
        "gigaam-v3-ctc",
        "--model-path",
        str(gigaam_ckpt),
        "--device",
        "cpu",
        "--format",
        "json",
    ]
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
        assert_close(pb[i, :n], pa[i, :n], **encoder_arithmetic(ref.model.cfg), what=f"joint projection, item {i}")
    a, b = ref.model.decode(pa, la), tri.model.decode(pb, lb)
    assert any(len(h.tokens) for h in a)
    for x, y in zip(a, b, strict=True):
        assert (x.tokens.tolist(), x.frames.tolist(), x.durations.tolist()) == (
            y.tokens.tolist(),
            y.frames.tolist(),
            y.durations.tolist(),
        )


@pytest.mark.slow  # ~30 s in the interpreter
def test_qwen3_asr_same_tokens(tmp_path, fixtures_dir):
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    path = save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp_path / "q", "qwen")
    ref, tri = _engines("qwen3-asr-0.6b", path)
    clips = _clips(fixtures_dir, "en_short.wav")
    (ea, na), (eb, nb) = ref.model.encode(clips, {}), tri.model.encode(clips, {})
    assert list(na) == list(nb)
    assert_close(eb, ea, **encoder_arithmetic(ref.model.cfg), what="audio encoder (mel kernel + attention kernel)")
    a, b = ref.model.recognize(clips), tri.model.recognize(clips)
    assert sum(len(p.generation.tokens) for p in a) > 10
    assert [p.generation.tokens for p in a] == [p.generation.tokens for p in b]


@pytest.fixture(scope="module")
def short_context_whisper(tmp_path_factory, whisper_base_dir):
    """The random tiny Whisper with a 300-position audio context: the attention kernels still run
    over several key blocks, at a fraction of the interpreter's time for 1500 positions."""
    from conftest import make_hf_whisper

    d = tmp_path_factory.mktemp("short-context-whisper")
    make_hf_whisper(d, whisper_base_dir, max_source_positions=300)
    return d


@pytest.mark.slow  # the interpreter runs every kernel program on the CPU
def test_whisper_encoder_and_greedy_steps(short_context_whisper):
    from polyasr.models.whisper import model as net

    ref, tri = _engines("whisper", short_context_whisper)
    frames = ref.model.cfg.n_audio_frames
    assert frames == 600
    mel = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 80, frames)).astype(np.float32))
    outs = []
    for e in (ref, tri):
        m = e.model
        with torch.inference_mode():
            af = net.encode(m.params, m.cfg, m.B, mel)
            cache = net.new_cache(m.params, m.cfg, m.B, af, 32)
            tokens, steps = [50258, 50259, 50359], []
            hidden = net.decode(m.params, m.cfg, m.B, torch.tensor([tokens]), cache)
            for _ in range(12):
                logits = net.logits(m.params, m.B, hidden[:, -1:])[0, 0]
                steps.append((int(logits.argmax()), logits))
                hidden = net.decode(m.params, m.cfg, m.B, torch.tensor([[steps[-1][0]]]), cache)
        outs.append((af, steps))
    (af_a, sa), (af_b, sb) = outs
    assert_close(af_b, af_a, **encoder_arithmetic(ref.model.cfg), what="encoder (flash attention kernel)")
    assert [t for t, _ in sa] == [t for t, _ in sb]
    for (_, la), (_, lb) in zip(sa, sb):
        # the encoder's error, then the decoder's layers, then the d_model-long sum of the logits
        c = ref.model.cfg
        depth = c.encoder_layers + c.decoder_layers + 2
        assert_close(lb, la, reduction=c.decoder_ffn_dim, depth=depth, what="logits after cached decoding steps")
