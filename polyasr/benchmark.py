"""`polyasr benchmark`: RTF, first-token latency, peak memory and WER of models on one file.

The JSON report (schema version 1) is documented in the README.
"""

from __future__ import annotations

import platform
import re
import statistics
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


def _model_paths(pairs: list[str]) -> dict[str, str]:
    paths = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidOptionError(f"--model-path takes ID=PATH, got {pair!r}")
        model, path = pair.split("=", 1)
        paths[model.strip()] = path
    return paths


def _bench_model(model_id, path, args, audio, reference, options) -> dict:
    from polyasr.cli import peak_rss_mb
    from polyasr.engine import AsrEngine

    quant = (
        {"quantize": args.quantize, "group_size": getattr(args, "group_size", None) or 64}
        if getattr(args, "quantize", None) is not None
        else {}
    )
    engine = AsrEngine.from_model(
        model_id,
        path,
        device=args.device,
        dtype=args.dtype,
        allow_download=args.allow_download,
        kernels=getattr(args, "kernels", None),
        **quant,
    )
    engine.transcribe(audio, options)  # warm-up: allocator, kernels, caches
    times, result = [], None
    for _ in range(max(1, args.repeats)):
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


def run_benchmark(args) -> dict:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    audio = load_audio(args.audio)
    reference = Path(args.reference).read_text(encoding="utf-8") if args.reference else None
    paths = _model_paths(args.model_path)
    options = TranscribeOptions(language=args.language)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = [_bench_model(m, paths.get(m), args, audio, reference, options) for m in models]
    return {
        "schema": 1,
        "audio": {"path": str(args.audio), "duration_secs": round(audio_duration(audio), 3)},
        "reference": args.reference,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "threads": args.threads,
        "results": results,
    }
