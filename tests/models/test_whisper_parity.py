"""Whisper on the torch backend vs transformers' WhisperForConditionalGeneration, random weights.

Two configurations: 80 mels / 51865 tokens, and the large-v3-turbo shape (128 mels, v3 vocabulary,
4 decoder layers). The checkpoint is written by transformers itself and read by our loader.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_WHISPER, TURBO_WHISPER, assert_close, encoder_arithmetic, logits_arithmetic, make_hf_whisper

from polyasr.backends.torch import TorchBackend
from polyasr.models.whisper import model as net
from polyasr.models.whisper.checkpoint import load_checkpoint
from polyasr.models.whisper.decode import decode_window
from polyasr.models.whisper.pipeline import WhisperModel
from polyasr.options import TranscribeOptions

CONFIGS = {"base-shape": TINY_WHISPER, "turbo-shape": TURBO_WHISPER}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory, whisper_base_dir):
    """(transformers model, our WhisperModel) on the same random weights."""
    d = tmp_path_factory.mktemp(request.param)
    ref = make_hf_whisper(d, whisper_base_dir, **CONFIGS[request.param])
    ours = WhisperModel("whisper-test", load_checkpoint(d), TorchBackend("cpu", "float32"))
    return ref, ours


def _features(ours, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, ours.cfg.num_mel_bins, ours.cfg.n_audio_frames, generator=g)


@torch.inference_mode()
def test_config_read_from_checkpoint(pair):
    ref, ours = pair
    c = ref.config
    assert (ours.cfg.num_mel_bins, ours.cfg.encoder_layers, ours.cfg.decoder_layers, ours.cfg.vocab_size) == (
        c.num_mel_bins,
        c.encoder_layers,
        c.decoder_layers,
        c.vocab_size,
    )
    assert ours.tok.multilingual and ours.tok.timestamp_begin == c.vocab_size - 1501


@torch.inference_mode()
def test_encoder_matches(pair):
    ref, ours = pair
    mel = _features(ours)
    expected = ref.model.encoder(mel).last_hidden_state
    got = net.encode(ours.params, ours.cfg, ours.B, mel)
    assert_close(got, expected, **encoder_arithmetic(ours.cfg), what="encoder output")


@torch.inference_mode()
@pytest.mark.parametrize("windows_per_pass", [1, 2])
def test_encoder_batch_in_slices_matches(pair, windows_per_pass, monkeypatch):
    """A batch larger than the backend's `max_pass_rows` runs in slices of whole windows (the last
    one shorter): each window's output is still the reference's."""
    ref, ours = pair
    mel = torch.cat([_features(ours, seed) for seed in (1, 2, 3)])
    monkeypatch.setattr(ours.B, "max_pass_rows", windows_per_pass * ours.cfg.max_source_positions + 1)
    got = net.encode(ours.params, ours.cfg, ours.B, mel)
    expected = ref.model.encoder(mel).last_hidden_state
    assert got.shape == expected.shape
    assert_close(got, expected, **encoder_arithmetic(ours.cfg), what="encoder output in slices")


@torch.inference_mode()
def test_decoder_logits_match_prefill_and_cached_steps(pair):
    ref, ours = pair
    mel = _features(ours)
    tok = ours.tok
    ids = [tok.sot, tok.languages["en"], tok.transcribe, tok.timestamp_begin, 440, 1359, 3954, 13, 50, 7]
    expected = ref(input_features=mel, decoder_input_ids=torch.tensor([ids])).logits
    af = net.encode(ours.params, ours.cfg, ours.B, mel)
    cache = net.new_cache(ours.params, ours.cfg, ours.B, af, len(ids))
    prefill = net.logits(ours.params, ours.B, net.decode(ours.params, ours.cfg, ours.B, torch.tensor([ids[:4]]), cache))
    kw = logits_arithmetic(ours.cfg)
    assert_close(prefill, expected[:, :4], **kw, what="prefill logits")
    for i in range(4, len(ids)):  # one token at a time through the KV cache
        hidden = net.decode(ours.params, ours.cfg, ours.B, torch.tensor([[ids[i]]]), cache)
        step = net.logits(ours.params, ours.B, hidden)
        assert_close(step[:, 0], expected[:, i], **kw, what=f"cached step {i} logits")


def _reference_greedy(ref, mel, prefix, banned, eot, max_len):
    """Argmax over transformers' full-sequence logits, recomputed from scratch every step."""
    enc = ref.model.encoder(mel)
    tokens = list(prefix)
    while len(tokens) < max_len:
        logits = ref(encoder_outputs=enc, decoder_input_ids=torch.tensor([tokens])).logits[0, -1].clone()
        logits[banned] = -torch.inf
        tokens.append(int(logits.argmax()))
        if tokens[-1] == eot:
            break
    return tokens[len(prefix) :]


@torch.inference_mode()
@pytest.mark.parametrize("seed", [1, 2])
def test_greedy_tokens_identical(pair, seed):
    ref, ours = pair
    mel = _features(ours, seed)
    tok = ours.tok
    opts = TranscribeOptions(language="en", without_timestamps=True, suppress_blank=False, beam_size=1)
    sot = tok.sot_sequence("en", "transcribe")
    af = net.encode(ours.params, ours.cfg, ours.B, mel)
    result = decode_window(ours, af, [], sot, opts, 0.0, np.random.default_rng(0))
    prefix = sot + [tok.no_timestamps]
    banned = [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]
    expected = _reference_greedy(ref, mel, prefix, banned, tok.eot, len(prefix) + ours.cfg.max_target_positions // 2)
    got = result.tokens + ([tok.eot] if len(result.tokens) < len(expected) else [])
    assert got == expected


def test_task_and_language_shape_the_prompt(pair):
    _, ours = pair
    tok = ours.tok
    assert tok.sot_sequence("ru", "translate") == [tok.sot, tok.languages["ru"], tok.translate]
    assert tok.sot_sequence("en", "transcribe") == [tok.sot, tok.languages["en"], tok.transcribe]
    from polyasr.models.whisper.decode import initial_tokens

    prompt = list(range(300))  # longer than half the context: only the last 223 tokens are kept
    tokens = initial_tokens(tok, ours.cfg, prompt, tok.sot_sequence(None, "translate"), without_timestamps=True)
    assert tokens[0] == tok.sot_prev and tokens[1:224] == prompt[-223:]
    assert tokens[224:] == [tok.sot, tok.translate, tok.no_timestamps]
