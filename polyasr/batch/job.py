"""One `polyasr batch` job: inputs -> what is left to do -> local or Ray -> records written as they
arrive, with a progress bar (files, audio hours, throughput) and a summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from polyasr.batch.inputs import read_inputs
from polyasr.batch.records import Sink
from polyasr.options import TranscribeOptions

SHOWN_FAILURES = 5


@dataclass
class RayPlan:
    """--ray: where to run and the actor pool's shape."""

    address: str | None = None  # None: start a local Ray
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


@dataclass
class Summary:
    total: int = 0  # inputs listed
    skipped: int = 0  # already done (--resume)
    done: int = 0
    failed: int = 0
    failed_before: int = 0  # error records of an earlier run of a resumed job
    audio_secs: float = 0.0
    wall_secs: float = 0.0
    failures: list[str] = field(default_factory=list)  # the first few errors, for the summary

    def line(self) -> str:
        speed = self.audio_secs / self.wall_secs if self.wall_secs else 0.0
        skipped = (
            f", {self.skipped} skipped as already done ({self.failed_before} of them failed)" if self.skipped else ""
        )
        return (
            f"polyasr batch: {self.done} files transcribed, {self.failed} failed{skipped}; "
            f"{self.audio_secs / 3600:.3f} h of audio in {self.wall_secs:.1f} s ({speed:.1f}x real time)"
        )


def run_batch(
    source: str,
    out: Path,
    fmt: str,
    options: TranscribeOptions,
    engine_kwargs: dict,
    *,
    resume: bool = False,
    ray: RayPlan | None = None,
) -> Summary:
    """Transcribe every input of `source` not yet done into `out`; returns the counts."""
    inputs = read_inputs(source)
    sink = Sink(out, fmt, inputs, resume)
    todo = [p for p in inputs if p not in sink.done]
    summary = Summary(total=len(inputs), skipped=len(inputs) - len(todo), failed_before=sink.failed_before)
    t0 = time.perf_counter()
    bar = _bar(len(todo))
    try:
        for record, rendered in _records(todo, options, fmt, engine_kwargs, ray):
            sink.write(record, rendered)
            _count(summary, record)
            summary.wall_secs = time.perf_counter() - t0
            bar.set_postfix_str(_rate(summary), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        sink.close()
        summary.wall_secs = time.perf_counter() - t0
    return summary


def _records(todo, options, fmt, engine_kwargs, ray: RayPlan | None):
    if not todo:
        return iter(())
    if ray is not None:
        from polyasr.batch.ray_job import run_ray

        return run_ray(
            engine_kwargs,
            todo,
            options,
            fmt,
            address=ray.address,
            num_workers=ray.num_workers,
            gpus_per_worker=ray.gpus_per_worker,
            cpus_per_worker=ray.cpus_per_worker,
        )
    from polyasr.batch.local import run_local
    from polyasr.engine import AsrEngine

    return run_local(AsrEngine.from_model(**engine_kwargs), todo, options, fmt)


def _count(summary: Summary, record: dict):
    if record["error"] is None:
        summary.done += 1
        summary.audio_secs += record["duration"] or 0.0
    else:
        summary.failed += 1
        if len(summary.failures) < SHOWN_FAILURES:
            summary.failures.append(record["error"])


def _rate(summary: Summary) -> str:
    hours = summary.audio_secs / 3600
    speed = summary.audio_secs / summary.wall_secs if summary.wall_secs else 0.0
    return f"{hours:.2f} h audio, {speed:.1f}x real time, {summary.failed} failed"


def _bar(total: int):
    """Files done out of `total` on stderr (a terminal only), audio hours and speed beside it."""
    from tqdm import tqdm

    return tqdm(total=total, desc="batch", unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)
