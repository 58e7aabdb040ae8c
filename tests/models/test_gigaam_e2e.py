"""GigaAM end to end on random weights in the released `.ckpt` layout: the CLI path, the one-line
error for a checkpoint missing a tensor, convert -> identical output, and long audio in chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.cli import main
from polyasr.models.ctc_decode import ctc_greedy

pytest.importorskip("omegaconf")  # only to WRITE the released layout; reading never needs it


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)  # module fixtures run before the per-test seed: same weights whatever ran before
    cfg = tiny_cfg()
    path = tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt"
    return save_ckpt(path, cfg, v3_state_dict(cfg, bf16_window=True)), cfg


def test_cli_transcribes_with_a_released_layout_checkpoint(ckpt, fixtures_dir, capsys):
    path, _ = ckpt
    code = main(
        [
            "transcribe",
            str(fixtures_dir / "ru_short.wav"),
            "--model",
            "gigaam-v3-ctc",
            "--model-path",
            str(path),
            "--device",
            "cpu",
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["model_name"] == "gigaam-v3-ctc" and out["language"] == "ru"
    assert out["info"]["checkpoint_format"] == "gigaam-ckpt" and out["info"]["chunks"] == 1
    starts = [s["start"] for s in out["segments"]]
    assert starts == sorted(starts) and all(0 <= s["start"] < s["end"] <= 5.4 for s in out["segments"])
    assert all(0 < s["confidence"] <= 1 for s in out["segments"])
    assert out["text"] == "".join(s["text"] for s in out["segments"]).strip()


def test_checkpoint_missing_a_tensor_is_one_line_naming_it(tmp_path, fixtures_dir, capsys):
    cfg = tiny_cfg()
    sd = v3_state_dict(cfg)
    del sd["encoder.layers.1.conv.depthwise_conv.weight"]
    path = save_ckpt(tmp_path / "broken.ckpt", cfg, sd)
    code = main(
        ["transcribe", str(fixtures_dir / "ru_short.wav"), "--model", "gigaam-v3-ctc", "--model-path", str(path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and err[0].startswith("polyasr: error:")
    assert "encoder.layers.1.conv.depthwise_conv.weight" in err[0] and "missing" in err[0]


def test_converted_checkpoint_gives_identical_output(ckpt, tmp_path, fixtures_dir, capsys):
    path, _ = ckpt
    assert (
        main(["convert", "--model", "gigaam-v3-ctc", "--model-path", str(path), "--output", str(tmp_path / "st")]) == 0
    )
    audio = load_audio(fixtures_dir / "ru_short.wav")
    a = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu").transcribe(audio)
    b = AsrEngine.from_model("gigaam-v3-ctc", tmp_path / "st", device="cpu").transcribe(audio)
    assert b.info["checkpoint_format"] == "safetensors"
    assert [(s.start, s.end, s.text, s.tokens) for s in a.segments] == [
        (s.start, s.end, s.text, s.tokens) for s in b.segments
    ]


def test_ten_minutes_run_in_chunks_with_every_word_once(ckpt, fixtures_dir):
    """600 s of speech and pauses: cut into chunks of at most 25 s, batched, stitched in order."""
    path, _ = ckpt
    engine = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu")
    phrase = load_audio(fixtures_dir / "ru_short.wav")
    pause = np.zeros(8000, np.float32)
    audio = np.tile(np.concatenate([phrase, pause]), 600 * 16000 // (len(phrase) + len(pause)) + 1)[: 600 * 16000]
    result = engine.transcribe(audio, TranscribeOptions(batch_size=4))
    chunks = result.info["chunks"]
    assert chunks >= 24 and result.audio_duration_secs == 600.0
    # The kept frames tile the file: 600 s of 40 ms frames, give or take one frame per cut.
    assert abs(result.info["encoder_frames"] - 15_000) <= chunks
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # nothing kept twice
    one_by_one = engine.transcribe(audio, TranscribeOptions(batch_size=1))
    assert [s.text for s in one_by_one.segments] == [s.text for s in result.segments]


def test_checkpoint_of_the_other_variant_is_refused(ckpt):
    from polyasr.errors import CheckpointError

    path, _ = ckpt
    with pytest.raises(CheckpointError, match="use --model gigaam-v3-ctc"):
        AsrEngine.from_model("gigaam-v3-e2e-ctc", path, device="cpu")


def test_words_span_the_frames_their_tokens_fire_on(ckpt):
    """Constructed frame labels: a word runs from its first token's frame to the last frame its
    last token repeats on; its probability is the mean over tokens of their frames' posterior."""
    path, _ = ckpt
    model = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu").model
    blank, a, b, v, space = model.cfg.blank_id, 1, 2, 3, 0  # " абв..." is the tiny vocabulary
    labels = np.array([blank, a, a, blank, b, space, v, v, v, blank])
    conf = np.array([0.9, 0.4, 0.6, 0.9, 0.8, 0.7, 0.2, 0.5, 0.8, 0.9], np.float32)
    times = np.arange(len(labels)) * model.cfg.frame_secs
    ((tokens, positions),) = ctc_greedy(labels[None], blank=blank)
    segments = model.words(tokens, positions, times, conf, labels)
    f = model.cfg.frame_secs
    assert [s.text for s in segments] == [" аб", " в"]
    words = [w for s in segments for w in s.words]
    assert [(w.text, w.start, w.end) for w in words] == [(" аб", round(f, 3), round(5 * f, 3)), (" в", 6 * f, 9 * f)]
    assert words[0].probability == pytest.approx((0.5 + 0.8) / 2) and words[1].probability == pytest.approx(0.5)
    assert [(s.start, s.end) for s in segments] == [(w.start, w.end) for w in words]


def test_word_timestamps_end_to_end(ckpt, fixtures_dir):
    path, _ = ckpt
    engine = AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu")
    audio = load_audio(fixtures_dir / "ru_short.wav")
    plain = engine.transcribe(audio, TranscribeOptions())
    timed = engine.transcribe(audio, TranscribeOptions(word_timestamps=True))
    assert [s.text for s in timed.segments] == [s.text for s in plain.segments] and timed.segments
    for p, s in zip(plain.segments, timed.segments):
        assert "".join(w.text for w in s.words) == s.text and len(s.words) == 1
        assert s.start == p.start == s.words[0].start and s.end == s.words[0].end >= p.end
        assert 0 < s.words[0].probability <= 1
    assert not any(s.words for s in plain.segments)
