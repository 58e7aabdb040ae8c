"""`polyasr batch` in one process: records for good and bad files, one file per input, a job killed
mid-run and resumed, and the grouping of files for a model that batches across them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_data import clips, gigaam_checkpoint, lines_without_timing, mixed_directory

from polyasr import AsrEngine, TranscribeOptions
from polyasr.batch.work import Decoded
from polyasr.cli import main
from polyasr.models.base import Capabilities
from polyasr.result import Segment, TranscriptionResult

pytest.importorskip("omegaconf")  # only to write the released GigaAM layout


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return gigaam_checkpoint(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt")


@pytest.fixture(scope="module")
def engine(ckpt) -> AsrEngine:
    return AsrEngine.from_model("gigaam-v3-ctc", ckpt, device="cpu")


def _batch(ckpt, source, output, *extra) -> list[str]:
    return ["batch", str(source), "--model", "gigaam-v3-ctc", "--model-path", str(ckpt), "--device", "cpu",
            "--output", str(output), *map(str, extra)]  # fmt: skip


def test_good_and_bad_files_each_get_one_record(ckpt, engine, tmp_path, capsys):
    data = mixed_directory(tmp_path / "data")
    out = tmp_path / "out.jsonl"
    assert main(_batch(ckpt, data, out)) == 3
    err = capsys.readouterr().err
    assert "polyasr: 2 of 6 files failed" in err and "4 files transcribed, 2 failed" in err
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(records) == 6 and set(records) == {str(p) for p in data.rglob("*.*")}
    assert records[str(data / "sub" / "corrupt.wav")]["error"].startswith("AudioDecodeError: ")
    assert records[str(data / "sub" / "empty.wav")]["error"].startswith("UnsupportedAudioFormatError: ")
    for path in ("ru_short.wav", "en_short.ogg", "noise.flac", "sub/silence.wav"):
        r, expected = records[str(data / path)], engine.transcribe_file(data / path)
        assert r["error"] is None and r["model"] == "gigaam-v3-ctc" and r["language"] == "ru"
        assert r["text"] == expected.text and r["duration"] == expected.audio_duration_secs
        assert r["segments"] == [s.__dict__ for s in expected.segments]
    assert list(records) == sorted(records)  # locally, in input order


def test_one_file_per_input_and_resume_of_a_finished_job(ckpt, engine, tmp_path, capsys):
    data = mixed_directory(tmp_path / "data")
    out = tmp_path / "srt"
    assert main(_batch(ckpt, data, out, "--format", "srt")) == 3
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["en_short.srt", "errors.jsonl", "noise.srt", "ru_short.srt", "sub/silence.srt"]
    errors = [json.loads(line)["path"] for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(errors) == [str(data / "sub" / "corrupt.wav"), str(data / "sub" / "empty.wav")]
    assert (out / "ru_short.srt").read_text().startswith("1\n00:00:00,000 --> ")
    capsys.readouterr()
    assert main(_batch(ckpt, data, out, "--format", "srt")) == 2  # a started job needs --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(_batch(ckpt, data, out, "--format", "srt", "--resume")) == 3  # nothing left; earlier failures count
    err = capsys.readouterr().err
    assert "0 files transcribed, 0 failed, 6 skipped as already done (2 of them failed)" in err


@pytest.mark.slow  # a subprocess run, a resumed run and a whole run of 60 files
def test_killed_job_resumes_to_exactly_the_uninterrupted_output(ckpt, tmp_path):
    data = tmp_path / "data"
    clips(data, 60, secs=0.3)
    out = tmp_path / "killed.jsonl"
    cmd = [sys.executable, "-m", "polyasr.cli", *_batch(ckpt, data, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_bytes().count(b"\n") >= 3) and proc.poll() is None:
        assert time.monotonic() < deadline, "no records after 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = out.read_bytes().count(b"\n")
    assert 3 <= done < 60, f"the job was not killed mid-run ({done} records)"
    with open(out, "ab") as f:
        f.write(b'{"path": "' + str(data).encode() + b'/clip0059.wav", "model": "gig')  # as if killed inside a write
    assert main(_batch(ckpt, data, out, "--resume")) == 0
    assert main(_batch(ckpt, data, tmp_path / "whole.jsonl")) == 0
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert len(paths) == len(set(paths)) == 60
    assert lines_without_timing(out) == lines_without_timing(tmp_path / "whole.jsonl")


def test_decoded_samples_go_through_transcribe_files_like_paths(engine, fixtures_dir):
    from polyasr.audio import load_audio

    path = fixtures_dir / "ru_short.wav"
    from_path, from_samples = engine.transcribe_files([path, load_audio(path)])
    assert from_samples.text == from_path.text and from_samples.segments == from_path.segments
    assert "load_audio" in from_path.timings and "load_audio" not in from_samples.timings


class _BatchingEngine:
    """A model that batches across files, to watch the groups a job hands it: a group holding the
    poisoned samples fails as a whole, and so does that file alone."""

    class spec:
        id = "batching"

    class model:
        capabilities = Capabilities(batched_inputs=True)

    def __init__(self):
        self.groups = []

    def _result(self, audio):
        if audio[0] < 0:
            raise RuntimeError("the model fails on this one")
        seg = Segment(0.0, 1.0, f"{audio[0]:.0f}", 1.0)
        return TranscriptionResult(seg.text, [seg], "en", "batching", 1.0, 0.1, 0.1)

    def transcribe_files(self, audios, options):
        self.groups.append(len(audios))
        return [self._result(a) for a in audios]

    def transcribe(self, audio, options, name=None):
        return self._result(audio)


def test_batching_model_gets_groups_and_one_bad_file_costs_only_itself(monkeypatch):
    from polyasr.batch import local

    engine, options = _BatchingEngine(), TranscribeOptions(batch_size=3)
    items = [Decoded(f"f{i}", audio=np.full(4, i, np.float32)) for i in range(7)]
    items[4] = Decoded("f4", audio=np.full(4, -1, np.float32))
    items[5] = Decoded("f5", error="AudioDecodeError: f5: corrupt")
    monkeypatch.setattr(local, "decode", lambda p: items[int(p[1:])])  # the reader threads get these
    out = list(local.run_local(engine, [it.path for it in items], options, "jsonl"))
    records = [r for r, _ in out]
    assert [r["path"] for r in records] == [f"f{i}" for i in range(7)]
    assert [r["text"] for r in records] == ["0", "1", "2", "3", None, None, "6"]
    assert records[4]["error"] == "RuntimeError: the model fails on this one" and records[5]["error"].startswith(
        "Audio"
    )
    assert engine.groups == [3, 2]  # f0-f2 together; f3, f4 together (then one by one); f6 alone
