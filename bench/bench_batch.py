"""`polyasr batch` throughput on the fixtures directory: local (one process, reader threads ahead of
the model) vs Ray Data with 2 model actors, side by side in one run, on real Whisper tiny.en (PyPI)
greedy without fallback. Each job is timed whole, model loads included (a Ray job starts its actors
per job); the Ray instance itself is started once before, as a cluster would be. Printed: seconds,
audio hours per hour, and Ray's overhead over local.

On CPU the local path's torch uses every core for one engine, while the 2 actors get 1 CPU (and
torch thread) each, so the comparison is of whole pipelines on the same machine. Ray is given
max(cores, 3) logical CPUs: 2 actors plus the decode tasks.

  pytest bench/bench_batch.py --benchmark-only          # quick: one job each (< 3 min on 2 cores)
  POLYASR_BENCH_FULL=1 pytest bench/bench_batch.py ...  # three jobs each
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import FIXTURES, RESULTS, note, record

from polyasr.batch import RayPlan, run_batch
from polyasr.batch.inputs import read_inputs
from polyasr.options import TranscribeOptions

ray = pytest.importorskip("ray")

GROUP = "polyasr batch, fixtures directory, whisper-tiny.en greedy"
ROUNDS = 3 if os.environ.get("POLYASR_BENCH_FULL") else 1
MODES = {"local": None, "ray, 2 workers": RayPlan(num_workers=2, cpus_per_worker=1.0)}


@pytest.fixture(scope="module")
def tiny_en_dir() -> Path:
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return locate_checkpoint(get_spec("whisper-tiny.en"))
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=max(os.cpu_count() or 1, 3), include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("mode", list(MODES))
def test_batch_throughput(benchmark, local_ray, tiny_en_dir, tmp_path, mode):
    engine_kwargs = {"model": "whisper-tiny.en", "path": str(tiny_en_dir), "device": "cpu"}
    options = TranscribeOptions(temperatures=(0.0,))
    jobs = iter(range(ROUNDS))
    summaries = []

    def job():
        out = tmp_path / f"out{next(jobs)}.jsonl"
        summaries.append(run_batch(str(FIXTURES), out, "jsonl", options, engine_kwargs, ray=MODES[mode]))

    benchmark.pedantic(job, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    summary = summaries[-1]
    assert summary.failed == 0 and summary.done == len(read_inputs(FIXTURES))
    secs = benchmark.stats.stats.min
    speed = summary.audio_secs / secs
    benchmark.extra_info.update(audio_secs=summary.audio_secs, realtime_factor=speed)
    record(GROUP, "local", mode, benchmark)
    note(GROUP, f"{mode}: {summary.done} files, {summary.audio_secs / 3600:.4f} h audio, {speed:.1f} audio h/h")
    times = RESULTS[GROUP][1]
    if len(times) == len(MODES):
        overhead = times["ray, 2 workers"] / times["local"] - 1
        note(GROUP, f"Ray overhead over local: {100 * overhead:+.1f}% (wall time of the whole job)")
