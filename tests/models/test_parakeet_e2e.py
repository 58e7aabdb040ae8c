"""Parakeet TDT end to end on random weights in a `.nemo` archive: the CLI, both formats giving
the same words, the C++ loop and the device loop on edge cases, and long audio in chunks."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close, transducer_confidence_tolerance
from parakeet_refs import (
    feature_extractor,
    nemo_state_dict,
    random_model,
    tiny_config,
    train_sentencepiece,
    write_hf_dir,
    write_nemo,
)

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.cli import main

pytest.importorskip("transformers")  # the reference the checkpoints are made from

VOCAB = 48


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    config = tiny_config(VOCAB)
    model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(VOCAB)
    root = tmp_path_factory.mktemp("parakeet-e2e")
    return {
        "nemo": write_nemo(model, fe, sp, root / "tiny.nemo"),
        "hf": write_hf_dir(model, fe, sp, root / "hf"),
        "parts": (model, fe, sp),
    }


@pytest.fixture(scope="module")
def engine(checkpoints):
    return AsrEngine.from_model("parakeet-tdt-v3", checkpoints["nemo"], device="cpu")


def test_cli_transcribes_with_a_nemo_archive(checkpoints, fixtures_dir, capsys):
    code = main(
        [
            "transcribe",
            str(fixtures_dir / "en_short.wav"),
            "--model",
            "parakeet-tdt-v3",
            "--model-path",
            str(checkpoints["nemo"]),
            "--device",
            "cpu",
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["model_name"] == "parakeet-tdt-v3"
    assert out["info"]["checkpoint_format"] == "nemo" and out["info"]["chunks"] == 1
    segs = out["segments"]
    assert segs, "the random model emits words on speech"
    starts = [s["start"] for s in segs]
    assert starts == sorted(starts) and all(
        0 <= s["start"] < s["end"] <= out["audio_duration_secs"] + 0.08 for s in segs
    )
    assert all(0 < s["confidence"] <= 1 for s in segs)
    assert out["text"] == "".join(s["text"] for s in segs).strip()
    assert set(out["timings"]) >= {"features", "encoder", "decoder"}


def test_srt_output(checkpoints, fixtures_dir, capsys):
    code = main(
        [
            "transcribe",
            str(fixtures_dir / "en_short.wav"),
            "--model",
            "parakeet-tdt-v3",
            "--model-path",
            str(checkpoints["nemo"]),
            "--format",
            "srt",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("1\n00:00:") and " --> " in out


def test_hf_directory_gives_the_same_words(checkpoints, engine, fixtures_dir):
    audio = load_audio(fixtures_dir / "en_medium.wav")
    a = engine.transcribe(audio)
    b = AsrEngine.from_model("parakeet-tdt-v3", checkpoints["hf"], device="cpu").transcribe(audio)
    assert b.info["checkpoint_format"] == "hf-safetensors"
    assert [(s.start, s.end, s.text, s.tokens) for s in a.segments] == [
        (s.start, s.end, s.text, s.tokens) for s in b.segments
    ]
    for x, y in zip(a.segments, b.segments, strict=True):
        assert abs(x.confidence - y.confidence) < 1e-5


def test_words_follow_sentencepiece_word_starts(engine, fixtures_dir):
    result = engine.transcribe(load_audio(fixtures_dir / "en_short.wav"))
    tok = engine.model.tokenizer
    for s in result.segments:
        assert tok.starts_word(s.tokens[0]) or s is result.segments[0]
        assert not any(tok.starts_word(t) for t in s.tokens[1:])
        assert s.text == " " + tok.decode(s.tokens).strip()


def test_checkpoint_missing_a_tensor_is_one_line_naming_it(checkpoints, tmp_path, fixtures_dir, capsys):
    model, fe, sp = checkpoints["parts"]
    sd = nemo_state_dict(model, fe)
    del sd["decoder.prediction.dec_rnn.lstm.weight_hh_l1"]
    path = write_nemo(model, fe, sp, tmp_path / "broken.nemo", state_dict=sd)
    code = main(
        ["transcribe", str(fixtures_dir / "en_short.wav"), "--model", "parakeet-tdt-v3", "--model-path", str(path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and err[0].startswith("polyasr: error:")
    assert "decoder.prediction.dec_rnn.lstm.weight_hh_l1" in err[0] and "missing" in err[0]


def _forcing(transducer, token: int):
    """A copy of `transducer` whose joint strongly prefers `token` with duration 0 on every frame."""
    forced = copy.copy(transducer)
    forced.host = dict(transducer.host)
    out_b = transducer.host["out_b"].copy()
    classes = transducer.cfg.vocab_size + 1
    out_b[token] += 50.0
    out_b[classes] += 50.0  # duration index 0 = 0 frames
    forced.host["out_b"] = out_b
    forced._device = None
    return forced


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_cpp_and_device_loop_agree_at_the_max_symbols_edge(engine, max_symbols):
    m = engine.model
    forced = _forcing(m.transducer, token=7)
    rng = np.random.default_rng(0)
    proj = torch.from_numpy(rng.standard_normal((3, 20, m.cfg.joint_hidden)).astype(np.float32))
    lengths = np.array([20, 1, 6])
    host = forced.greedy_host(proj.numpy(), lengths, max_symbols)
    device = forced.greedy_device(proj, lengths, max_symbols)
    for i, n in enumerate(lengths):
        assert host[i].tokens.tolist() == device[i].tokens.tolist() == [7] * (n * max_symbols)
        assert host[i].frames.tolist() == device[i].frames.tolist() == np.repeat(np.arange(n), max_symbols).tolist()


def test_cpp_and_device_loop_agree_on_ragged_batches(engine, fixtures_dir):
    m = engine.model
    audios = [load_audio(fixtures_dir / name) for name in ("en_short.wav", "en_medium.wav", "ru_short.wav")]
    audios.append(audios[0][:1600])  # 0.1 s: two encoder frames
    with torch.no_grad():
        proj, lengths = m.encode(audios)
    assert lengths.max() > 10 * lengths.min()
    host = m.transducer.greedy_host(m.B.to_numpy(proj), lengths)
    device = m.transducer.greedy_device(proj, lengths)
    for h, d in zip(host, device, strict=True):
        assert h.tokens.tolist() == d.tokens.tolist() and h.frames.tolist() == d.frames.tolist()
        assert h.durations.tolist() == d.durations.tolist()
        assert_close(h.confidences, d.confidences, transducer_confidence_tolerance(m.cfg), what="confidences")


def test_cpp_loop_splits_a_batch_over_torchs_threads(engine, fixtures_dir, monkeypatch):
    """The C++ loop gets the backend's `host_threads`, torch's intra-op count as the user set it."""
    from polyasr.models.parakeet import decode

    m, seen, real = engine.model, [], decode.tdt_greedy
    monkeypatch.setattr(decode, "tdt_greedy", lambda *a, **k: seen.append(k["threads"]) or real(*a, **k))
    audio = load_audio(fixtures_dir / "en_short.wav")
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                m.decode(*m.encode([audio, audio]))
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 3]


def test_ten_minutes_run_in_chunks_with_every_word_once(engine, fixtures_dir):
    phrase = load_audio(fixtures_dir / "en_short.wav")
    pause = np.zeros(8000, np.float32)
    audio = np.tile(np.concatenate([phrase, pause]), 600 * 16000 // (len(phrase) + len(pause)) + 1)[: 600 * 16000]
    result = engine.transcribe(audio, TranscribeOptions(batch_size=4, chunk_secs=30))
    assert result.info["chunks"] >= 20 and result.audio_duration_secs == 600.0
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # nothing kept twice
    assert starts[-1] > 590 - 5  # words up to the end of the file
    one_by_one = engine.transcribe(audio, TranscribeOptions(batch_size=1, chunk_secs=30))
    assert [s.text for s in one_by_one.segments] == [s.text for s in result.segments]
    # a chunk and the same audio alone decode alike: the first chunk's words match a short run
    head = engine.transcribe(audio[: 25 * 16000])
    first = [s for s in result.segments if s.end <= 24.0]
    assert [s.text for s in first] == [s.text for s in head.segments if s.end <= 24.0]


def test_batched_files_equal_one_by_one(engine, fixtures_dir):
    """Chunks of several files share padded batches (`transcribe_many`, as the server batches
    requests) and each file still gets what it gets alone: words, times, confidences."""
    audios = [load_audio(fixtures_dir / f) for f in ("en_short.wav", "ru_short.wav", "en_medium.wav")]
    audios.append(audios[0][:1600])  # 0.1 s: two encoder frames
    opts = dict(chunk_secs=6.0, word_timestamps=True)
    assert engine.model.batches_inputs(TranscribeOptions(**opts))
    many = engine.model.transcribe_many(audios, TranscribeOptions(batch_size=5, **opts))
    assert sum(out.chunks for out in many) > 5  # the medium file's chunks span two batches
    for audio, out in zip(audios, many, strict=True):
        one = engine.model.transcribe(audio, TranscribeOptions(batch_size=1, **opts))
        assert [(s.start, s.end, s.text, s.tokens) for s in out.segments] == [
            (s.start, s.end, s.text, s.tokens) for s in one.segments
        ]
        assert_close(
            [s.confidence for s in out.segments],
            [s.confidence for s in one.segments],
            transducer_confidence_tolerance(engine.model.cfg),
            what="confidences",
        )


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
def test_one_hour_runs_in_bounded_memory(checkpoints):
    """One hour of audio (230 MB of samples) in a fresh process: peak RSS stays bounded by the
    chunking, not by the length of the file."""
    script = textwrap.dedent(f"""
        import numpy as np
        from polyasr import AsrEngine
        from polyasr.benchmark import peak_rss_mb  # this process's own peak (VmHWM), not its parent's
        engine = AsrEngine.from_model("parakeet-tdt-v3", {str(checkpoints["nemo"])!r}, device="cpu")
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(3600 * 16000) * 0.05).astype(np.float32)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS: the peak below is the transcription's, not the float64 draw's
        before = peak_rss_mb()
        result = engine.transcribe(audio)
        print(result.info["chunks"], int(before), int(peak_rss_mb()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=True)
    chunks, before_mb, after_mb = map(int, out.stdout.split())
    assert chunks >= 30
    assert after_mb - before_mb < 600, f"peak RSS grew by {after_mb - before_mb} MB over one hour of audio"


def test_benchmark_cli_with_a_model_that_has_no_first_token_latency(checkpoints, fixtures_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "benchmark",
            "--audio",
            str(fixtures_dir / "en_short.wav"),
            "--reference",
            str(fixtures_dir / "en_short.txt"),
            "--models",
            "parakeet-tdt-v3",
            "--model-path",
            f"parakeet-tdt-v3={checkpoints['nemo']}",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--output",
            str(out),
        ]
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and line.startswith("parakeet-tdt-v3: RTF") and "first token -" in line
    report = json.loads(out.read_text())
    assert report["results"][0]["first_token_latency_secs"] is None and report["results"][0]["wer"] is not None


def test_forced_language_is_checked_against_the_checkpoint(checkpoints):
    """v2 is English only: it refuses "ru" (it used to report it back) and reports "en" unasked;
    v3 accepts its 25 languages and refuses others, naming the ones it has."""
    from polyasr.errors import InvalidOptionError

    audio = np.zeros(16000, np.float32)
    v2 = AsrEngine.from_model("parakeet-tdt-v2", checkpoints["nemo"], device="cpu")
    with pytest.raises(InvalidOptionError, match=r"parakeet-tdt-v2 \(English\).*'ru'.*supports: en"):
        v2.transcribe(audio, TranscribeOptions(language="ru"))
    assert v2.transcribe(audio).language == "en"
    v3 = AsrEngine.from_model("parakeet-tdt-v3", checkpoints["nemo"], device="cpu")
    assert v3.transcribe(audio, TranscribeOptions(language="de")).language == "de"
    assert v3.transcribe(audio).language is None
    with pytest.raises(InvalidOptionError, match=r"'zh'.*bg, cs, da, de"):
        v3.transcribe(audio, TranscribeOptions(language="zh"))


def test_word_offsets_follow_nemo_tdt_rules(engine):
    """A constructed TDT hypothesis of "the quick, fox." (tokens, frames, durations): word offsets
    as NeMo's `timestamps=True` derives them, worked out by hand from its rules."""
    import io

    import sentencepiece as spm

    from polyasr.models.parakeet.decode import TdtHyp
    from polyasr.models.parakeet.tokenizer import ParakeetTokenizer

    text = "the quick, brown fox. jumps over the lazy dog!"
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([text] * 4 + text.split()),
        model_writer=out,
        vocab_size=40,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    model = copy.copy(engine.model)
    model.tokenizer = ParakeetTokenizer(40, sentencepiece_model=out.getvalue())
    ids = model.tokenizer._sp.encode("the quick, fox.")
    pieces = ["▁the", "▁", "q", "u", "i", "ck", ",", "▁", "f", "o", "x", "."]
    assert [model.tokenizer.piece(i) for i in ids] == pieces
    frames = [0, 3, 3, 4, 5, 5, 9, 10, 10, 11, 12, 20]  # "," and "." come late, as after a pause
    durations = [2, 0, 1, 1, 0, 2, 1, 0, 1, 1, 2, 1]
    conf = np.linspace(0.5, 0.95, len(ids), dtype=np.float32)
    hyp = TdtHyp(*(np.array(a, np.int32) for a in (ids, frames, durations)), conf)
    segments = model.words(hyp, word_timestamps=True)
    words = [w for s in segments for w in s.words]
    # Token spans [frame, frame + duration); "," and "." take an empty span at the end of the token
    # before them ([7, 7) and [14, 14)); a word spans its first token's start to its last's end.
    frame = model.cfg.frame_secs
    expected = [(" the", 0, 2), (" quick,", 3, 7), (" fox.", 10, 14)]
    assert [w.text for w in words] == [t for t, _, _ in expected]
    for w, (_, a, b) in zip(words, expected):
        assert (w.start, w.end) == (round(a * frame, 3), round(b * frame, 3))
    assert words[1].probability == pytest.approx(float(np.mean(conf[1:7])))
    assert [(s.start, s.end, s.text) for s in segments] == [(w.start, w.end, w.text) for w in words]


def test_word_timestamps_end_to_end(engine, fixtures_dir):
    audio = load_audio(fixtures_dir / "en_medium.wav")
    plain = engine.transcribe(audio)
    timed = engine.transcribe(audio, TranscribeOptions(word_timestamps=True))
    assert [s.text for s in timed.segments] == [s.text for s in plain.segments] and timed.segments
    for p, s in zip(plain.segments, timed.segments):
        assert "".join(w.text for w in s.words) == s.text and len(s.words) == 1
        assert s.start == p.start == s.words[0].start and s.end == s.words[0].end <= p.end
        assert s.words[0].probability == p.confidence
    assert not any(s.words for s in plain.segments)


@pytest.fixture(scope="module")
def nemo_model(checkpoints):
    """NeMo's own EncDecRNNTBPEModel restored from the same `.nemo` archive (test-only reference)."""
    pytest.importorskip("nemo.collections.asr")
    from nemo.collections.asr.models import ASRModel
    from omegaconf import open_dict

    model = ASRModel.restore_from(str(checkpoints["nemo"]), map_location="cpu").eval()
    with open_dict(model.cfg):  # released archives carry it; transcribe() reads its sample rate
        model.cfg.validation_ds = {"sample_rate": 16000}
    return model


@pytest.mark.parametrize("name", ["en_short.wav", "en_medium.wav", "ru_short.wav"])
def test_words_equal_nemo_timestamps(nemo_model, engine, fixtures_dir, name):
    """The same random-weight model in NeMo's layout: our words and their start / end times equal
    NeMo's `transcribe(timestamps=True)` word offsets, except that an end past the file's last
    sample (a token's duration running over it) is the file's end here."""
    audio = load_audio(fixtures_dir / name)
    [hyp] = nemo_model.transcribe([audio], timestamps=True, batch_size=1, verbose=False)
    ours = engine.transcribe(audio, TranscribeOptions(word_timestamps=True))
    words = [w for s in ours.segments for w in s.words]
    theirs = hyp.timestamp["word"]
    assert ours.text.strip() == hyp.text and len(theirs) > 0
    assert [w.text.strip() for w in words] == [w["word"] for w in theirs]
    duration = len(audio) / 16000
    for w, t in zip(words, theirs):
        assert w.start == pytest.approx(t["start"], abs=1e-3), w.text
        assert w.end == pytest.approx(min(t["end"], duration), abs=1e-3), w.text
