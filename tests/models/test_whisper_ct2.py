"""The CTranslate2 `model.bin` reader: real faster-whisper checkpoints, files written by
CTranslate2's own converter (fp32 and int8), and a CT2 -> HF export read back both ways."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from conftest import assert_close, encoder_arithmetic, make_hf_whisper
from whisper_refs import write_hf_dir

from polyasr import AsrEngine, TranscribeOptions
from polyasr.backends.torch import TorchBackend
from polyasr.errors import CheckpointError
from polyasr.models.whisper import model as net
from polyasr.models.whisper.checkpoint import load_checkpoint
from polyasr.models.whisper.ct2_format import read_ct2_model
from polyasr.models.whisper.weights import HF_MAP

ctranslate2 = pytest.importorskip("ctranslate2")


@pytest.mark.parametrize(
    "which, dims",
    [
        (
            "whisper_base_dir",
            dict(
                d_model=512,
                encoder_layers=6,
                decoder_layers=6,
                encoder_attention_heads=8,
                num_mel_bins=80,
                vocab_size=51865,
            ),
        ),
        (
            "whisper_tiny_en_dir",
            dict(
                d_model=384,
                encoder_layers=4,
                decoder_layers=4,
                encoder_attention_heads=6,
                num_mel_bins=80,
                vocab_size=51864,
            ),
        ),
    ],
)
def test_real_checkpoints_load_with_config_from_the_file(request, which, dims):
    ckpt = load_checkpoint(request.getfixturevalue(which))
    assert ckpt.format == "ctranslate2"
    assert {k: getattr(ckpt.cfg, k) for k in dims} == dims
    assert ckpt.cfg.suppress_tokens and ckpt.cfg.begin_suppress_tokens == (220, ckpt.cfg.vocab_size - 1608)
    assert ckpt.params["decoder.token_embedding.weight"].dtype == np.float16  # fp16 on disk, memory-mapped


@pytest.fixture(scope="module")
def converted(tmp_path_factory, whisper_base_dir):
    """A random HF Whisper and CTranslate2's own conversions of it (float32 and int8)."""
    root = tmp_path_factory.mktemp("ct2")
    ref = make_hf_whisper(root / "hf", whisper_base_dir)
    out = {}
    for quant in ("float32", "int8"):
        ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(str(root / quant), quantization=quant)
        (root / quant / "tokenizer.json").write_bytes((root / "hf" / "tokenizer.json").read_bytes())
        out[quant] = root / quant
    return ref, root / "hf", out


def test_ct2_float32_equals_hf_weights(converted):
    _, hf_dir, ct2 = converted
    hf, ours = load_checkpoint(hf_dir), load_checkpoint(ct2["float32"])
    # CTranslate2 adds default alignment heads and language ids; the network's dimensions must agree.
    assert net.param_shapes(hf.cfg) == net.param_shapes(ours.cfg) and set(hf.params) == set(ours.params)
    for name in hf.params:
        np.testing.assert_array_equal(ours.params[name], hf.params[name], err_msg=name)


@torch.inference_mode()
def test_ct2_int8_dequantizes_within_one_step(converted):
    ref, hf_dir, ct2 = converted
    hf, q8 = load_checkpoint(hf_dir), load_checkpoint(ct2["int8"])
    raw = read_ct2_model(ct2["int8"] / "model.bin")
    assert any(raw.dtypes[k] == "int8" for k in raw.variables), "converter wrote no int8 weights"
    for name, w in hf.params.items():
        w = np.asarray(w, np.float32)
        step = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127 if w.ndim >= 2 else np.zeros(1)
        err = np.abs(q8.params[name] - w).reshape(w.shape[0], -1).max(axis=1) if w.ndim >= 2 else 0
        assert np.all(err <= step * 0.5 + 1e-6), name
    B = TorchBackend("cpu", "float32")
    mel = torch.randn(1, 80, 3000)
    params = net.prepare({k: B.param(v, q8.dtypes.get(k)) for k, v in q8.params.items()}, q8.cfg, B)
    assert_close(
        net.encode(params, q8.cfg, B, mel),
        ref.model.encoder(mel).last_hidden_state,
        atol=0.05,
        what="int8 encoder output",
    )


@pytest.mark.slow
@torch.inference_mode()
def test_real_base_ct2_and_its_hf_export_agree_with_transformers(tmp_path, whisper_base_dir, fixtures_dir):
    """The real CT2 weights exported to an HF directory: both loaders give the same parameters and
    transcript, and transformers' own Whisper on the export gives our encoder output."""
    from transformers import WhisperForConditionalGeneration

    ct2 = load_checkpoint(whisper_base_dir)
    write_hf_dir(ct2.params, ct2.cfg, whisper_base_dir / "tokenizer.json", tmp_path / "hf")
    hf = load_checkpoint(tmp_path / "hf")
    assert hf.format == "hf-safetensors" and set(hf.params) == set(ct2.params)
    for name in ct2.params:
        np.testing.assert_array_equal(hf.params[name], np.asarray(ct2.params[name], np.float32), err_msg=name)
    ref = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    B = TorchBackend("cpu", "float32")
    params = net.prepare({k: B.param(v) for k, v in hf.params.items()}, hf.cfg, B)
    mel = torch.randn(1, 80, 3000) * 0.5
    assert_close(
        net.encode(params, hf.cfg, B, mel),
        ref.model.encoder(mel).last_hidden_state,
        **encoder_arithmetic(hf.cfg),
        what="encoder output on real weights",
    )
    opts = TranscribeOptions(language="en", temperatures=(0.0,))
    a = AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu").transcribe_file(
        fixtures_dir / "en_short.wav", opts
    )
    b = AsrEngine.from_model("whisper-base", tmp_path / "hf", device="cpu").transcribe_file(
        fixtures_dir / "en_short.wav", opts
    )
    assert a.text == b.text and [s.tokens for s in a.segments] == [s.tokens for s in b.segments]


def _ct2_header(spec: str, version: int = 6) -> bytes:
    name = spec.encode() + b"\0"
    return struct.pack("<I", version) + struct.pack("<H", len(name)) + name + struct.pack("<I", 3)


def test_bad_model_bin_is_a_checkpoint_error(tmp_path, whisper_base_dir):
    d = tmp_path / "ckpt"
    d.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (d / f).write_bytes((whisper_base_dir / f).read_bytes())
    cases = {
        "truncated": _ct2_header("WhisperSpec") + struct.pack("<I", 5),
        "other spec": _ct2_header("TransformerSpec") + struct.pack("<II", 0, 0),
        "unknown version": _ct2_header("WhisperSpec", version=99),
        "empty": b"",
    }
    for what, blob in cases.items():
        (d / "model.bin").write_bytes(blob)
        with pytest.raises(CheckpointError, match="model.bin") as e:
            load_checkpoint(d)
        assert str(d) in str(e.value), what


def test_hf_table_covers_every_parameter():
    """Every canonical parameter is produced by exactly one HF rename or fusion entry."""
    from polyasr.models.whisper.config import WhisperConfig

    targets = [t for t in HF_MAP.rename.values() if t] + list(HF_MAP.fuse)
    shapes = net.param_shapes(WhisperConfig.tiny())
    templates = {__import__("re").sub(r"\.\d+\.", ".{}.", k) for k in shapes}
    assert templates == set(targets)
