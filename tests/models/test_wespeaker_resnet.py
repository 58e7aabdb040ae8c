"""WeSpeaker's ResNet34 speaker embedding on our backends against pyannote.audio's own module
(test-only; `wespeaker_refs` loads it from the installed distribution), on random weights written
in pyannote's published `pytorch_model.bin` layout and in WeSpeaker's `avg_model.pt` layout.

Tolerance: the brief's 1e-4 on embeddings of magnitude ~0.3-0.7 (measured ~1e-6): both sides run the
same fp32 network; they differ in the reference's fp32 fbank (its frames' DC removal and
pre-emphasis on samples scaled to +-32768 move quiet frames' log energies by up to ~4e-4, which
mean pooling over the frames averages down) against our float64 one, and in summation order.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close
from wespeaker_refs import (
    random_model,
    reference_embedding,
    save_pyannote_checkpoint,
    save_wespeaker_checkpoint,
    torch,
)

from polyasr.audio import load_audio
from polyasr.backends import get_backend
from polyasr.errors import CheckpointError, ModelNotFoundError, WeightsMismatchError
from polyasr.models.wespeaker_resnet import checkpoint, features
from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig
from polyasr.models.wespeaker_resnet.pipeline import WeSpeakerEncoder

ATOL = 1e-4


@pytest.fixture(scope="module")
def signals(fixtures_dir):
    en, ru = load_audio(fixtures_dir / "en_short.wav"), load_audio(fixtures_dir / "ru_short.wav")
    two = load_audio(fixtures_dir / "diarize_2spk.flac")
    return {
        "en_short": en,
        "ru_short 2 s": ru[:32000],
        "diarize_2spk 3-6 s": two[48000:96000],
        "en 0.1 s": en[16000:17680],  # 9 frames: the fewest that leave the std two time steps
        "ru quiet 1 s": 0.01 * ru[16000:32000],
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = random_model(tiny=True)
    return model, save_pyannote_checkpoint(model, tmp_path_factory.mktemp("tiny") / "pytorch_model.bin")


@pytest.fixture(scope="module")
def resnet34(tmp_path_factory):
    model = random_model(tiny=False)
    return model, save_pyannote_checkpoint(model, tmp_path_factory.mktemp("resnet34") / "pytorch_model.bin")


def _backend(device: str):
    if device == "mlx":
        pytest.importorskip("mlx.core")
    return get_backend(device, dtype="float32")


def _filter_bank_tolerance(wav: np.ndarray, cfg) -> np.ndarray:
    """Per (frame, filter): how far the log energy moves when every weight of a filter's triangle
    (and the bins beside it) moves by the filter bank's own float32 error. The FFT bins' mel values
    are float32, ours rounded from float64, torch's computed in float32 (up to 2 ulp apart); a
    weight is (mel - left) / (centre - left), so it moves by 2 ulp(mel) / the mel spacing. A frame
    whose energy in a filter sits on its triangle's edge (weights near 0) moves the most."""
    x = np.asarray(wav, dtype=np.float64) * 32768.0
    t = features.frame_count(len(x), cfg)
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop][:t]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - cfg.preemphasis_coefficient * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    power = np.square(np.abs(np.fft.rfft(frames * features.window(cfg), n=cfg.n_fft)))
    bank = features.mel_bank(cfg)
    hz = np.arange(bank.shape[1], dtype=np.float32) * np.float32(cfg.sample_rate / cfg.n_fft)
    mel = features.kaldi_hz_to_mel(hz).astype(np.float32)
    high = cfg.high_freq if cfg.high_freq > 0 else cfg.sample_rate / 2 + cfg.high_freq
    lo, hi = features.kaldi_hz_to_mel([cfg.low_freq, high])
    spacing = (hi - lo) / (cfg.num_mel_bins + 1)
    moved = np.maximum(bank > 0, np.roll(bank > 0, 1, axis=1) | np.roll(bank > 0, -1, axis=1))
    weight_error = moved * (2 * np.spacing(mel).astype(np.float64) / spacing)[None, :]
    return 1e-5 + (power @ weight_error.T) / np.maximum(power @ bank.T, features.FLOAT32_EPS)


def test_fbank_is_pyannotes(signals, tiny):
    """Our numpy fbank against the reference's own `kaldi.fbank` partial (pyannote's settings) run in
    float64: they differ only in the float32 filter bank's mel values, within the bound that
    difference implies per frame and filter (`_filter_bank_tolerance`), plus the float32 log."""
    model, _ = tiny
    cfg = WeSpeakerConfig()
    for name, wav in signals.items():
        expected = model._fbank(torch.from_numpy(wav.astype(np.float64))[None] * 32768).numpy()
        tol = _filter_bank_tolerance(wav, cfg)
        assert_close(features.fbank(wav, cfg), expected, atol=tol, what=f"fbank of {name}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("mlx", marks=pytest.mark.mlx)])
def test_tiny_matches_pyannote(signals, tiny, device):
    model, path = tiny
    enc = WeSpeakerEncoder.load(_backend(device), path)
    assert enc.cfg == WeSpeakerConfig.tiny() and enc.checkpoint_format == "pyannote"
    for name, wav in signals.items():
        assert_close(enc.embed(wav), reference_embedding(model, wav), atol=ATOL, what=f"{name} on {device}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("mlx", marks=pytest.mark.mlx)])
def test_resnet34_matches_pyannote(signals, resnet34, device):
    """The published network's size (32 channels, blocks [3, 4, 6, 3], 256-d) on one 1.5 s window."""
    model, path = resnet34
    enc = WeSpeakerEncoder.load(_backend(device), path)
    assert enc.cfg == WeSpeakerConfig()
    wav = signals["en_short"][16000:40000]
    assert_close(enc.embed(wav), reference_embedding(model, wav), atol=ATOL, what=f"ResNet34 on {device}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("mlx", marks=pytest.mark.mlx)])
def test_wespeaker_layout(signals, tiny, tmp_path, device):
    """WeSpeaker's avg_model.pt (unprefixed names, a projection head to drop); its TSTP adds 1e-7 to
    the variance, far below the tolerance on variances of order 0.1."""
    model, _ = tiny
    path = save_wespeaker_checkpoint(model, tmp_path / "avg_model.pt")
    enc = WeSpeakerEncoder.load(_backend(device), tmp_path)  # a directory holding it
    assert enc.checkpoint_format == "wespeaker" and enc.cfg.pooling_std_eps == 1e-7
    wav = signals["ru_short 2 s"]
    assert_close(enc.embed(wav), reference_embedding(model, wav), atol=ATOL, what=f"{path.name} on {device}")


def test_windows_are_embedded_as_alone(signals, tiny):
    """A window's frames are its slice of the region's fbank, normalised on their own: the same
    as embedding the window's samples alone (snip_edges frames start at the window's start)."""
    enc = WeSpeakerEncoder.load(_backend("cpu"), tiny[1])
    region, length = signals["en_short"], 24000
    starts = [0, 12000, 24000, (len(region) - length) // 160 * 160]
    windows = enc.embed_windows(region, starts, length)
    alone = np.stack([enc.embed(region[s : s + length]) for s in starts])
    assert_close(windows, alone / np.linalg.norm(alone, axis=1, keepdims=True), atol=1e-5, what="windows")
    short = enc.embed_windows(region[:800], [0], length)  # shorter than 9 frames: repeated, not padded
    assert short.shape == (1, 8) and np.isfinite(short).all()


def test_checkpoint_errors(tiny, tmp_path, monkeypatch):
    model, path = tiny
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError, match="--embedding-path"):
        WeSpeakerEncoder.load(_backend("cpu"))
    with pytest.raises(ModelNotFoundError, match="holds neither pytorch_model.bin nor avg_model.pt"):
        WeSpeakerEncoder.load(_backend("cpu"), tmp_path)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        WeSpeakerEncoder.load(_backend("cpu"), tmp_path / "nope.bin")

    state = {k: v for k, v in model.state_dict().items() if k != "resnet.layer2.0.bn2.running_var"}
    torch.save({"state_dict": state}, tmp_path / "missing.bin")
    state = dict(model.state_dict()) | {"resnet.layer9.0.conv3.weight": torch.zeros(1)}
    torch.save({"state_dict": state}, tmp_path / "unexpected.bin")
    torch.save({"lstm.weight_ih_l0": torch.zeros(4, 4)}, tmp_path / "other.pt")
    torch.save(
        {"state_dict": {k: v for k, v in model.state_dict().items() if "conv1" not in k}}, tmp_path / "no_conv1.bin"
    )
    for use_torch in (True, False):
        for name, match in (
            ("missing.bin", "resnet.layer2.0.bn2.running_var"),
            ("unexpected.bin", "resnet.layer9.0.conv3.weight"),
            ("other.pt", "'conv1.weight'"),
            ("no_conv1.bin", "'resnet.conv1.weight'"),
        ):
            with pytest.raises(WeightsMismatchError, match=match):
                from polyasr.models.wespeaker_resnet.weights import map_weights

                map_weights(*checkpoint.read_checkpoint(tmp_path / name, use_torch), name)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": dict(model.state_dict()), "x": Evil()}, tmp_path / "evil.bin")
    for use_torch in (True, False):
        with pytest.raises(CheckpointError, match=r"refused to load.*\bprint\b"):
            checkpoint.read_checkpoint(tmp_path / "evil.bin", use_torch)


def test_found_in_the_hugging_face_cache(tiny, tmp_path, monkeypatch):
    """Without a path, pyannote's file where huggingface_hub caches it (nothing is downloaded)."""
    _, path = tiny
    repo = tmp_path / "hub" / "models--pyannote--wespeaker-voxceleb-resnet34-LM"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snapshot / "pytorch_model.bin").write_bytes(path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert checkpoint.find_checkpoint() == snapshot / "pytorch_model.bin"


@pytest.mark.mlx
def test_mlx_path_never_imports_torch(fixtures_dir, tiny):
    """On MLX the pyannote checkpoint is read by the restricted unpickler: torch is never imported."""
    pytest.importorskip("mlx.core")
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch fails\n"
        "from polyasr.audio import load_audio\n"
        "from polyasr.diarization import load_embedding\n"
        f"wav = load_audio({str(fixtures_dir / 'en_short.wav')!r})[:16000]\n"
        f"e = load_embedding('wespeaker-resnet34', {str(tiny[1])!r}, device='mlx').embed(wav)\n"
        "assert e.shape == (8,)\n"
        "print(*e.tolist())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wav = load_audio(fixtures_dir / "en_short.wav")[:16000]
    embedding = np.array([float(v) for v in run.stdout.split()])
    assert_close(embedding, reference_embedding(tiny[0], wav), atol=ATOL, what="MLX without torch")


# ---------------------------------------------------------------- in the diarization pipeline


def test_diarize_with_wespeaker(fixtures_dir, tiny, monkeypatch):
    """`polyasr.diarize(embedding="wespeaker-resnet34", embedding_path=...)` embeds 1.5 s windows
    every 0.75 s (WeSpeaker's diarization recipe) without the GE2E gain. Random weights say nothing
    about who speaks, so only the wiring and the turns' shape are checked here."""
    pytest.importorskip("sklearn")
    from conftest import need_silero_vad

    import polyasr
    from polyasr.diarization import DiarizeOptions

    need_silero_vad()
    assert DiarizeOptions(embedding="wespeaker-resnet34").windows() == (1.5, 0.75)
    assert DiarizeOptions(embedding="wespeaker-resnet34", window_secs=3.0).windows() == (3.0, 0.75)
    seen = []
    embed_windows = WeSpeakerEncoder.embed_windows

    def spy(self, region, starts, length):
        seen.append((len(region), starts, length))
        return embed_windows(self, region, starts, length)

    monkeypatch.setattr(WeSpeakerEncoder, "embed_windows", spy)
    audio = load_audio(fixtures_dir / "diarize_2spk.flac")[:152000]  # two turns, 9.5 s
    turns = polyasr.diarize(audio, num_speakers=2, embedding="wespeaker-resnet34", embedding_path=tiny[1])
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(0 <= t.start < t.end <= 9.5 for t in turns) and turns == sorted(turns)
    assert all(length == 24000 for _, _, length in seen)
    assert any(starts[:2] == [0, 12000] for _, starts, _ in seen)


def test_cli_diarize_with_wespeaker(fixtures_dir, tiny, capsys, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from conftest import need_silero_vad

    from polyasr.cli import _build_parser, _options, main

    need_silero_vad()
    audio = str(fixtures_dir / "en_short.wav")
    assert main(["diarize", audio, "--embedding", "wespeaker-resnet34", "--embedding-path", str(tiny[1])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("SPEAKER en_short 1 ") for line in lines)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["diarize", audio, "--embedding", "wespeaker-resnet34"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--embedding-path" in err and "pytorch_model.bin" in err and "\n" not in err

    args = ["transcribe", "a.wav", "--diarize", "--embedding", "wespeaker-resnet34", "--embedding-path", "w.bin"]
    opts = _options(_build_parser().parse_args(args)).diarize_options()
    assert (opts.embedding, opts.embedding_path, opts.windows()) == ("wespeaker-resnet34", "w.bin", (1.5, 0.75))


@pytest.mark.slow
def test_transcribe_with_wespeaker_speakers(whisper_tiny_en_engine, fixtures_dir, tiny, tmp_path, monkeypatch):
    """`TranscribeOptions(diarize=True, speaker_embedding=...)`: a missing checkpoint is reported
    before the model runs; with one, segments get speakers."""
    pytest.importorskip("sklearn")
    from conftest import need_silero_vad

    from polyasr.options import TranscribeOptions

    need_silero_vad()
    engine, audio = whisper_tiny_en_engine, load_audio(fixtures_dir / "en_short.wav")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with monkeypatch.context() as m:
        m.setattr(engine.model, "transcribe", lambda *a, **k: pytest.fail("the model ran before the check"))
        with pytest.raises(ModelNotFoundError, match="--embedding-path"):
            engine.transcribe(audio, TranscribeOptions(diarize=True, speaker_embedding="wespeaker-resnet34"))
    options = TranscribeOptions(
        diarize=True, speaker_embedding="wespeaker-resnet34", speaker_embedding_path=str(tiny[1]), temperatures=(0.0,)
    )
    result = engine.transcribe(audio, options)
    assert result.segments and all(s.speaker is not None for s in result.segments)
