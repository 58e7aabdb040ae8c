"""Resemblyzer's GE2E voice encoder on our backends against resemblyzer's own `VoiceEncoder`
(test-only), on its real weights: `embed_utterance` within 1e-4 (unit vectors whose entries come
from a 3 x 160-step fp32 LSTM; the two differ in the frontend's FFT and summation order, measured
~1e-7), including a signal shorter than one partial; the weights file is found through the
installed distribution and checked tensor by tensor.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import assert_close

torch = pytest.importorskip("torch")
try:
    import webrtcvad  # noqa: F401
except ImportError:
    # webrtcvad 2.0.10 imports pkg_resources, gone from recent setuptools; only resemblyzer's
    # silence trimming uses it, which these tests do not call.
    sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
Reference = pytest.importorskip("resemblyzer").VoiceEncoder

from polyasr.audio import load_audio  # noqa: E402
from polyasr.backends import get_backend  # noqa: E402
from polyasr.errors import CheckpointError, ModelNotFoundError, WeightsMismatchError  # noqa: E402
from polyasr.models.resemblyzer_ge2e import checkpoint  # noqa: E402
from polyasr.models.resemblyzer_ge2e.pipeline import VoiceEncoder  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    return Reference(device="cpu", verbose=False)


@pytest.fixture(scope="module")
def signals(fixtures_dir):
    en, ru = load_audio(fixtures_dir / "en_short.wav"), load_audio(fixtures_dir / "ru_short.wav")
    return {"en_short": en, "ru_short": ru, "en_1s": en[8000:24000], "ru_0.7s_quiet": 0.05 * ru[16000:27200]}


def _check(encoder, reference, signals, what):
    for name, wav in signals.items():
        expected = reference.embed_utterance(wav)
        assert_close(encoder.embed_utterance(wav), expected, atol=ATOL, what=f"{name} on {what}")
        assert_close(
            encoder.embed_utterance(wav, rate=4.0, min_coverage=0.5),
            reference.embed_utterance(wav, rate=4.0, min_coverage=0.5),
            atol=ATOL,
            what=f"{name} at 4 partials / s on {what}",
        )


def test_torch_matches_resemblyzer(reference, signals):
    _check(VoiceEncoder.load(get_backend("cpu", dtype="float32")), reference, signals, "torch")


@pytest.mark.mlx
def test_mlx_matches_resemblyzer(reference, signals):
    pytest.importorskip("mlx.core")
    _check(VoiceEncoder.load(get_backend("mlx", dtype="float32")), reference, signals, "MLX")


def test_windows_of_a_region_are_utterances_of_their_own(signals):
    """A window inside a longer region sees real audio at its edges, so it is close to, not equal to,
    the same samples embedded alone; a region shorter than a partial is one partial of its frames."""
    enc = VoiceEncoder.load(get_backend("cpu", dtype="float32"))
    wav = signals["en_short"]
    windows = enc.embed_windows(wav, [0, 16000, 32000], 25600)
    alone = np.stack([enc.embed_utterance(wav[s : s + 25600]) for s in (0, 16000, 32000)])
    assert windows.shape == (3, 256)
    assert np.allclose(np.linalg.norm(windows, axis=1), 1, atol=1e-6)
    assert (np.sum(windows * alone, axis=1) > 0.95).all()
    short = enc.embed_windows(wav[:8000], [0], 25600)
    assert short.shape == (1, 256) and np.isfinite(short).all()


def test_regions_batched_together_equal_each_region_alone(signals, monkeypatch):
    """`embed_regions` puts partials of many regions (full ones and short ones of equal frame count)
    into shared LSTM batches; each window's embedding is the one its region alone gives (the
    batches differ only in GEMM blocking), in order, with batches cut mid-region."""
    from polyasr.models.resemblyzer_ge2e import model

    enc = VoiceEncoder.load(get_backend("cpu", dtype="float32"))
    en, ru = signals["en_short"], signals["ru_short"]
    regions = [en[:40000], ru[:7000], en[3200:10200], ru[8000:60000], en[:3000]]
    starts = [[0, 6400, 12800, 14400], [0], [0], list(range(0, 26400, 6400)), [0]]
    alone = np.concatenate([enc.embed_windows(r, s, 25600) for r, s in zip(regions, starts)])
    monkeypatch.setattr(model, "BATCH", 3)
    together = enc.embed_regions(regions, starts, 25600)
    assert together.shape == (sum(map(len, starts)), 256)
    assert_close(together, alone, atol=ATOL, what="regions batched together")


def test_weights_are_found_and_checked(tmp_path):
    file = checkpoint.find_weights()
    assert file.name == "pretrained.pt" and file.parent.name == "resemblyzer"
    with pytest.raises(ModelNotFoundError, match="do not exist"):
        checkpoint.find_weights(tmp_path / "nope.pt")
    state = torch.load(file, map_location="cpu", weights_only=True)["model_state"]
    del state["lstm.bias_hh_l2"]
    state["extra.weight"] = torch.zeros(3)
    torch.save({"model_state": state}, tmp_path / "broken.pt")
    with pytest.raises(WeightsMismatchError, match="lstm.bias_hh_l2") as e:
        VoiceEncoder.load(get_backend("cpu", dtype="float32"), tmp_path / "broken.pt")
    assert "extra.weight" in str(e.value)


def test_missing_package_names_what_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelNotFoundError, match=r"polyasr\[diarize\]"):
        checkpoint.find_weights()


def test_restricted_reader_equals_torch_load(tmp_path):
    """The legacy-format reader (no torch) gives torch.load's tensors, and refuses what is not data."""
    import os

    file = checkpoint.find_weights()
    ours = checkpoint.read_checkpoint(file, use_torch=False)
    theirs = checkpoint.read_checkpoint(file)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert_close(ours[name], theirs[name], atol=0.0, what=name)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save(
        {"model_state": {"w": torch.ones(2)}, "x": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoint.read_checkpoint(tmp_path / "evil.pt", use_torch=False)
    (tmp_path / "cut.pt").write_bytes(file.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.read_checkpoint(tmp_path / "cut.pt", use_torch=False)


@pytest.mark.mlx
def test_mlx_path_never_imports_torch(fixtures_dir):
    pytest.importorskip("mlx.core")
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch fails\n"
        "import numpy as np\n"
        "from polyasr.audio import load_audio\n"
        "from polyasr.diarization import load_embedding\n"
        f"wav = load_audio({str(fixtures_dir / 'en_short.wav')!r})[:16000]\n"
        "e = load_embedding(device='mlx').embed_utterance(wav)\n"
        "assert e.shape == (256,) and abs(np.linalg.norm(e) - 1) < 1e-5\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
