"""`polyasr batch`'s inputs and records without a model: directory recursion, path lists, JSONL /
CSV / NeMo manifests, the errors a bad manifest line gets, output naming, atomic writes and the
torn last line a killed job may leave."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from polyasr.batch.inputs import ManifestError, read_inputs
from polyasr.batch.records import JsonlFile, Sink, output_names, read_records, write_atomically
from polyasr.errors import InvalidOptionError


def _touch(*paths: Path):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_directory_is_searched_recursively_for_audio_only(tmp_path):
    _touch(tmp_path / "b.wav", tmp_path / "a.FLAC", tmp_path / "x" / "y" / "c.mp3", tmp_path / "notes.txt")
    _touch(tmp_path / "x" / "d.ogg", tmp_path / "x" / "model.ckpt")
    assert read_inputs(tmp_path) == [
        str(tmp_path / "a.FLAC"),
        str(tmp_path / "b.wav"),
        str(tmp_path / "x" / "d.ogg"),
        str(tmp_path / "x" / "y" / "c.mp3"),
    ]


def test_path_list_resolves_relative_paths_against_its_directory(tmp_path):
    listing = tmp_path / "lists" / "files.txt"
    listing.parent.mkdir()
    listing.write_text("# a comment\n\na.wav\n  sub/b.flac  \n/abs/c.mp3\na.wav\n")
    assert read_inputs(listing) == [
        str(tmp_path / "lists" / "a.wav"),
        str(tmp_path / "lists" / "sub" / "b.flac"),
        "/abs/c.mp3",
    ]


def test_nemo_manifest_is_read_as_it_is(tmp_path):
    rows = [
        {"audio_filepath": "clips/a.wav", "duration": 1.5, "text": "привет"},
        {"audio_filepath": "/data/b.wav", "duration": 2.0, "text": ""},
    ]
    manifest = tmp_path / "train_manifest.json"
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    assert read_inputs(manifest) == [str(tmp_path / "clips" / "a.wav"), "/data/b.wav"]


def test_jsonl_and_csv_take_a_path_column(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav", "id": 1}\n{"audio": "b.wav"}\n')
    assert read_inputs(tmp_path / "m.jsonl") == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    (tmp_path / "m.csv").write_text('id,audio_filepath,text\n1,a.wav,"hello, world"\n2,/x/b.wav,bye\n')
    assert read_inputs(tmp_path / "m.csv") == [str(tmp_path / "a.wav"), "/x/b.wav"]
    (tmp_path / "m.tsv").write_text("path\tspeaker\nc.wav\t7\n")
    assert read_inputs(tmp_path / "m.tsv") == [str(tmp_path / "c.wav")]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("m.jsonl", '{"path": "a.wav"}\n{"path": "b.wav"\n', "m.jsonl:2: not a JSON object"),
        ("m.jsonl", '{"path": "a.wav"}\n["b.wav"]\n', "m.jsonl:2: a JSON list"),
        (
            "m.jsonl",
            '{"path": "a.wav"}\n\n{"duration": 2.0}\n',
            "m.jsonl:3: no audio path; give one of the keys audio_filepath",
        ),
        ("m.csv", "id,text\n1,hi\n", "m.csv:1: the header ['id', 'text'] has no path column"),
        ("m.csv", "path,text\na.wav,x\n,y\n", "m.csv:3: empty 'path'"),
        ("files.txt", 'a.wav\n{"path": "b.wav"}\n', "files.txt:2: looks like JSON"),
    ],
)
def test_bad_manifest_lines_are_errors_naming_file_and_line(tmp_path, name, content, needle):
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError) as e:
        read_inputs(tmp_path / name)
    assert needle in str(e.value)


def test_missing_or_empty_input_is_an_option_error(tmp_path):
    with pytest.raises(InvalidOptionError, match="does not exist"):
        read_inputs(tmp_path / "nope")
    with pytest.raises(InvalidOptionError, match="holds no audio files"):
        read_inputs(tmp_path)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InvalidOptionError, match="lists no audio files"):
        read_inputs(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00a.wav")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_inputs(tmp_path / "bin.txt")


def test_output_names_mirror_the_inputs_and_keep_clashing_names_whole(tmp_path):
    root = tmp_path / "data"
    paths = [str(root / "a.wav"), str(root / "a.ogg"), str(root / "s" / "b.flac"), str(root / "s" / "t" / "b.mp3")]
    names = output_names(paths, tmp_path / "out", "srt")
    assert names == {
        paths[0]: tmp_path / "out" / "a.wav.srt",
        paths[1]: tmp_path / "out" / "a.ogg.srt",
        paths[2]: tmp_path / "out" / "s" / "b.srt",
        paths[3]: tmp_path / "out" / "s" / "t" / "b.srt",
    }
    assert output_names([str(root / "x.wav")], tmp_path / "o", "txt") == {str(root / "x.wav"): tmp_path / "o" / "x.txt"}


def test_write_atomically_replaces_whole_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "d" / "a.txt"
    write_atomically(dest, "first\n")
    write_atomically(dest, "second\n")
    assert dest.read_text() == "second\n" and os.listdir(dest.parent) == ["a.txt"]


def test_torn_last_line_is_cut_and_appending_continues_cleanly(tmp_path):
    out = tmp_path / "out.jsonl"
    f = JsonlFile(out)
    f.append({"path": "a.wav", "text": "x"})
    f.close()
    with open(out, "ab") as g:
        g.write(b'{"path": "b.wav", "te')  # the process died inside the write
    assert [r["path"] for r in read_records(out)] == ["a.wav"]
    assert out.read_bytes().endswith(b"}\n")
    f = JsonlFile(out)
    f.append({"path": "b.wav", "text": "y"})
    f.close()
    assert [r["path"] for r in read_records(out)] == ["a.wav", "b.wav"]


def test_a_line_that_is_not_a_record_is_an_error_naming_it(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a.wav"}\nnot json\n{"path": "b.wav"}\n')
    with pytest.raises(InvalidOptionError, match=r"out.jsonl:2 is not a polyasr record"):
        read_records(out)


def test_a_started_output_needs_resume(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a.wav"}\n')
    with pytest.raises(InvalidOptionError, match="pass --resume"):
        Sink(out, "jsonl", ["a.wav", "b.wav"], resume=False)
    assert Sink(out, "jsonl", ["a.wav", "b.wav"], resume=True).done == {"a.wav"}
    with pytest.raises(InvalidOptionError, match="is a directory"):
        Sink(tmp_path, "jsonl", ["a.wav"], resume=True)
    with pytest.raises(InvalidOptionError, match="needs a directory"):
        Sink(out, "srt", ["a.wav"], resume=True)


def _subparser(name: str):
    from polyasr.cli import _build_parser

    return _build_parser()._subparsers._group_actions[0].choices[name]


def test_batch_takes_every_decoding_and_device_option_of_transcribe():
    """Options registered for `transcribe` (now and by later additions) reach `batch` unchanged."""
    # transcribe's own: its inputs and output, and the SRT/VTT cue layout (batch writes default cues)
    own = {"help", "audio", "format", "output", "model", "model_path"}
    own |= {"max_line_width", "max_line_count", "max_words_per_line", "highlight_words"}
    transcribe = {a.dest: a for a in _subparser("transcribe")._actions if a.dest not in own}
    batch = {a.dest: a for a in _subparser("batch")._actions}
    assert transcribe and set(transcribe) <= set(batch)
    for dest, action in transcribe.items():
        assert (batch[dest].option_strings, batch[dest].default, batch[dest].choices) == (
            action.option_strings,
            action.default,
            action.choices,
        ), dest


def test_a_bad_manifest_is_one_line_before_any_model_loads(tmp_path, capsys):
    from polyasr.cli import main

    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav"}\n{"text": "no path"}\n')
    argv = ["batch", str(tmp_path / "m.jsonl"), "--model", "gigaam-v3-ctc", "--model-path", str(tmp_path / "none")]
    code = main([*argv, "--output", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and len(err) == 1 and err[0].startswith("polyasr: error: ") and "m.jsonl:2: no audio path" in err[0]
    )
    assert not (tmp_path / "out.jsonl").exists()


def test_an_actor_killed_by_a_polyasr_error_is_reported_as_that_error():
    """Ray re-raises an actor's death as its own error, naming ours only in the message."""
    from polyasr.batch.ray_job import _asr_cause
    from polyasr.errors import AsrError, ModelNotFoundError

    class ActorDiedError(Exception):
        pass

    died = ActorDiedError(
        "The actor died because of an error raised in its creation task\nTraceback ...\n"
        "polyasr.errors.ModelNotFoundError: model path '/x.ckpt' does not exist (expected a checkpoint file or directory)"
    )
    cause = _asr_cause(died)
    assert type(cause) is ModelNotFoundError and str(cause).startswith("model path '/x.ckpt' does not exist")
    assert type(_asr_cause(ActorDiedError("polyasr.errors.AudioDecodeError: a.wav: corrupt"))) is AsrError
    assert _asr_cause(ActorDiedError("node lost")) is None
