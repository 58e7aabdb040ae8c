"""The model-family contract (models/base.py): a family is one folder plus one declaration.

A throwaway fifth family is written into a temporary directory: a trivial CTC model (one linear
layer over log-mel frames, greedy CTC) on backend ops, with its own checkpoint format
(toy.json + toy.npz, written here). Registered through `polyasr.registry.register_family`, it
loads with `AsrEngine.from_model`, transcribes, is found by the checkpoint search, and is listed
and run by the CLI, with no edit to polyasr itself. The built-in families' declarations and the
engine's handling of `ModelOutput` are checked here too.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf

from polyasr import AsrEngine, InvalidOptionError, TranscribeOptions
from polyasr.cli import main
from polyasr.locate import locate_checkpoint
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.registry import FAMILIES, REGISTRY, get_spec, register_family, unregister_family
from polyasr.result import Segment

SR = 16000
N_MELS = 16

_INIT = '''
"""A toy CTC family: one linear layer over log-mel frames."""

from polyasr.models.base import AVAILABLE, CheckpointLayout, Family, ModelSpec

FAMILY = Family(
    name="toyctc",
    specs=(
        ModelSpec(
            id="toy-ctc",
            family="toyctc",
            architecture="linear over log-mel + CTC",
            languages="English",
            status=AVAILABLE,
            formats=("toy-npz",),
            language_codes=("en",),
        ),
    ),
    loader="toyctc.pipeline:load_model",
    layout=CheckpointLayout(markers=(("toy.json", "toy.npz"),), weights=("toy.npz",)),
)
'''

_CHECKPOINT = '''
"""toy.json (n_mels, vocabulary) + toy.npz (proj.weight (V + 1, n_mels), proj.bias (V + 1,))."""

import json
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError


def read(path):
    directory = Path(path)
    cfg = json.loads((directory / "toy.json").read_text())
    with np.load(directory / "toy.npz", allow_pickle=False) as f:
        tensors = {k: f[k] for k in f.files}
    want = {"proj.weight": (len(cfg["vocabulary"]) + 1, cfg["n_mels"]), "proj.bias": (len(cfg["vocabulary"]) + 1,)}
    if {k: v.shape for k, v in tensors.items()} != want:
        raise CheckpointError(f"{directory}: toy.npz holds {sorted(tensors)}, expected {want}")
    return cfg, tensors
'''

_PIPELINE = '''
"""audio -> log-mel -> linear -> log-softmax -> greedy CTC -> one segment per token."""

import time

import numpy as np

from polyasr.audio import pad_batch
from polyasr.kernels.mel_tables import MelConfig
from polyasr.models.base import AsrModel, ModelOutput
from polyasr.models.ctc_decode import ctc_greedy
from polyasr.result import Segment
from toyctc.checkpoint import read


class ToyModel(AsrModel):
    def __init__(self, spec, path, B):
        cfg, tensors = read(path)
        self.name, self.B, self.languages = spec.id, B, spec.language_codes
        self.vocabulary = cfg["vocabulary"]
        self.mel = MelConfig(n_mels=cfg["n_mels"], log="ln", log_guard=1e-6, log_guard_type="add")
        self.weight = B.prepare_linear(B.param(tensors["proj.weight"]))
        self.bias = B.param(tensors["proj.bias"])

    def _transcribe(self, audio, opts, progress=None):
        t0 = time.perf_counter()
        with self.B.no_grad():
            feats, frames = self.B.log_mel(*pad_batch([audio]), self.mel)
            x = self.B.transpose(feats, (0, 2, 1))
            ids = self.B.to_numpy(self.B.argmax(self.B.log_softmax(self.B.linear(x, self.weight, self.bias))))
        ((tokens, positions),) = ctc_greedy(ids.astype(np.int64), frames, blank=len(self.vocabulary))
        hop = self.mel.hop_length / self.sample_rate
        segments = [
            Segment(round(p * hop, 3), round((p + 1) * hop, 3), " " + self.vocabulary[t], 1.0, [int(t)])
            for t, p in zip(tokens.tolist(), positions.tolist())
        ]
        timings = {"encoder": time.perf_counter() - t0}
        return ModelOutput(segments, self.reported_language(opts), checkpoint_format="toy-npz", timings=timings)


def load_model(spec, path, B):
    return ToyModel(spec, path, B)
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """The toy family's package written and registered; removed again afterwards."""
    package = tmp_path / "code" / "toyctc"
    package.mkdir(parents=True)
    for name, text in (("__init__", _INIT), ("checkpoint", _CHECKPOINT), ("pipeline", _PIPELINE)):
        (package / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    import toyctc

    register_family(toyctc.FAMILY)
    yield toyctc.FAMILY
    unregister_family("toyctc")
    for name in [m for m in sys.modules if m == "toyctc" or m.startswith("toyctc.")]:
        del sys.modules[name]


@pytest.fixture
def toy_checkpoint(tmp_path):
    """'hi' on loud frames (mean ln-mel above -5), blank on silence; 'there' never wins."""
    directory = tmp_path / "toy"
    directory.mkdir()
    (directory / "toy.json").write_text(json.dumps({"n_mels": N_MELS, "vocabulary": ["hi", "there"]}))
    weight = np.zeros((3, N_MELS), np.float32)
    weight[0] = 1.0 / N_MELS
    bias = np.array([5.0, -100.0, 0.0], np.float32)
    np.savez(directory / "toy.npz", **{"proj.weight": weight, "proj.bias": bias})
    return directory


def _two_bursts() -> np.ndarray:
    """0.5 s silence, 0.5 s noise, 0.5 s silence, 0.5 s noise, 0.5 s silence."""
    rng = np.random.default_rng(0)
    audio = np.zeros(int(2.5 * SR), np.float32)
    for start in (0.5, 1.5):
        a = int(start * SR)
        audio[a : a + SR // 2] = 0.3 * rng.standard_normal(SR // 2)
    return audio


def test_a_fifth_family_loads_transcribes_and_is_listed(toy_family, toy_checkpoint, tmp_path, capsys):
    engine = AsrEngine.from_model("toy-ctc", toy_checkpoint, device="cpu")
    result = engine.transcribe(_two_bursts())
    assert result.text == "hi hi" and result.language == "en" and result.model_name == "toy-ctc"
    assert [s.start for s in result.segments] == pytest.approx([0.5, 1.5], abs=0.03)
    assert result.info["checkpoint_format"] == "toy-npz" and result.info["chunks"] == 1
    assert result.info["device"] == "cpu" and set(result.timings) >= {"encoder", "total"}
    # the declared layout is what the checkpoint search recognises
    spec = get_spec("toy-ctc")
    assert locate_checkpoint(spec, toy_checkpoint) == toy_checkpoint.resolve()

    assert main(["models", "list"]) == 0
    assert "toy-ctc" in capsys.readouterr().out
    wav = tmp_path / "bursts.wav"
    sf.write(wav, _two_bursts(), SR)
    args = ["transcribe", str(wav), "--model", "toy-ctc", "--model-path", str(toy_checkpoint), "--device", "cpu"]
    assert main(args + ["--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "hi hi"
    # the base class refuses what the declaration does not support, for the new family too
    assert main(args + ["--language", "ru"]) == InvalidOptionError.exit_code
    assert "'ru'" in capsys.readouterr().err
    assert main(["convert", "--model", "toy-ctc", "--model-path", str(toy_checkpoint), "-o", str(tmp_path / "o")]) != 0
    assert "load as they are" in capsys.readouterr().err


def test_registering_a_taken_id_or_family_is_refused(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        register_family(toy_family)
    clash = type(toy_family)(name="other", specs=(REGISTRY["whisper-base"],), loader=None, layout=toy_family.layout)
    with pytest.raises(ValueError, match="names family 'whisper'"):
        register_family(clash)


def test_builtin_families_declare_every_id():
    assert list(FAMILIES) == ["whisper", "gigaam", "parakeet", "qwen3_asr", "qwen3_forced_aligner"]
    assert {s.id for f in FAMILIES.values() for s in f.specs} == set(REGISTRY)
    assert {s.family for s in REGISTRY.values()} == set(FAMILIES)
    assert get_spec("parakeet-tdt-0.6b-v2").language_codes == ("en",)
    assert len(get_spec("parakeet-tdt-v3").language_codes) == 25
    assert get_spec("gigaam-v3-e2e-ctc").language_codes == ("ru",)


# ---- the base class and the engine ---------------------------------------------------------------
class _Echo(AsrModel):
    """Reports the audio length as text; sleeps `delay` seconds per call."""

    def __init__(self, languages=None, batched=False, delay=0.0):
        self.name, self.languages, self.delay = "echo", languages, delay
        self.capabilities = Capabilities(batched_inputs=batched)

    def _transcribe(self, audio, opts, progress=None):
        time.sleep(self.delay)
        return ModelOutput([Segment(0.0, 1.0, f" {len(audio)}", 1.0)], self.reported_language(opts), timings={"x": 1.0})

    def _transcribe_many(self, audios, opts, progress=None):
        if not self.capabilities.batched_inputs:
            return super()._transcribe_many(audios, opts, progress)
        time.sleep(self.delay)
        return [
            ModelOutput([Segment(0.0, 1.0, f" {len(a)}", 1.0)], None, timings={"x": 1.0}, extra={"n": len(audios)})
            for a in audios
        ]


def test_forced_language_is_checked_once_for_every_family():
    model = _Echo(languages=("en", "de"))
    with pytest.raises(InvalidOptionError, match=r"'fr'.*supports: en, de"):
        model.transcribe(np.zeros(10, np.float32), TranscribeOptions(language="fr"))
    assert model.transcribe(np.zeros(10, np.float32), TranscribeOptions(language="de")).language == "de"
    assert model.transcribe(np.zeros(10, np.float32), TranscribeOptions()).language is None
    assert _Echo(languages=("ru",)).transcribe(np.zeros(3, np.float32), TranscribeOptions()).language == "ru"
    with pytest.raises(InvalidOptionError, match="only transcribes"):
        model.transcribe(np.zeros(10, np.float32), TranscribeOptions(task="translate"))


def test_default_transcribe_many_runs_one_by_one_with_one_progress():
    seen = []
    outs = _Echo().transcribe_many([np.zeros(3, np.float32), np.zeros(5, np.float32)], TranscribeOptions(), seen.append)
    assert [o.segments[0].text for o in outs] == [" 3", " 5"] and seen == []  # _Echo reports no progress
    assert ModelOutput([], None).info() == {
        "checkpoint_format": None,
        "chunks": 1,
        "language_probability": None,
        "first_token_latency_secs": None,
    }


class _Backend:
    """The attributes the engine reads of a backend (the protocol's identity members)."""

    device, dtype_name, kernels = "cpu", "float32", "torch"
    quantization, quantized_layers, full_precision_layers = None, 0, 0

    def synchronize(self):
        pass


def _engine(model) -> AsrEngine:
    return AsrEngine(model, get_spec("whisper-base"), _Backend(), checkpoint=None, load_secs=0.0)


def _files(tmp_path, seconds):
    paths = []
    for i, s in enumerate(seconds):
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(paths[-1], np.zeros(int(s * SR), np.float32), SR)
    return paths


def test_transcribe_files_one_by_one_times_each_file(tmp_path, monkeypatch):
    """Without batched decoding each result is `transcribe_file`'s, load_audio measured per file."""
    import polyasr.engine as engine_module

    real = engine_module.load_audio
    slow_first = lambda path: (time.sleep(0.2) if path.name == "f0.wav" else None, real(path))[1]  # noqa: E731
    monkeypatch.setattr(engine_module, "load_audio", slow_first)
    engine = _engine(_Echo(delay=0.05))
    a, b = engine.transcribe_files(_files(tmp_path, (1.0, 2.0)))
    assert a.timings["load_audio"] >= 0.2 > b.timings["load_audio"]
    assert a.inference_time_secs >= 0.05 and b.inference_time_secs >= 0.05
    assert a.rtf == pytest.approx(a.inference_time_secs / 1.0, abs=1e-4)
    assert b.rtf == pytest.approx(b.inference_time_secs / 2.0, abs=1e-4)
    assert "batched_files" not in a.info and a.timings["x"] == 1.0


def test_transcribe_files_batched_reports_the_whole_call(tmp_path):
    """With batched decoding the decode time of one file does not exist: each result carries the
    call's wall time, and its rtf is that time over all the files' audio."""
    engine = _engine(_Echo(batched=True, delay=0.3))
    results = engine.transcribe_files(_files(tmp_path, (1.0, 3.0)))
    assert [r.text for r in results] == ["16000", "48000"]
    assert results[0].inference_time_secs == results[1].inference_time_secs >= 0.3
    assert all(r.rtf == pytest.approx(r.inference_time_secs / 4.0, abs=1e-4) for r in results)
    assert all(r.info["batched_files"] == 2 and r.info["n"] == 2 for r in results)
    assert results[1].audio_duration_secs == 3.0


# ---- shared network pieces -----------------------------------------------------------------------
def test_one_prepare_lays_out_what_param_shapes_declares():
    from polyasr.models.layers import ParamShapes, prepare

    class Layout:
        def prepare_linear(self, w, many_rows=False):
            return ("linear", w.shape, many_rows)

        def contiguous(self, w):
            return ("contiguous", w.shape)

    shapes = ParamShapes()
    shapes.linear("a", 4, 3)
    shapes.linear("s", 4, 3, bias=False, many_rows=True)
    shapes.linear("f", 4, 3, bias=False, many_rows=1500)
    shapes.conv1x1("b", 4, 3, bias=False)
    shapes.depthwise("c", 4, 5)
    shapes.norm("n", 4)
    shapes["emb.weight"], shapes["u"], shapes.kinds["u"] = (7, 4), (2, 2), "per_head"
    params = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    out = prepare(params, shapes, Layout())
    assert shapes == {
        "a.weight": (4, 3),
        "a.bias": (4,),
        "s.weight": (4, 3),
        "f.weight": (4, 3),
        "b.weight": (4, 3, 1),
        "c.weight": (4, 1, 5),
        "c.bias": (4,),
        "n.weight": (4,),
        "n.bias": (4,),
        "emb.weight": (7, 4),
        "u": (2, 2),
    }
    assert out["a.weight"] == ("linear", (4, 3), False) and out["b.weight"] == ("linear", (4, 3), True)
    assert out["s.weight"] == ("linear", (4, 3), True) and out["f.weight"] == ("linear", (4, 3), 1500)
    assert shapes.rows == {"f.weight": 1500}  # a fixed row count reaches the backend; True is not one
    assert out["c.weight"] == ("contiguous", (4, 5)) and out["u"] == ("contiguous", (2, 1, 2))
    assert all(out[n] is params[n] for n in ("a.bias", "c.bias", "n.weight", "emb.weight"))
    assert "a.weight" not in prepare({"x": params["a.bias"]}, shapes, Layout())  # a subset is fine


@pytest.mark.parametrize("kernel", [3, 5])
def test_stage_lengths_is_the_conv_output_length(kernel):
    """floor((L + 2 * pad - k) / 2) + 1, as torch's Conv1d computes it, for every length incl. 0 and 1."""
    import torch

    from polyasr.models.conformer import stage_lengths, subsampled_lengths

    conv = torch.nn.Conv1d(1, 1, kernel, stride=2, padding=(kernel - 1) // 2)
    lengths = np.arange(1, 40)
    expected = [conv(torch.zeros(1, 1, n)).shape[-1] for n in lengths]
    assert stage_lengths(lengths, kernel).tolist() == expected
    assert subsampled_lengths([1000], kernel, 3).tolist() == [
        stage_lengths(stage_lengths(stage_lengths([1000], kernel), kernel), kernel)[0]
    ]
