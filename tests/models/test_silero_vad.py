"""Silero VAD on our backends against silero-vad's own model (`load_silero_vad()`, test-only).

Per-window probabilities within 1e-4 (they are sigmoids of sums of a few hundred fp32 terms per
layer; the ops differ from the TorchScript model's only in summation order, measured ~1e-5) and the
same speech regions, sample for sample, from silero's `get_speech_timestamps` on speech, silence,
noise, tones and speech with pauses; the region rules alone against silero's
`get_speech_timestamps_from_probs` on random probabilities and every option; 8 kHz and stereo
input; batching and blocking change nothing; bad options and missing weights are clear errors.
"""

from __future__ import annotations

import math
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_close

torch = pytest.importorskip("torch")
_threads = torch.get_num_threads()
silero_vad = pytest.importorskip("silero_vad")
torch.set_num_threads(_threads)  # importing silero_vad sets one thread for the whole process

from polyasr.audio import load_audio, validate_samples  # noqa: E402
from polyasr.errors import (  # noqa: E402
    CheckpointError,
    InvalidOptionError,
    ModelNotFoundError,
    WeightsMismatchError,
)
from polyasr.models.silero_vad import pipeline, weights  # noqa: E402
from polyasr.vad import (  # noqa: E402
    SpeechRegion,
    VadOptions,
    batch_speech_timestamps,
    load_vad,
    speech_probabilities,
    speech_timestamps,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero's torch.jit.load / importlib use

PROB_ATOL = 1e-4
FIXTURES = [
    "en_short.wav",
    "en_medium.wav",
    "ru_short.wav",
    "silence.wav",
    "noise.flac",
    "tones.flac",
    "speech_pauses.flac",
]
OPTION_SETS = [
    {},
    {"threshold": 0.7, "neg_threshold": 0.2, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"threshold": 0.3, "min_speech_duration_ms": 1000, "speech_pad_ms": 0},
    {"max_speech_duration_s": 2.0},
    {"max_speech_duration_s": 1.5, "use_max_poss_sil_at_max_speech": False},
    {"max_speech_duration_s": 3.0, "min_silence_at_max_speech": 300, "min_silence_duration_ms": 500},
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread in this module only, as silero-vad itself sets: its window-by-window model
    (the reference) slows down many times over when threads contend for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def silero():
    return silero_vad.load_silero_vad()


def silero_probs(model, audio: np.ndarray) -> np.ndarray:
    """What get_speech_timestamps computes: the model on each 512-sample window, the last zero-padded."""
    model.reset_states()
    x = torch.from_numpy(audio)
    out = []
    for i in range(0, len(audio), 512):
        chunk = torch.nn.functional.pad(x[i : i + 512], (0, max(0, i + 512 - len(audio))))
        out.append(model(chunk, 16000).item())
    return np.array(out)


def silero_regions(model, audio: np.ndarray, **opts) -> list[tuple[int, int]]:
    found = silero_vad.get_speech_timestamps(torch.from_numpy(audio), model, **opts)
    return [(r["start"], r["end"]) for r in found]


def read(fixtures_dir, name) -> np.ndarray:
    audio, rate = sf.read(fixtures_dir / name, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


@pytest.fixture(scope="module")
def reference(silero, fixtures_dir):
    """name -> (audio, silero's probabilities, silero's regions with default options), computed once."""
    out = {}
    for name in FIXTURES:
        audio = read(fixtures_dir, name)
        out[name] = (audio, silero_probs(silero, audio), silero_regions(silero, audio))
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_probabilities_and_regions_match_silero(reference, name):
    audio, probs, regions = reference[name]
    assert_close(speech_probabilities(audio), probs, atol=PROB_ATOL, what=f"{name} probabilities")
    assert speech_timestamps(audio) == regions
    if name in ("silence.wav", "noise.flac", "tones.flac"):
        assert regions == []
    else:
        assert regions and all(isinstance(r, SpeechRegion) for r in speech_timestamps(audio))


@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("name", ["en_medium.wav", "speech_pauses.flac"])
def test_options_match_silero(reference, name, opts):
    audio, probs, _ = reference[name]
    expected = silero_vad.get_speech_timestamps_from_probs(list(probs), audio_length_samples=len(audio), **opts)
    assert speech_timestamps(audio, **opts) == [(r["start"], r["end"]) for r in expected]


def test_long_speech_matches_silero_end_to_end(silero, fixtures_dir):
    """73 s across many blocks and a max-speech cut, through silero's whole get_speech_timestamps."""
    audio = read(fixtures_dir, "en_long.wav")
    opts = {"max_speech_duration_s": 8.0, "speech_pad_ms": 60}
    assert speech_timestamps(audio, **opts) == silero_regions(silero, audio, **opts)


def _random_probs(rng, n: int) -> np.ndarray:
    """Runs of speech and pauses of random lengths, with jitter around the thresholds."""
    levels, out = [0.02, 0.2, 0.4, 0.45, 0.5, 0.55, 0.9, 1.0], []
    while len(out) < n:
        out += [rng.choice(levels)] * int(rng.integers(1, 40))
    probs = np.clip(np.array(out[:n]) + rng.normal(0, 0.03, n) * (rng.random(n) < 0.3), 0, 1)
    return probs.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_region_rules_match_silero_on_random_probabilities(seed):
    rng = np.random.default_rng(seed)
    cfg = load_vad().cfg
    for _ in range(25):
        probs = _random_probs(rng, int(rng.integers(1, 900)))
        n = len(probs) * 512 - int(rng.integers(0, 512))
        opts = {
            "threshold": float(rng.choice([0.3, 0.5, 0.55])),
            "neg_threshold": [None, 0.1, 0.35][int(rng.integers(3))],
            "min_speech_duration_ms": int(rng.choice([0, 100, 250, 600])),
            "max_speech_duration_s": float(rng.choice([math.inf, 1.0, 2.5, 6.0])),
            "min_silence_duration_ms": int(rng.choice([0, 50, 100, 400])),
            "speech_pad_ms": int(rng.choice([0, 10, 30, 150])),
            "min_silence_at_max_speech": int(rng.choice([40, 98, 300])),
            "use_max_poss_sil_at_max_speech": bool(rng.integers(2)),
        }
        if opts["neg_threshold"] is not None and opts["neg_threshold"] > opts["threshold"]:
            opts["neg_threshold"] = opts["threshold"]
        expected = silero_vad.get_speech_timestamps_from_probs(
            [float(p) for p in probs], audio_length_samples=n, **opts
        )
        rules = pipeline.RegionRules.from_options(VadOptions(**opts), cfg)
        assert pipeline.speech_regions(probs, n, rules, 512) == [(r["start"], r["end"]) for r in expected], opts


def test_batch_and_blocks_change_nothing(reference, monkeypatch):
    names = ["en_medium.wav", "ru_short.wav", "silence.wav", "speech_pauses.flac"]
    audios = [reference[n][0] for n in names]
    alone = [speech_probabilities(a) for a in audios]
    batched = speech_probabilities(audios)
    for name, a, b in zip(names, alone, batched):
        assert_close(b, a, atol=1e-5, what=f"{name} in a batch")
    monkeypatch.setattr(pipeline, "_BLOCK_WINDOWS", 64)  # blocks of 64 / 4 rows -> 64 windows: many LSTM hand-overs
    for name, a, b in zip(names, alone, speech_probabilities(audios)):
        assert_close(b, a, atol=1e-5, what=f"{name} in blocks of 64 windows")
    regions = batch_speech_timestamps(audios)
    assert regions == [speech_timestamps(a) for a in audios]


def _float64_probabilities(audio: np.ndarray) -> np.ndarray:
    """Our network (silero's weights) computed in float64 on the torch backend, which offers only
    fp32 / fp16 / bf16 to users: its dtype table is widened for this call."""
    from polyasr.backends import torch as torch_backend
    from polyasr.models.silero_vad.pipeline import SileroVAD

    dtypes = torch_backend._DTYPES
    try:
        torch_backend._DTYPES = {**dtypes, "float64": torch.float64}
        vad = SileroVAD.load(torch_backend.TorchBackend("cpu", "float64"), None, "jit")
        return vad.probabilities([audio.astype(np.float64)])[0]
    finally:
        torch_backend._DTYPES = dtypes


def test_8khz_input_is_resampled(silero, fixtures_dir):
    audio16 = read(fixtures_dir, "speech_pauses.flac")
    import soxr

    audio8 = soxr.resample(audio16, 16000, 8000, quality="HQ").astype(np.float32)
    up = validate_samples(audio8, source_rate=8000)  # what we run: the 8 kHz signal at 16 kHz
    assert len(up) == 2 * len(audio8)
    ours, theirs = speech_probabilities(audio8, 8000), silero_probs(silero, up)
    # On some CPUs silero's own fp32 model is ~1e-4 off on a window of this signal: the float64 run
    # of the same network (`_float64_probabilities`) is the arbiter. Ours stays within PROB_ATOL of
    # it, and of silero's within PROB_ATOL plus silero's own distance from it.
    truth = _float64_probabilities(up)
    assert_close(ours, truth, atol=PROB_ATOL, what="8 kHz, against the float64 network")
    theirs_error = float(np.abs(theirs - truth).max())
    assert_close(ours, theirs, atol=PROB_ATOL + theirs_error, what="8 kHz, against silero's model")
    expected = [(s // 2, -(-e // 2)) for s, e in silero_regions(silero, up)]
    assert expected and speech_timestamps(audio8, sample_rate=8000) == expected


def test_stereo_input_is_mixed_down(silero, fixtures_dir):
    path = fixtures_dir / "en_short_stereo_44k.flac"
    stereo, rate = sf.read(path, dtype="float32")
    assert stereo.shape[1] == 2 and rate == 44100
    mono16 = load_audio(path)  # polyasr's downmix and resampler, as the VAD uses them
    expected16 = silero_regions(silero, mono16)
    expected = [(s * rate // 16000, -(-e * rate // 16000)) for s, e in expected16]
    assert expected and speech_timestamps(stereo, sample_rate=rate) == expected
    assert speech_timestamps(stereo.T.copy(), sample_rate=rate) == expected  # channels-first
    assert speech_timestamps(str(path)) == expected16  # a path: regions in 16 kHz samples
    assert_close(speech_probabilities(stereo, rate), silero_probs(silero, mono16), atol=PROB_ATOL, what="stereo")


def test_no_speech_is_empty_not_an_error():
    assert speech_timestamps(np.zeros(0, np.float32)) == []
    assert speech_timestamps(np.zeros(100, np.float32)) == []
    assert speech_timestamps(np.zeros(16000 * 3, np.int16)) == []
    assert speech_probabilities(np.zeros(0, np.float32)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"neg_threshold": -0.2}, "neg_threshold"),
        ({"threshold": 0.4, "neg_threshold": 0.6}, "neg_threshold"),
        ({"min_speech_duration_ms": -1}, "min_speech_duration_ms"),
        ({"min_silence_duration_ms": -5}, "min_silence_duration_ms"),
        ({"speech_pad_ms": -30}, "speech_pad_ms"),
        ({"max_speech_duration_s": 0}, "max_speech_duration_s"),
        ({"max_speech_duration_s": 0.05}, "max_speech_duration_s"),
        ({"min_silence_at_max_speech": -1}, "min_silence_at_max_speech"),
        ({"threshold": "0.5"}, "threshold"),
    ],
)
def test_bad_options_name_the_option(kwargs, name):
    with pytest.raises(InvalidOptionError, match=name):
        speech_timestamps(np.zeros(16000, np.float32), **kwargs)


def test_missing_package_says_what_to_install(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(ModelNotFoundError, match=r"pip install silero-vad.*--no-deps silero-vad"):
        weights.find_weights()
    with pytest.raises(ModelNotFoundError, match="do not exist"):
        weights.find_weights("/nonexistent/silero_vad.jit")
    with pytest.raises(InvalidOptionError, match="format"):
        weights.find_weights(fmt="onnx")


def test_weights_mismatch_names_the_tensor(tmp_path):
    from polyasr.models.checkpoint_io import read_safetensors, write_safetensors

    tensors, tags = read_safetensors(weights.find_weights(fmt="safetensors"))
    tensors = dict(tensors)
    del tensors["conv2.bias"]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    tensors["conv4.bias"] = np.zeros(7, np.float32)
    bad = write_safetensors(tensors, tags, tmp_path / "bad.safetensors", {})
    with pytest.raises(WeightsMismatchError) as err:
        weights.load_weights(bad)
    assert "conv2.bias" in str(err.value) and "extra.weight" in str(err.value) and "conv4.bias" in str(err.value)


def test_stft_basis_must_be_a_windowed_dft():
    from polyasr.models.silero_vad.model import stft_window

    cfg, params = weights.load_weights(weights.find_weights())
    basis = params["stft_conv.weight"]
    assert_close(stft_window(basis, cfg), np.hanning(cfg.filter_length + 1)[:-1], atol=1e-7, what="periodic Hann")
    swapped = np.concatenate([basis[cfg.n_freqs :], basis[: cfg.n_freqs]])  # sin rows first
    with pytest.raises(WeightsMismatchError, match="stft_conv.weight"):
        stft_window(swapped, cfg)


def test_jit_reader_runs_nothing(tmp_path):
    """A TorchScript-looking archive whose pickle calls os.system is refused before anything runs."""
    import pickle
    import zipfile

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, ("echo pwned",))

    path = tmp_path / "evil.jit"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CheckpointError, match="system"):
        weights.load_weights(path)


def test_safetensors_weights_match_silero_network_with_them(silero, reference):
    """The package's safetensors holds other weights than its TorchScript model; put into silero's own
    network, they give what `weights="safetensors"` gives."""
    params = weights.load_weights(weights.find_weights(fmt="safetensors"))[1]
    state = {}
    for ours, theirs in ((v, k) for k, v in weights.JIT_MAP.rename.items()):
        state[theirs] = torch.from_numpy(params[ours].copy())
    net = silero_vad.load_silero_vad()
    net._model.load_state_dict(state)
    audio = reference["speech_pauses.flac"][0]
    ours = speech_probabilities(audio, vad=load_vad(weights="safetensors"))
    assert_close(ours, silero_probs(net, audio), atol=PROB_ATOL, what="safetensors weights")
    assert np.abs(ours - reference["speech_pauses.flac"][1]).max() > 0.1  # not the jit model's


@pytest.mark.gpu
def test_cuda_matches_silero(reference):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    audio, probs, regions = reference["speech_pauses.flac"]
    assert_close(speech_probabilities(audio, device="cuda"), probs, atol=PROB_ATOL, what="CUDA")
    assert speech_timestamps(audio, device="cuda") == regions


@pytest.mark.mlx
@pytest.mark.parametrize("name", ["en_short.wav", "noise.flac", "speech_pauses.flac"])
def test_mlx_matches_silero(reference, name):
    pytest.importorskip("mlx.core")
    audio, probs, regions = reference[name]
    assert_close(speech_probabilities(audio, device="mlx"), probs, atol=PROB_ATOL, what=f"{name} on MLX")
    assert speech_timestamps(audio, device="mlx") == regions
    batched = speech_probabilities([audio, audio[: len(audio) // 3]], device="mlx")
    assert_close(batched[1], speech_probabilities(audio[: len(audio) // 3]), atol=PROB_ATOL, what="MLX batch row")


@pytest.mark.mlx
def test_mlx_path_never_imports_torch(fixtures_dir):
    """Both weight files load and run on MLX in a process where torch is never imported."""
    pytest.importorskip("mlx.core")
    code = (
        "import sys, soundfile as sf\n"
        "from polyasr.vad import load_vad, speech_timestamps\n"
        f"audio, _ = sf.read({str(fixtures_dir / 'en_short.wav')!r}, dtype='float32')\n"
        "assert speech_timestamps(audio, device='mlx')\n"
        "assert speech_timestamps(audio, vad=load_vad('mlx', weights='safetensors'))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_prints_regions_in_seconds(fixtures_dir, capsys):
    import json

    from polyasr.cli import main

    files = [str(fixtures_dir / "en_short.wav"), str(fixtures_dir / "noise.flac")]
    assert main(["vad", *files, "--format", "json", "--speech-pad-ms", "50"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = [speech_timestamps(f, speech_pad_ms=50) for f in files]
    assert [p["file"] for p in printed] == files
    assert [[(r["start"], r["end"]) for r in p["regions"]] for p in printed] == [
        [(round(s / 16000, 3), round(e / 16000, 3)) for s, e in regions] for regions in expected
    ]
    assert printed[0]["regions"] and printed[1]["regions"] == []
    assert main(["vad", files[0]]) == 0
    lines = capsys.readouterr().out.split()
    default = [f"{round(v / 16000, 3):.3f}" for r in speech_timestamps(files[0]) for v in r]
    assert lines == default
    assert main(["vad", files[0], "--threshold", "2"]) == 2
    assert "threshold" in capsys.readouterr().err
