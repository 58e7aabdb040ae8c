"""`.nemo` archives as users get them, and as attackers make them: checked before anything runs.

A bad member (`../`, an absolute path, a link, a device), a pickle that is not plain tensors or
a YAML config with object tags is refused with a CheckpointError naming the problem, and nothing
is written outside a temporary directory (which is gone afterwards)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import tempfile

import pytest
import yaml
from parakeet_refs import (
    feature_extractor,
    nemo_config,
    nemo_state_dict,
    random_model,
    tiny_config,
    train_sentencepiece,
    write_nemo,
)

from polyasr.errors import CheckpointError, WeightsMismatchError
from polyasr.models.parakeet.checkpoint import read_parakeet_checkpoint
from polyasr.models.parakeet.config import ParakeetConfig
from polyasr.models.parakeet.pipeline import ParakeetModel

pytest.importorskip("transformers")  # the reference the checkpoints are made from

VOCAB = 40


@pytest.fixture(scope="module")
def parts():
    config = tiny_config(VOCAB, num_hidden_layers=1)
    model = random_model(config)
    return model, feature_extractor(config), train_sentencepiece(VOCAB)


def _pieces(sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(sp_model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _temp_dirs():
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("polyasr-nemo-")}


def _member(name, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return (info, io.BytesIO(data)) if info.isfile() else info


def test_good_archive_loads_and_leaves_no_files(parts, tmp_path):
    model, fe, sp = parts
    before = _temp_dirs()
    ckpt = read_parakeet_checkpoint(write_nemo(model, fe, sp, tmp_path / "m.nemo"))
    assert ckpt.format == "nemo" and ckpt.cfg.vocab_size == VOCAB and ckpt.cfg.durations == (0, 1, 2, 3, 4)
    assert ckpt.tokenizer.piece(5) == _pieces(sp)[5]
    assert _temp_dirs() == before  # the extracted weights are gone (memory-mapped on POSIX)
    # a directory holding one .nemo is the same checkpoint
    assert read_parakeet_checkpoint(tmp_path).cfg == ckpt.cfg


@pytest.mark.parametrize(
    "member, why",
    [
        (("../escaped.txt",), "outside"),
        (("/tmp/polyasr-absolute-test.txt",), "absolute"),
        (("sub/../../escaped.txt",), "outside"),
    ],
)
def test_traversal_members_are_refused(parts, tmp_path, member, why):
    model, fe, sp = parts
    path = write_nemo(model, fe, sp, tmp_path / "archive" / "m.nemo", extra_members=[_member(member[0])])
    before = _temp_dirs()
    with pytest.raises(CheckpointError, match=why):
        read_parakeet_checkpoint(path)
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/polyasr-absolute-test.txt")
    assert _temp_dirs() == before


@pytest.mark.parametrize(
    "kind, attrs",
    [
        ("symlink", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("hardlink", {"type": tarfile.LNKTYPE, "linkname": "model_config.yaml"}),
        ("device", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    ],
)
def test_link_and_device_members_are_refused(parts, tmp_path, kind, attrs):
    model, fe, sp = parts
    info = tarfile.TarInfo(f"./{kind}")
    for k, v in attrs.items():
        setattr(info, k, v)
    path = write_nemo(model, fe, sp, tmp_path / "m.nemo", extra_members=[info])
    with pytest.raises(CheckpointError, match="link|special"):
        read_parakeet_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/polyasr-pwned-by-nemo",))


def test_pickle_that_is_not_plain_tensors_is_refused_without_running(parts, tmp_path):
    model, fe, sp = parts
    sd = nemo_state_dict(model, fe)
    sd["encoder.pre_encode.out.weight"] = _Exploit()
    buf = io.BytesIO()
    pickle.dump(sd, buf)  # a legacy-format pickle with a code-running object inside
    path = write_nemo(model, fe, sp, tmp_path / "m.nemo", state_dict={})
    # replace the weights member with the malicious pickle
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            data = buf.getvalue() if m.name.endswith("model_weights.ckpt") else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(CheckpointError, match="safely"):
        read_parakeet_checkpoint(path)
    assert not os.path.exists("/tmp/polyasr-pwned-by-nemo")


def test_yaml_with_object_tags_is_refused(parts, tmp_path):
    model, fe, sp = parts
    path = write_nemo(model, fe, sp, tmp_path / "m.nemo")
    evil = b"encoder: !!python/object/apply:os.system ['touch /tmp/polyasr-pwned-by-yaml']\n"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            data = evil if m.name.endswith("model_config.yaml") else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(CheckpointError, match="plain YAML"):
        read_parakeet_checkpoint(path)
    assert not os.path.exists("/tmp/polyasr-pwned-by-yaml")


def test_not_an_archive_and_missing_members(tmp_path):
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable .nemo"):
        read_parakeet_checkpoint(junk)
    empty = tmp_path / "empty.nemo"
    with tarfile.open(empty, "w") as tar:
        info, data = _member("./readme.txt")
        tar.addfile(info, data)
    with pytest.raises(CheckpointError, match="lacks model_config.yaml, model_weights.ckpt"):
        read_parakeet_checkpoint(empty)


def test_missing_and_misshapen_tensors_are_named(parts, tmp_path):
    model, fe, sp = parts
    sd = nemo_state_dict(model, fe)
    del sd["encoder.layers.0.self_attn.pos_bias_u"]
    sd["joint.enc.weight"] = sd["joint.enc.weight"][:, :5].clone()
    ckpt = read_parakeet_checkpoint(write_nemo(model, fe, sp, tmp_path / "m.nemo", state_dict=sd))
    from polyasr.backends.torch import TorchBackend

    with pytest.raises(WeightsMismatchError) as err:
        ParakeetModel("parakeet-tdt-v3", ckpt, TorchBackend("cpu"))
    assert "encoder.layers.0.self_attn.pos_bias_u" in str(err.value) and "joint.enc.weight" in str(err.value)


@pytest.mark.parametrize("dropout, out", [(0.0, "joint_net.1"), (0.2, "joint_net.2")])
def test_joint_layout_follows_the_configured_dropout(parts, tmp_path, dropout, out):
    """NeMo inserts the joint's Dropout module only when jointnet.dropout > 0, shifting the output
    layer's index; the archive's config says which, and a file that disagrees is refused by name."""
    import numpy as np

    model, fe, sp = parts
    path = write_nemo(model, fe, sp, tmp_path / "m.nemo", joint_dropout=dropout)
    ckpt = read_parakeet_checkpoint(path)
    assert f"joint.{out}.weight" in ckpt.tensors
    from polyasr.backends.torch import TorchBackend

    loaded = ParakeetModel("parakeet-tdt-v3", ckpt, TorchBackend("cpu"))
    head = model.state_dict()["joint.head.weight"].numpy()
    assert np.array_equal(loaded.transducer.host["out_w"], head)
    wrong = nemo_state_dict(model, fe, joint_dropout=0.2 if dropout == 0.0 else 0.0)
    ckpt = read_parakeet_checkpoint(
        write_nemo(model, fe, sp, tmp_path / "w.nemo", state_dict=wrong, joint_dropout=dropout)
    )
    with pytest.raises(WeightsMismatchError, match="joint_net"):
        ParakeetModel("parakeet-tdt-v3", ckpt, TorchBackend("cpu"))


def test_unsupported_configurations_name_the_field(parts):
    model, fe, sp = parts
    base = nemo_config(model, fe, _pieces(sp))
    local = yaml.safe_load(yaml.safe_dump(base))
    local["encoder"]["att_context_size"] = [128, 128]
    with pytest.raises(CheckpointError, match="att_context_size"):
        ParakeetConfig.from_nemo(local)
    bad = yaml.safe_load(yaml.safe_dump(base))
    bad["joint"]["num_extra_outputs"] = 3
    with pytest.raises(CheckpointError, match="num_extra_outputs 3"):
        ParakeetConfig.from_nemo(bad)
    for key, value in (
        ("normalization_mode", "layer"),
        ("prednet", {**base["decoder"]["prednet"], "rnn_hidden_size": 64}),
    ):
        other = yaml.safe_load(yaml.safe_dump(base))
        other["decoder"][key] = value
        with pytest.raises(CheckpointError, match=key if key == "normalization_mode" else "rnn_hidden_size"):
            ParakeetConfig.from_nemo(other)
    cycle = yaml.safe_load(yaml.safe_dump(base))
    cycle["model_defaults"]["pred_hidden"] = "${decoder.prednet.pred_hidden}"
    with pytest.raises(CheckpointError, match="cycle"):
        ParakeetConfig.from_nemo(cycle)


def test_interpolations_resolve_to_the_referenced_values(parts):
    model, fe, sp = parts
    cfg = ParakeetConfig.from_nemo(nemo_config(model, fe, _pieces(sp)))
    assert cfg.pred_hidden == cfg.joint_hidden == model.config.decoder_hidden_size
    assert cfg.durations == tuple(model.config.durations)


def test_convert_nemo_to_safetensors_loads_the_same_model(parts, tmp_path, capsys):
    """`polyasr convert` turns the .nemo (a torch pickle inside) into a directory that loads without torch
    (tests/models/test_mlx_parity.py runs it with torch blocked): same config, tensors and transcript."""
    import numpy as np

    from polyasr import AsrEngine
    from polyasr.cli import main

    archive = write_nemo(*parts, tmp_path / "tiny.nemo")
    out = tmp_path / "converted"
    assert main(["convert", "--model", "parakeet-tdt-v3", "--model-path", str(archive), "-o", str(out)]) == 0
    assert "(nemo," in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "model_config.yaml", "tokenizer.model"]
    a, b = read_parakeet_checkpoint(archive), read_parakeet_checkpoint(out)
    assert b.format == "nemo-safetensors" and a.cfg == b.cfg and sorted(a.tensors) == sorted(b.tensors)
    for name, t in a.tensors.items():
        assert b.dtypes[name] == a.dtypes[name] and np.array_equal(b.tensors[name], t), name
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    ra, rb = (AsrEngine.from_model("parakeet-tdt-v3", p, device="cpu").transcribe(audio) for p in (archive, out))
    assert [s.tokens for s in ra.segments] == [s.tokens for s in rb.segments]
    assert main(["convert", "--model", "parakeet-tdt-v3", "--model-path", str(archive), "-o", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
