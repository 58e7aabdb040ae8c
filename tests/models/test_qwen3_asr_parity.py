"""Qwen3-ASR parity with transformers' `Qwen3ASRForConditionalGeneration` at a small random config,
saved in Qwen's published layout and in transformers' layout and loaded by polyasr: features,
encoder output, first-step logits, 32 greedy tokens (single and batched, with and without a
forced language), KV-cache decoding against full recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, encoder_arithmetic, log_mel_tolerance, logits_arithmetic
from qwen3_asr_refs import build_reference, official_prompt, reference_processor, save_checkpoint, small_config

from polyasr.backends.torch import TorchBackend
from polyasr.models.qwen3_asr import model as net
from polyasr.models.qwen3_asr.checkpoint import load_checkpoint
from polyasr.models.qwen3_asr.decode import greedy
from polyasr.models.qwen3_asr.features import log_mel
from polyasr.models.qwen3_asr.pipeline import Qwen3ASRModel

pytest.importorskip("transformers.models.qwen3_asr")

# Lengths in samples. Multiples of the 160-sample hop in batches: transformers' (and Qwen's) batched
# feature extractor gives a padded item ceil(N / 160) frames where the item alone has N // 160
# (see README), so only such lengths have one answer for both.
SINGLE = [16000 * 3 + 123]
BATCH = [16000 * 3 + 160 * 7, 16000 * 1 + 160 * 3, 16000 * 5 + 160]
# Last attention windows (26 tokens at n_window_infer=200) of 14, 7, 13 and 10 tokens, full ones before:
# the encoder runs each length as its own run of windows and restores the items' order after.
TAILS = [16000 * 3 + 160 * 7, 16000 * 2 + 160 * 50, 16000 * 1, 16000 * 4 + 160 * 80]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from qwen3_asr_refs import make_tokenizer

    tok = make_tokenizer()
    cfg = small_config(tok)
    ref = build_reference(cfg)
    root = tmp_path_factory.mktemp("qwen3")
    models = {
        layout: Qwen3ASRModel(
            "qwen3-asr-0.6b",
            load_checkpoint(save_checkpoint(ref, cfg, tok, root / layout, layout)),
            TorchBackend("cpu", "float32"),
        )
        for layout in ("qwen", "transformers")
    }
    return ref, models, reference_processor(tok)


def _audios(lengths, seed=0):
    rs = np.random.RandomState(seed)
    return [(0.1 * rs.randn(n)).astype(np.float32) for n in lengths]


def _reference_inputs(proc, audios, language, feats):
    """The processor's ids and masks; input features are ours zero-padded to its length (Qwen's encoder
    pads a last chunk with zeros; transformers' batched extractor leaves log-mel of silence there)."""
    inp = proc(text=[official_prompt(proc, language)] * len(audios), audio=audios, return_tensors="pt")
    t = inp["input_features"].shape[-1]
    return inp, torch.nn.functional.pad(feats, (0, t - feats.shape[-1]))


def test_features_equal_the_reference_extractors(setup):
    from transformers import Qwen3ASRFeatureExtractor, WhisperFeatureExtractor

    _, models, _ = setup
    for n in SINGLE + BATCH + [8000, 8001]:
        audio = _audios([n], seed=n)[0]
        ours, frames = log_mel([audio], models["qwen"].mel, models["qwen"].B)
        whisper = WhisperFeatureExtractor(feature_size=128)(
            audio, sampling_rate=16000, padding="longest", return_tensors="pt"
        )["input_features"]
        qwen = Qwen3ASRFeatureExtractor()(audio, sampling_rate=16000, padding="longest", return_tensors="pt")
        assert frames[0] == n // 160 == whisper.shape[-1]
        tol = log_mel_tolerance(audio, models["qwen"].mel)
        assert_close(ours, whisper, tol, what=f"features vs WhisperFeatureExtractor ({n} samples)")
        assert_close(
            ours[..., : frames[0]],
            qwen["input_features"][..., : frames[0]],
            tol[..., : frames[0]],
            what=f"features vs Qwen3ASRFeatureExtractor ({n} samples)",
        )


@pytest.mark.parametrize("group_bytes", [None, 1], ids=["stem-groups-by-size", "stem-one-chunk-a-group"])
@pytest.mark.parametrize("lengths", [SINGLE, BATCH, TAILS], ids=["single", "batched", "window-lengths"])
def test_encoder_output(setup, lengths, group_bytes, monkeypatch):
    ref, models, _ = setup
    if group_bytes is not None:
        monkeypatch.setattr(net, "STEM_GROUP_BYTES", group_bytes)
    for layout, m in models.items():
        feats, frames = log_mel(_audios(lengths), m.mel, m.B)
        with torch.no_grad():
            ours, tokens = net.encode(m.params, m.cfg, m.B, feats, frames)
            t = -(-feats.shape[-1] // 100) * 100
            mask = (torch.arange(t)[None] < torch.as_tensor(frames)[:, None]).long()
            theirs = ref.model.get_audio_features(
                torch.nn.functional.pad(feats, (0, t - feats.shape[-1])), mask
            ).pooler_output
        assert sum(tokens) == theirs.shape[0]
        kw = encoder_arithmetic(m.cfg)
        assert_close(ours, theirs, **kw, what=f"encoder output ({layout} layout, {len(lengths)} items)")


@pytest.mark.parametrize("language", [None, "Russian"], ids=["detect", "forced"])
@pytest.mark.parametrize("lengths", [SINGLE, BATCH], ids=["single", "batched"])
def test_first_logits_and_32_greedy_tokens(setup, lengths, language):
    ref, models, proc = setup
    audios = _audios(lengths)
    for layout, m in models.items():
        feats, frames = log_mel(audios, m.mel, m.B)
        inp, padded = _reference_inputs(proc, audios, language, feats)
        with torch.no_grad():
            emb, tokens = net.encode(m.params, m.cfg, m.B, feats, frames)
            x, pad = m.prompt_embeddings(emb, tokens, language)
            assert x.shape[1] == inp["input_ids"].shape[1] and (pad == (1 - inp["attention_mask"]).sum(1).numpy()).all()
            cache = net.new_cache(m.cfg, m.B, pad, x.shape[1] + 1)
            first = net.logits(m.params, m.B, net.decode(m.params, m.cfg, m.B, x, cache)[:, -1:])[:, -1]
            kw = dict(
                input_ids=inp["input_ids"],
                attention_mask=inp["attention_mask"],
                input_features=padded,
                input_features_mask=inp["input_features_mask"],
            )
            expected = ref(**kw).logits[:, -1]
            assert_close(first, expected, **logits_arithmetic(m.cfg), what=f"first-step logits ({layout})")
            expected = ref.generate(**kw, max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None)
            gens = greedy(m.params, m.cfg, m.B, x, pad, [32] * len(audios), frozenset(), guard=False)
        assert [g.tokens for g in gens] == expected[:, inp["input_ids"].shape[1] :].tolist(), layout


def test_kv_cache_decoding_equals_full_recomputation(setup):
    _, models, _ = setup
    m = models["qwen"]
    audios = _audios(BATCH[:2])
    with torch.no_grad():
        emb, tokens = m.encode(audios, {})
        x, pad = m.prompt_embeddings(emb, tokens, None)
        gens = greedy(m.params, m.cfg, m.B, x, pad, [24, 24], frozenset(), guard=False)
        seqs = [[] for _ in gens]
        for _ in range(24):  # every step recomputes the whole prompt + generated prefix, no cache reuse
            steps = net.embed(m.params, m.B, torch.tensor(seqs, dtype=torch.int64)) if seqs[0] else None
            full = x if steps is None else torch.cat([x, steps], dim=1)
            cache = net.new_cache(m.cfg, m.B, pad, full.shape[1])
            ids = net.logits(m.params, m.B, net.decode(m.params, m.cfg, m.B, full, cache)[:, -1:])[:, -1].argmax(-1)
            for s, i in zip(seqs, ids.tolist()):
                s.append(i)
    assert [g.tokens for g in gens] == seqs


def test_untied_output_projection_and_lm_head_required(tmp_path):
    from qwen3_asr_refs import make_tokenizer

    from polyasr.errors import WeightsMismatchError

    tok = make_tokenizer()
    cfg = small_config(tok, tied=False)
    ref = build_reference(cfg, seed=1)
    assert not torch.equal(ref.lm_head.weight, ref.model.language_model.embed_tokens.weight)
    m = Qwen3ASRModel(
        "qwen3-asr-1.7b",
        load_checkpoint(save_checkpoint(ref, cfg, tok, tmp_path / "a")),
        TorchBackend("cpu", "float32"),
    )
    audios = _audios(SINGLE)
    feats, frames = log_mel(audios, m.mel, m.B)
    inp, padded = _reference_inputs(reference_processor(tok), audios, None, feats)
    with torch.no_grad():
        x, pad = m.prompt_embeddings(*net.encode(m.params, m.cfg, m.B, feats, frames), None)
        cache = net.new_cache(m.cfg, m.B, pad, x.shape[1])
        ours = net.logits(m.params, m.B, net.decode(m.params, m.cfg, m.B, x, cache)[:, -1:])[:, -1]
        theirs = ref(
            input_ids=inp["input_ids"], input_features=padded, input_features_mask=inp["input_features_mask"]
        ).logits[:, -1]
    assert_close(ours, theirs, **logits_arithmetic(m.cfg), what="first-step logits, untied lm_head")
    with pytest.raises(WeightsMismatchError, match="thinker.lm_head.weight"):
        load_checkpoint(save_checkpoint(ref, cfg, tok, tmp_path / "b", drop=("thinker.lm_head.weight",)))
