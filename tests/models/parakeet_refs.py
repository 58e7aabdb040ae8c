"""Random-weight Parakeet TDT checkpoints for the tests, in the formats users have.

One transformers `ParakeetForTDT` at a small config is the reference; its weights are written
(a) as a transformers directory (save_pretrained + tokenizer.json + preprocessor_config.json) and
(b) as a NeMo `.nemo` archive: `model_config.yaml` laid out as NeMo saves it and
`model_weights.ckpt` under NeMo's tensor names. The NeMo names come from reversing the rename
table of transformers' `convert_nemo_to_hf.py` (written out here independently of polyasr's own
tables, so a wrong table in polyasr fails the parity tests), plus the buffers NeMo stores that
transformers drops (the featurizer's window and mel bank, BatchNorm's batch counter).
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import torch
import yaml

# transformers name -> NeMo name (the reverse of convert_nemo_to_hf.py's NEMO_TO_HF / NEMO_TDT mappings)
HF_TO_NEMO = [
    (r"^encoder\.subsampling\.layers\.", "encoder.pre_encode.conv."),
    (r"^encoder\.subsampling\.linear\.", "encoder.pre_encode.out."),
    (r"^(encoder\.layers\.\d+)\.conv\.norm\.", r"\1.conv.batch_norm."),
    (r"\.self_attn\.q_proj\.", ".self_attn.linear_q."),
    (r"\.self_attn\.k_proj\.", ".self_attn.linear_k."),
    (r"\.self_attn\.v_proj\.", ".self_attn.linear_v."),
    (r"\.self_attn\.o_proj\.", ".self_attn.linear_out."),
    (r"\.self_attn\.relative_k_proj\.", ".self_attn.linear_pos."),
    (r"\.self_attn\.bias_([uv])$", r".self_attn.pos_bias_\1"),
    (r"^decoder\.embedding\.", "decoder.prediction.embed."),
    (r"^decoder\.lstm\.", "decoder.prediction.dec_rnn.lstm."),
    (r"^encoder_projector\.", "joint.enc."),
    (r"^decoder\.decoder_projector\.", "joint.pred."),
    # NeMo's joint_net is [ReLU, Dropout, Linear] when jointnet.dropout > 0, else [ReLU, Linear]
    (r"^joint\.head\.", "joint.joint_net.{joint_out}."),
]

TEXT = (
    "the quick brown fox jumps over the lazy dog while seven wizards quietly hex jumbo pies "
    "una rapida volpe salta sopra il cane pigro der schnelle braune fuchs springt "
    "le vif renard brun saute par dessus le chien paresseux"
)


def train_sentencepiece(vocab_size: int) -> bytes:
    """A small BPE SentencePiece model (as NeMo's tokenizer.model) trained on TEXT."""
    import sentencepiece as spm

    out = io.BytesIO()
    lines = [TEXT] * 4 + TEXT.split()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
        hard_vocab_limit=True,
    )
    return out.getvalue()


def tiny_config(vocab: int, **encoder):
    from transformers import ParakeetTDTConfig

    enc = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_kernel_size=9,
        subsampling_factor=8,
        subsampling_conv_channels=8,
        num_mel_bins=32,
        scale_input=True,
        attention_bias=True,
        convolution_bias=True,
        dropout=0.0,
        layerdrop=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    enc.update(encoder)
    return ParakeetTDTConfig(
        vocab_size=vocab + 1,
        decoder_hidden_size=24,
        num_decoder_layers=2,
        durations=[0, 1, 2, 3, 4],
        hidden_act="relu",
        max_symbols_per_step=10,
        encoder_config=enc,
        pad_token_id=1,
        blank_token_id=vocab,
    )


def random_model(config, seed: int = 0, blank_bias: float = 1.0):
    """ParakeetForTDT with weights large enough to give varied outputs (the default init makes
    the joint almost constant), eval mode, fp32."""
    from transformers import ParakeetForTDT

    torch.manual_seed(seed)
    model = ParakeetForTDT(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else p.numel()
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * scale * (2.0 if "joint" in name else 1.0))
            if name.endswith("norm.weight") or "norm_" in name and name.endswith("weight"):
                p.add_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
        model.joint.head.bias[config.blank_token_id] += blank_bias
        # Real TDT models rarely predict duration 0; a random joint that favours it emits the same
        # token at one frame until the step limit, which tests nothing.
        model.joint.head.bias[config.vocab_size] -= 2.0
    model.generation_config.decoder_start_token_id = config.blank_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.suppress_tokens = list(range(config.vocab_size, config.vocab_size + len(config.durations)))
    return model


def feature_extractor(config):
    from transformers import ParakeetFeatureExtractor

    return ParakeetFeatureExtractor(
        feature_size=config.encoder_config.num_mel_bins,
        sampling_rate=16000,
        hop_length=160,
        n_fft=512,
        win_length=400,
        preemphasis=0.97,
    )


def hf_tokenizer_json(sp_model: bytes, directory: Path) -> Path:
    """tokenizer.json as transformers' NeMo conversion writes it (ParakeetConverter + added tokens)."""
    from transformers.convert_slow_tokenizer import ParakeetConverter

    sp_path = directory / "sp.model"
    sp_path.write_bytes(sp_model)
    tok = ParakeetConverter(str(sp_path)).converted()
    sp_path.unlink()
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken("<blank>", normalized=False, special=True)])
    out = directory / "tokenizer.json"
    tok.save(str(out))
    return out


def write_hf_dir(model, fe, sp_model: bytes, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fe.save_pretrained(directory)
    hf_tokenizer_json(sp_model, directory)
    return directory


def nemo_state_dict(model, fe, joint_dropout: float = 0.2) -> dict[str, torch.Tensor]:
    """The model's weights under NeMo's names, with the buffers NeMo stores and transformers drops.
    `joint_dropout` must be the archive config's `joint.jointnet.dropout` (it shifts one name)."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("inv_freq"):
            continue
        for pattern, repl in HF_TO_NEMO:
            name = re.sub(pattern, repl.replace("{joint_out}", "2" if joint_dropout else "1"), name)
        out[name] = t.detach().clone()
    out["preprocessor.featurizer.window"] = torch.hann_window(fe.win_length, periodic=False)
    out["preprocessor.featurizer.fb"] = torch.as_tensor(fe.mel_filters)[
        None
    ].clone()  # (1, n_mels, F) as NeMo stores it
    return out


def nemo_config(model, fe, pieces: list[str], tokenizer_hash: str = "5a8f0e_", joint_dropout: float = 0.2) -> dict:
    """model_config.yaml as a NeMo 2.x EncDecRNNTBPEModel (TDT) saves it."""
    c, e = model.config, model.config.encoder_config
    return {
        "sample_rate": 16000,
        "labels": pieces,
        "model_defaults": {
            "enc_hidden": e.hidden_size,
            "pred_hidden": c.decoder_hidden_size,
            "joint_hidden": c.decoder_hidden_size,
            "tdt_durations": list(c.durations),
            "num_tdt_durations": len(c.durations),
        },
        "tokenizer": {
            "dir": None,
            "type": "bpe",
            "model_path": f"nemo:{tokenizer_hash}tokenizer.model",
            "vocab_path": f"nemo:{tokenizer_hash}vocab.txt",
            "spe_tokenizer_vocab": f"nemo:{tokenizer_hash}tokenizer.vocab",
        },
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": fe.win_length / 16000,
            "window_stride": fe.hop_length / 16000,
            "window": "hann",
            "features": fe.feature_size,
            "n_fft": fe.n_fft,
            "log": True,
            "frame_splicing": 1,
            "dither": 1.0e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": e.num_mel_bins,
            "feat_out": -1,
            "n_layers": e.num_hidden_layers,
            "d_model": e.hidden_size,
            "use_bias": e.attention_bias,
            "subsampling": "dw_striding",
            "subsampling_factor": e.subsampling_factor,
            "subsampling_conv_channels": e.subsampling_conv_channels,
            "causal_downsampling": False,
            "ff_expansion_factor": e.intermediate_size // e.hidden_size,
            "self_attention_model": "rel_pos",
            "n_heads": e.num_attention_heads,
            "att_context_size": [-1, -1],
            "att_context_style": "regular",
            "xscaling": e.scale_input,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": e.conv_kernel_size,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
            "stochastic_depth_drop_prob": 0.0,
            "stochastic_depth_mode": "linear",
            "stochastic_depth_start_layer": 1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {
                "pred_hidden": "${model_defaults.pred_hidden}",
                "pred_rnn_layers": c.num_decoder_layers,
                "t_max": None,
                "dropout": 0.2,
            },
            "vocab_size": len(pieces),
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": True,
            "fused_batch_size": 4,
            "jointnet": {
                "joint_hidden": "${model_defaults.joint_hidden}",
                "activation": "relu",
                "dropout": joint_dropout,
                "encoder_hidden": e.hidden_size,
                "pred_hidden": c.decoder_hidden_size,
            },
            "num_classes": len(pieces),
            "vocabulary": pieces,
            "num_extra_outputs": "${model_defaults.num_tdt_durations}",
        },
        "decoding": {
            "strategy": "greedy_batch",
            "model_type": "tdt",
            "durations": "${model_defaults.tdt_durations}",
            "greedy": {"max_symbols": 10},
        },
        "target": "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel",
        "nemo_version": "2.2.0",
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_nemo(
    model, fe, sp_model: bytes, path: Path, *, state_dict=None, config=None, extra_members=(), joint_dropout=0.2
) -> Path:
    """A `.nemo` archive (plain tar, "./"-prefixed members, as NeMo's SaveRestoreConnector writes)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(sp_model)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    config = config or nemo_config(model, fe, pieces, joint_dropout=joint_dropout)
    weights = io.BytesIO()
    torch.save(state_dict if state_dict is not None else nemo_state_dict(model, fe, joint_dropout), weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        _add(tar, "./model_config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
        _add(tar, "./model_weights.ckpt", weights.getvalue())
        _add(tar, "./5a8f0e_tokenizer.model", sp_model)
        _add(tar, "./5a8f0e_vocab.txt", "\n".join(pieces).encode())
        _add(tar, "./5a8f0e_tokenizer.vocab", "\n".join(f"{p}\t0" for p in pieces).encode())
        for member in extra_members:
            tar.addfile(*member) if isinstance(member, tuple) else tar.addfile(member)
    return path


def hf_greedy(model, features, mask) -> list[tuple[list[int], list[int], list[int]]]:
    """transformers' greedy TDT generate -> per item (tokens, frames, durations) of its emissions.

    `sequences` holds every step's argmax (blanks included) after the start token, `durations`
    the frame advance of each step; a step belongs to the item while its frame pointer is inside
    the item's encoder length (finished items get pad tokens after that)."""
    with torch.no_grad():
        out = model.generate(input_features=features, attention_mask=mask)
        enc = model.get_audio_features(input_features=features, attention_mask=mask)
    lengths = enc.attention_mask.sum(-1).tolist()
    blank, result = model.config.blank_token_id, []
    for b in range(features.shape[0]):
        seq, dur = out.sequences[b, 1:].tolist(), out.durations[b, 1:].tolist()
        t, toks, frames, durs = 0, [], [], []
        for k, d in zip(seq, dur):
            if t >= lengths[b]:
                break
            if k != blank:
                toks.append(k)
                frames.append(t)
                durs.append(d)
            t += d
        result.append((toks, frames, durs))
    return result
