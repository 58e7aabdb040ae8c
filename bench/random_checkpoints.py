"""Checkpoints at the released models' real dimensions with random weights, written to a directory
and loaded through `AsrEngine.from_model` as a user's would be, for the end-to-end benches (server,
long audio): the time a real checkpoint takes is the time of these shapes; the text is noise.

- Parakeet TDT 0.6B v3: the encoder of `bench_parakeet.V3_ENCODER` (24 x 1024, 128 mels), the
  predictor and joint at 640 as released; the vocabulary is the tests' small SentencePiece model
  (the joint's output layer is a small part of a step), in transformers' layout.
- Qwen3-ASR-0.6B: `bench_qwen3_asr.CONFIG` (AuT 18 x 896, Qwen3 28 x 1024, vocabulary 151936), the
  tests' small BPE tokenizer (ids it does not know decode to nothing); random weights rarely
  produce an end token, so every piece decodes to its max-new-tokens bound: the slowest case.
- GigaAM v3 CTC: the tests' v3 checkpoint writer at 16 x 768, 16 heads, as released.

Weights are drawn with a fan-in scale (norms near 1) so activations stay in range through the
depth; transformers' own initialisation is skipped (it would draw every tensor twice).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "models"))


def _fill(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def parakeet_v3(directory: Path, seed: int = 0) -> Path:
    """A transformers-layout Parakeet TDT directory at v3's encoder dimensions."""
    import transformers
    from bench_parakeet import V3_ENCODER
    from parakeet_refs import feature_extractor, train_sentencepiece, write_hf_dir
    from transformers.initialization import no_init_weights

    vocab = 64
    config = transformers.ParakeetTDTConfig(
        vocab_size=vocab + 1,
        decoder_hidden_size=640,
        num_decoder_layers=2,
        durations=[0, 1, 2, 3, 4],
        encoder_config=V3_ENCODER,
        pad_token_id=1,
        blank_token_id=vocab,
    )
    with no_init_weights():
        model = transformers.ParakeetForTDT(config).eval()
    _fill(model, seed)
    with torch.no_grad():  # mostly blanks and few zero durations, as a trained model emits
        model.joint.head.bias[vocab] += 1.0
        model.joint.head.bias[vocab + 1] -= 2.0
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.fill_(1.0)
            elif name.endswith("running_mean"):
                b.zero_()
    fe = feature_extractor(config)
    fe.feature_size = V3_ENCODER["num_mel_bins"]
    return write_hf_dir(model, fe, train_sentencepiece(vocab), directory)


def qwen3_asr_06b(directory: Path, seed: int = 0) -> Path:
    """A transformers-layout Qwen3-ASR directory at the 0.6B dimensions."""
    from bench_qwen3_asr import CONFIG
    from qwen3_asr_refs import make_tokenizer, save_checkpoint, token_ids
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration
    from transformers.initialization import no_init_weights

    tok = make_tokenizer()
    ids = token_ids(tok)
    cfg = dict(
        CONFIG,
        audio_token_id=ids["<|audio_pad|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
    )
    with no_init_weights():
        model = Qwen3ASRForConditionalGeneration(Qwen3ASRConfig(**cfg)).eval()
    _fill(model, seed)
    return save_checkpoint(model, cfg, tok, directory, "transformers", keep_lm_head=False, shards=1)


def gigaam_v3(directory: Path, seed: int = 0) -> Path:
    """A released-format GigaAM v3 CTC `.ckpt` at 16 x 768, 16 heads."""
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(seed)
    cfg = tiny_cfg(d_model=768, n_layers=16)
    cfg["encoder"]["n_heads"] = 16
    directory.mkdir(parents=True, exist_ok=True)
    return save_ckpt(directory / "v3_ctc.ckpt", cfg, v3_state_dict(cfg))
