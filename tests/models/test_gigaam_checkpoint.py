"""GigaAM checkpoint reading (released .ckpt, hub layout, polyasr safetensors) and `polyasr convert`.

The .ckpt fixtures are written exactly as GigaAM releases them: `torch.save({"cfg":
OmegaConf.create(cfg), "state_dict": sd})`, with the v3 config's structure and the v3
module names (gigaam/encoder.py, decoder.py, preprocess.py in salute-developers/GigaAM).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from polyasr.cli import main
from polyasr.errors import CheckpointError, ModelNotFoundError
from polyasr.models.gigaam.checkpoint import (
    GigaAMCheckpoint,
    detect_format,
    read_gigaam_checkpoint,
    write_safetensors_dir,
)

torch = pytest.importorskip("torch")
OmegaConf = pytest.importorskip("omegaconf").OmegaConf

VOCAB = [" ", *"абвгдежзийклмнопрстуфхцчшщъыьэюя"]


def tiny_cfg(e2e: bool = False, d_model: int = 16, n_layers: int = 2, n_classes: int = 34) -> dict:
    """The released v3 CTC config (every key, same nesting), shrunk to a tiny encoder."""
    decoding = {"_target_": "gigaam.decoding.CTCGreedyDecoding", "vocabulary": None if e2e else VOCAB}
    if e2e:
        decoding["model_path"] = None
    return {
        "model_class": "ctc",
        "sample_rate": 16000,
        "preprocessor": {
            "_target_": "gigaam.preprocess.FeatureExtractor",
            "sample_rate": 16000,
            "features": 64,
            "win_length": 320,
            "hop_length": 160,
            "mel_scale": "htk",
            "n_fft": 320,
            "mel_norm": None,
            "center": False,
        },
        "encoder": {
            "_target_": "gigaam.encoder.ConformerEncoder",
            "feat_in": 64,
            "n_layers": n_layers,
            "d_model": d_model,
            "subsampling": "conv1d",
            "subs_kernel_size": 5,
            "subsampling_factor": 4,
            "ff_expansion_factor": 4,
            "self_attention_model": "rotary",
            "pos_emb_max_len": 5000,
            "n_heads": 2,
            "conv_kernel_size": 5,
            "flash_attn": False,
            "conv_norm_type": "layer_norm",
        },
        "head": {"_target_": "gigaam.decoder.CTCHead", "feat_in": d_model, "num_classes": n_classes},
        "decoding": decoding,
        "model_name": "v3_e2e_ctc" if e2e else "v3_ctc",
        "hashes": {"model": "0" * 32},
    }


def v3_state_dict(cfg: dict, bf16_window: bool = False) -> dict:
    """Random tensors under the v3 module names (GigaAMASR: preprocessor, encoder, head)."""
    enc = cfg["encoder"]
    d, f, k, ks = enc["d_model"], enc["feat_in"], enc["conv_kernel_size"], enc["subs_kernel_size"]
    ff = d * enc["ff_expansion_factor"]
    n_freq = cfg["preprocessor"]["n_fft"] // 2 + 1
    window = torch.hann_window(cfg["preprocessor"]["win_length"])
    sd = {
        "preprocessor.featurizer.0.spectrogram.window": window.to(torch.bfloat16) if bf16_window else window,
        "preprocessor.featurizer.0.mel_scale.fb": torch.rand(n_freq, cfg["preprocessor"]["features"]),
        "encoder.pre_encode.conv.0.weight": torch.randn(d, f, ks),
        "encoder.pre_encode.conv.0.bias": torch.randn(d),
        "encoder.pre_encode.conv.2.weight": torch.randn(d, d, ks),
        "encoder.pre_encode.conv.2.bias": torch.randn(d),
    }
    shapes = {
        "norm_feed_forward1": [(d,)],
        "norm_self_att": [(d,)],
        "norm_conv": [(d,)],
        "norm_feed_forward2": [(d,)],
        "norm_out": [(d,)],
        "conv.batch_norm": [(d,)],
        "feed_forward1.linear1": [(ff, d), (ff,)],
        "feed_forward1.linear2": [(d, ff), (d,)],
        "feed_forward2.linear1": [(ff, d), (ff,)],
        "feed_forward2.linear2": [(d, ff), (d,)],
        **{f"self_attn.linear_{p}": [(d, d), (d,)] for p in ("q", "k", "v", "out")},
        "conv.pointwise_conv1": [(2 * d, d, 1), (2 * d,)],
        "conv.depthwise_conv": [(d, 1, k), (d,)],
        "conv.pointwise_conv2": [(d, d, 1), (d,)],
    }
    for i in range(enc["n_layers"]):
        for module, (w, *b) in shapes.items():
            sd[f"encoder.layers.{i}.{module}.weight"] = torch.randn(w) if b else torch.ones(w)
            sd[f"encoder.layers.{i}.{module}.bias"] = torch.randn(b[0] if b else w)
    sd["head.decoder_layers.0.weight"] = torch.randn(cfg["head"]["num_classes"], d, 1)
    sd["head.decoder_layers.0.bias"] = torch.randn(cfg["head"]["num_classes"])
    return sd


def save_ckpt(path: Path, cfg: dict, sd: dict) -> Path:
    torch.save({"cfg": OmegaConf.create(cfg), "state_dict": sd}, path)
    return path


def assert_same_tensors(arrays: dict, dtypes: dict, sd: dict):
    assert sorted(arrays) == sorted(sd)
    for name, t in sd.items():
        if t.dtype == torch.bfloat16:
            assert dtypes[name] == "bfloat16"
            np.testing.assert_array_equal(arrays[name], t.view(torch.int16).numpy().view(np.uint16), err_msg=name)
        else:
            assert dtypes[name] == str(t.dtype).removeprefix("torch.")
            np.testing.assert_array_equal(arrays[name], t.numpy(), err_msg=name)


@pytest.fixture
def ckpt(tmp_path):
    cfg = tiny_cfg()
    sd = v3_state_dict(cfg, bf16_window=True)
    return save_ckpt(tmp_path / "v3_ctc.ckpt", cfg, sd), cfg, sd


def test_released_ckpt_reads_as_plain_config_and_tensors(ckpt):
    path, cfg, sd = ckpt
    c = read_gigaam_checkpoint(path)
    assert c.format == "gigaam-ckpt" and c.tokenizer_model is None
    assert c.cfg == cfg
    assert type(c.cfg["encoder"]) is dict and type(c.cfg["decoding"]["vocabulary"]) is list
    assert c.cfg["preprocessor"]["mel_norm"] is None and c.cfg["encoder"]["flash_attn"] is False
    assert_same_tensors(c.tensors, c.dtypes, sd)


def test_format_is_detected_by_content_not_name(ckpt, tmp_path):
    path, cfg, _ = ckpt
    renamed = path.rename(tmp_path / "weights.bin")
    assert detect_format(renamed) == "gigaam-ckpt"
    assert read_gigaam_checkpoint(renamed).cfg == cfg
    text = tmp_path / "v3_ctc.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a GigaAM checkpoint"):
        read_gigaam_checkpoint(text)
    with pytest.raises(ModelNotFoundError):
        read_gigaam_checkpoint(tmp_path / "absent.ckpt")


def test_reading_needs_neither_omegaconf_nor_torch(ckpt):
    path, cfg, sd = ckpt
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["omegaconf"] = None  # any import of it now raises ImportError
        sys.modules["torch"] = None
        sys.modules["hydra"] = None
        from polyasr.models.gigaam.checkpoint import read_gigaam_checkpoint
        c = read_gigaam_checkpoint({str(path)!r})
        sums = {{k: float(v.astype("float64").sum()) for k, v in c.tensors.items()}}
        print(json.dumps({{"cfg": c.cfg, "sums": sums, "dtypes": c.dtypes}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["cfg"] == cfg
    assert got["dtypes"]["preprocessor.featurizer.0.spectrogram.window"] == "bfloat16"
    for name, t in sd.items():
        want = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        assert got["sums"][name] == pytest.approx(float(want.astype(np.float64).sum()), rel=1e-9), name


class _SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


class ArbitraryClass:
    def __init__(self, marker: Path):
        self.marker = str(marker)


@pytest.mark.parametrize(
    "payload, refused",
    [
        (_SystemCall, f"{os.system.__module__}.system"),
        (_Eval, "builtins.eval"),
        (ArbitraryClass, f"{__name__}.ArbitraryClass"),
    ],
)
def test_malicious_pickles_are_refused_before_anything_runs(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    cfg = tiny_cfg()
    path = tmp_path / "evil.ckpt"
    torch.save({"cfg": OmegaConf.create(cfg), "state_dict": v3_state_dict(cfg), "extra": payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        read_gigaam_checkpoint(path)
    assert repr(refused) in str(e.value)
    assert not marker.exists()


def test_tensor_outside_its_storage_is_refused(tmp_path):
    t = torch.arange(6.0)
    bad = torch.as_strided(t, (3,), (2,), 0)  # a valid strided view; its recorded size is corrupted below
    path = tmp_path / "bad.ckpt"
    torch.save({"cfg": {}, "state_dict": {"x": bad}}, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = members[pkl].replace(b"K\x03\x85", b"K\x09\x85", 1)  # size (3,) -> (9,)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(CheckpointError, match="outside its storage"):
        read_gigaam_checkpoint(path)


def test_cyclic_config_is_refused(tmp_path):
    cfg = {"encoder": {}}
    cfg["encoder"]["parent"] = cfg
    path = tmp_path / "cyclic.ckpt"
    torch.save({"cfg": cfg, "state_dict": {"x": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="cyclic"):
        read_gigaam_checkpoint(path)


def hub_dir(tmp_path: Path, cfg: dict, sd: dict, safetensors: bool = False) -> Path:
    """ai-sage/GigaAM-v3 as the hub serves it: GigaAMModel wraps GigaAMASR as `.model`."""
    d = tmp_path / "hub"
    d.mkdir()
    # The hub's single modeling_gigaam.py holds every class: gigaam.encoder.X -> modeling_gigaam.X.
    hub_cfg = json.loads(re.sub(r'"gigaam\.\w+\.', '"modeling_gigaam.', json.dumps(cfg)))
    hub_cfg["decoding"].pop("model_path", None)
    if cfg["decoding"]["vocabulary"] is None:
        hub_cfg["decoding"]["model_path"] = "tokenizer.model"
        (d / "tokenizer.model").write_bytes(b"\x0a\x05fake sentencepiece")
    config = {
        "architectures": ["GigaAMModel"],
        "auto_map": {"AutoConfig": "modeling_gigaam.GigaAMConfig", "AutoModel": "modeling_gigaam.GigaAMModel"},
        "cfg": {"model": {"_target_": "modeling_gigaam.GigaAMASR", "cfg": hub_cfg}},
        "model_type": "gigaam",
        "torch_dtype": "float32",
        "transformers_version": "4.57.1",
    }
    (d / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    prefixed = {f"model.{k}": v for k, v in sd.items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(prefixed, d / "model.safetensors")
    else:
        torch.save(prefixed, d / "pytorch_model.bin")
    marker = tmp_path / "remote_code_ran"
    (d / "modeling_gigaam.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return d


@pytest.mark.parametrize("safetensors", [False, True], ids=["pytorch_model.bin", "model.safetensors"])
def test_hub_layout_reads_without_running_remote_code(tmp_path, safetensors):
    cfg = tiny_cfg(e2e=True, n_classes=257)
    sd = v3_state_dict(cfg)
    d = hub_dir(tmp_path, cfg, sd, safetensors)
    c = read_gigaam_checkpoint(d)
    assert c.format == "hf-hub"
    assert c.cfg["encoder"] == {**cfg["encoder"], "_target_": "modeling_gigaam.ConformerEncoder"}
    assert c.cfg["decoding"]["model_path"] == "tokenizer.model" and c.cfg["head"]["num_classes"] == 257
    assert c.tokenizer_model == d / "tokenizer.model"
    assert_same_tensors(c.tensors, c.dtypes, sd)
    assert not (tmp_path / "remote_code_ran").exists()


def test_convert_round_trip_ckpt_to_safetensors(ckpt, tmp_path, capsys):
    path, cfg, sd = ckpt
    out = tmp_path / "converted"
    assert main(["convert", "--model", "gigaam-v3-ctc", "--model-path", str(path), "--output", str(out)]) == 0
    assert "gigaam-ckpt" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config == {"model_type": "gigaam", "polyasr_format": 1, "gigaam_cfg": cfg}
    c = read_gigaam_checkpoint(out)
    assert c.format == "safetensors" and c.cfg == cfg and c.tokenizer_model is None
    assert_same_tensors(c.tensors, c.dtypes, sd)


def test_convert_e2e_ckpt_copies_its_tokenizer(tmp_path):
    cfg = tiny_cfg(e2e=True, n_classes=257)
    sd = v3_state_dict(cfg)
    path = save_ckpt(tmp_path / "v3_e2e_ctc.ckpt", cfg, sd)
    (tmp_path / "v3_e2e_ctc_tokenizer.model").write_bytes(b"spm-bytes")
    out = tmp_path / "out"
    out.mkdir()  # an existing empty directory is fine
    assert main(["convert", "--model", "gigaam-v3-e2e-ctc", "--model-path", str(path), "-o", str(out)]) == 0
    c = read_gigaam_checkpoint(out)
    assert c.cfg == cfg and c.tokenizer_model.read_bytes() == b"spm-bytes"
    assert_same_tensors(c.tensors, c.dtypes, sd)


def test_convert_hub_layout(tmp_path):
    cfg = tiny_cfg()
    sd = v3_state_dict(cfg)
    out = tmp_path / "out"
    assert (
        main(
            [
                "convert",
                "--model",
                "gigaam-v3-ctc",
                "--model-path",
                str(hub_dir(tmp_path, cfg, sd)),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    c = read_gigaam_checkpoint(out)
    assert c.cfg["head"]["_target_"] == "modeling_gigaam.CTCHead"
    assert_same_tensors(c.tensors, c.dtypes, sd)


def test_write_safetensors_dir_keeps_every_dtype(tmp_path):
    bits = np.array([[0x3F80, 0xC000]], np.uint16)  # bf16 1.0, -2.0
    tensors = {"a": bits, "b": np.arange(3, dtype=np.float16), "c": np.arange(4.0)[::2], "d": np.array([True])}
    dtypes = {"a": "bfloat16", "b": "float16", "c": "float64", "d": "bool"}
    write_safetensors_dir(GigaAMCheckpoint({"x": 1}, tensors, dtypes, None, "gigaam-ckpt"), tmp_path / "o")
    c = read_gigaam_checkpoint(tmp_path / "o")
    assert c.dtypes == dtypes
    for k in tensors:
        np.testing.assert_array_equal(c.tensors[k], tensors[k])
    from safetensors.torch import load_file

    assert load_file(tmp_path / "o" / "model.safetensors")["a"].float().tolist() == [[1.0, -2.0]]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("polyasr: error: "), err
    return err


@pytest.mark.parametrize(
    "case, code, needle",
    [
        ("missing", 4, "does not exist"),
        ("not_empty", 2, "not an empty directory"),
        ("output_is_file", 2, "not an empty directory"),
        ("unknown_format", 4, "no GigaAM checkpoint here"),
        ("not_gigaam", 2, "converts the torch-pickle checkpoints of the gigaam and parakeet models"),
        ("unknown_model", 4, "unknown model id"),
        ("wrong_variant", 4, "use --model gigaam-v3-ctc"),
    ],
)
def test_convert_errors_are_one_line(ckpt, tmp_path, capsys, case, code, needle):
    path, _, _ = ckpt
    model, src, out = "gigaam-v3-ctc", path, tmp_path / "out"
    if case == "missing":
        src = tmp_path / "nowhere.ckpt"
    elif case == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    elif case == "output_is_file":
        out.write_text("x")
    elif case == "unknown_format":
        src = tmp_path / "empty_dir"
        src.mkdir()
    elif case == "not_gigaam":
        model = "whisper-base"
    elif case == "unknown_model":
        model = "gigaam-v9"
    elif case == "wrong_variant":
        model = "gigaam-v3-e2e-ctc"
    rc = main(["convert", "--model", model, "--model-path", str(src), "--output", str(out)])
    assert rc == code
    assert needle in _error_line(capsys)
    if case == "not_empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    elif case == "output_is_file":
        assert out.read_text() == "x"
    else:
        assert not out.exists()
